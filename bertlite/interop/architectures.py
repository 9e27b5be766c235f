"""The Hugging Face architectures bertlite reads and writes, and how a folder or a config picks one."""

from __future__ import annotations

from bertlite.errors import CheckpointError, ConfigError
from bertlite.interop.hf_arch import HFArchitecture
from bertlite.interop.hf_bert import BERT
from bertlite.interop.hf_modernbert import MODERNBERT
from bertlite.interop.hf_roberta import ROBERTA
from bertlite.models.config import ModelConfig

ARCHITECTURES: tuple[HFArchitecture, ...] = (BERT, ROBERTA, MODERNBERT)


def readable() -> str:
    """'bert (BertModel, ...), roberta (...)': what bertlite reads, for messages."""
    return "; ".join(f"{arch.model_type} ({', '.join(arch.hf_classes())})" for arch in ARCHITECTURES)


def architecture_of_folder(hf_config: dict, path: str) -> HFArchitecture:
    """The architecture a config.json names by model_type (or, lacking one, by a class in architectures)."""
    model_type = hf_config.get("model_type")
    classes = hf_config.get("architectures")
    for arch in ARCHITECTURES:
        if model_type == arch.model_type:
            return arch
        if model_type is None and isinstance(classes, list) and any(c in arch.hf_classes() for c in classes
                                                                    if isinstance(c, str)):
            return arch
    raise CheckpointError(f"{path} describes a {model_type!r:.80} model (architectures {classes!r:.200}); "
                          f"bertlite reads these Hugging Face architectures: {readable()}")


def architecture_of_config(config: ModelConfig) -> HFArchitecture:
    """The HF architecture a bertlite model exports as: ModernBERT where it has rotary positions, RoBERTa where its
    learned positions start at pad_token_id + 1, else BERT (each refuses, by name, whatever it cannot express)."""
    if config.arch != "bert":
        return BERT
    if MODERNBERT.exports(config):  # first: BERT's own test (positions from row 0) holds for rotary models too
        return MODERNBERT
    chosen = [arch for arch in ARCHITECTURES if arch.exports(config)]
    if not chosen:
        raise ConfigError(f"cannot export to Hugging Face: position_offset={config.position_offset} is neither "
                          f"BERT's (0) nor RoBERTa's (pad_token_id + 1 = {config.pad_token_id + 1})")
    return chosen[0]
