"""Model architectures built from bertlite.nn. Plain PyTorch: no Lightning, no Hydra."""

from bertlite.models.config import PRESETS, BertConfig, config_from_dict, preset
from bertlite.models.encoder import (BertForMaskedLM, BertForSequenceClassification, BertModel, MaskedLMHead,
                                     MaskedLMOutput)

__all__ = [
    "PRESETS",
    "BertConfig",
    "BertForMaskedLM",
    "BertForSequenceClassification",
    "BertModel",
    "MaskedLMHead",
    "MaskedLMOutput",
    "config_from_dict",
    "preset",
]
