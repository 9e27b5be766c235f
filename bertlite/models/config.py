"""Typed model configurations and their named presets.

A config is plain data: it travels inside every checkpoint, so a model can be rebuilt without Hydra.
``vocab_size`` and ``pad_token_id`` are filled in from the tokenizer when training starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class BertConfig:
    """BERT: a bidirectional encoder (Devlin et al., 2019). Defaults follow bert-base."""

    arch: str = "bert"
    vocab_size: int = 30522
    d_model: int = 768
    n_layers: int = 12
    n_heads: int = 12
    d_ff: int = 3072
    max_seq_len: int = 512
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: str = "gelu"
    norm_first: bool = False  # post-LN as in the paper; True for pre-LN
    position: str = "learned"  # or "sinusoidal"
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")


def _bert(n_layers: int, d_model: int) -> BertConfig:
    # Turc et al. (2019) compact BERTs: 64-dimensional heads, FFN 4x wider than the model.
    return BertConfig(n_layers=n_layers, d_model=d_model, n_heads=d_model // 64, d_ff=4 * d_model)


PRESETS: dict[str, BertConfig] = {
    "bert-tiny": _bert(2, 128),
    "bert-mini": _bert(4, 256),
    "bert-small": _bert(4, 512),
    "bert-medium": _bert(8, 512),
    "bert-base": _bert(12, 768),
    "bert-large": _bert(24, 1024),
}

CONFIG_CLASSES = {"bert": BertConfig}


def preset(name: str, **overrides) -> BertConfig:
    """A named preset, with any fields replaced: preset("bert-mini", dropout=0.0)."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; available: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


def config_from_dict(values: dict) -> BertConfig:
    """Rebuild a config from its ``asdict`` form (as stored in checkpoints and Hydra configs)."""
    values = dict(values)
    arch = values.get("arch", "bert")
    if arch not in CONFIG_CLASSES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(CONFIG_CLASSES)}")
    cls = CONFIG_CLASSES[arch]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {arch} config fields: {', '.join(unknown)}")
    return cls(**values)
