"""Trains a tiny MLM for a few steps on fixed data and saves the final parameters, for the distributed
equivalence tests (tests/test_distributed.py). Run as a script, because Lightning's ModelParallelStrategy
starts its other ranks by running the same command again:

    python -m tests.distributed_worker {single,accumulate,ddp_spawn,fully_shard} BATCH_PER_PROCESS OUT_FILE

``accumulate``: one process accumulating the gradients of 2 batches per step.
"""

from __future__ import annotations

import sys

import datasets
import lightning as L
import torch

from bertlite.data.pretraining import PretrainingDataModule
from bertlite.data.tokenizer import special_ids, train_wordpiece
from bertlite.nn.block import TransformerBlock
from bertlite.tasks import MaskedLMTask

STEPS, ROWS, SEQ = 4, 64, 16


class FixedMasks(PretrainingDataModule):
    """Blocks masked once, with 1 to 6 masked tokens each: every process sees the same task, and a mean of
    per-batch means would differ from the mean over the batches' tokens (the loss is normalised per step)."""

    def build(self) -> None:
        if self.train_dataset is not None:
            return
        g = torch.Generator().manual_seed(0)
        ids = special_ids(self.tokenizer)
        vocab = self.tokenizer.get_vocab_size()
        input_ids = torch.randint(len(ids), vocab, (ROWS, SEQ), generator=g)
        labels = torch.full((ROWS, SEQ), -100)
        for row in range(ROWS):
            where = torch.randperm(SEQ - 1, generator=g)[:1 + row % 6] + 1
            labels[row, where] = input_ids[row, where]
            input_ids[row, where] = ids["mask"]
        self.train_dataset = datasets.Dataset.from_dict({"input_ids": input_ids.numpy(),
                                                         "labels": labels.numpy()}).with_format("torch")
        self.val_dataset = self.train_dataset


class ShardedMLM(MaskedLMTask):
    """FSDP2: torch's fully_shard on every Transformer layer, then on the whole model."""

    def configure_model(self) -> None:
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        for module in self.model.modules():
            if isinstance(module, TransformerBlock):
                fully_shard(module, mesh=mesh)
        fully_shard(self.model, mesh=mesh)


def main(mode: str, batch_size: int, out: str) -> None:
    torch.set_num_threads(1)
    L.seed_everything(0)
    texts = ["the cat sat on the mat and the dog ran to the box"] * 20
    tokenizer = train_wordpiece(texts, vocab_size=60)
    model = dict(arch="bert", vocab_size=tokenizer.get_vocab_size(), d_model=32, n_layers=2, n_heads=2, d_ff=64,
                 max_seq_len=SEQ, dropout=0.0, attention_dropout=0.0, pad_token_id=special_ids(tokenizer)["pad"])
    task = (ShardedMLM if mode == "fully_shard" else MaskedLMTask)(model=model, lr=1e-2, warmup_steps=1)
    data = FixedMasks(tokenizer=tokenizer, objective="mlm", batch_size=batch_size, seed=5)
    if mode == "fully_shard":
        from lightning.pytorch.strategies import ModelParallelStrategy

        # save_distributed_checkpoint=False: rank zero gathers the shards into one ordinary checkpoint file
        strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1,
                                         save_distributed_checkpoint=False)
        devices = 2
    else:
        strategy, devices = ("ddp_spawn", 2) if mode == "ddp_spawn" else ("auto", 1)
    accumulate = 2 if mode == "accumulate" else 1
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy=strategy, max_steps=STEPS,
                        limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, deterministic=True,
                        gradient_clip_val=1.0, accumulate_grad_batches=accumulate)
    task.tokenizer_json = tokenizer.to_str()
    initial = {name: p.detach().clone() for name, p in task.model.named_parameters()}
    trainer.fit(task, datamodule=data)
    if mode == "fully_shard":  # a checkpoint of the sharded run, to load on one device (tests/test_distributed.py)
        trainer.save_checkpoint(out + ".ckpt")
    params = {}
    for name, p in task.model.named_parameters():
        params[name] = (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().cpu().clone()
    if trainer.is_global_zero:
        torch.save({"params": params, "initial": initial}, out)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
