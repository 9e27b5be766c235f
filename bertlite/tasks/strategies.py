"""Lightning strategies with bertlite's choices filled in, for the trainer configs (conf/trainer/fsdp.yaml)."""

from __future__ import annotations

from lightning.pytorch.strategies import FSDPStrategy

from bertlite.nn.block import TransformerBlock


def fsdp(sharding_strategy: str = "FULL_SHARD", state_dict_type: str = "full", activation_checkpointing: bool = False,
         cpu_offload: bool = False, **kwargs) -> FSDPStrategy:
    """FSDP that shards the model one Transformer layer at a time (the embeddings and heads, with the tied
    output matrix, form the root unit).

    ``state_dict_type="full"`` (default): rank zero writes one ordinary checkpoint with the whole model, which
    loads on one device for inference and fine-tuning like any other. ``"sharded"`` writes a folder with
    one shard per rank, faster for large models; resume it with the same number of devices, or consolidate
    it into one file with ``python -m lightning.pytorch.utilities.consolidate_checkpoint <folder>``."""
    layers = {TransformerBlock}
    return FSDPStrategy(auto_wrap_policy=layers, sharding_strategy=sharding_strategy, state_dict_type=state_dict_type,
                        activation_checkpointing_policy=layers if activation_checkpointing else None,
                        cpu_offload=cpu_offload, **kwargs)
