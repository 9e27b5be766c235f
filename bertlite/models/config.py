"""Typed model configurations, one per architecture, and their named presets.

A config is plain data: it travels inside every checkpoint, so a model can be rebuilt without Hydra.
``vocab_size`` and ``pad_token_id`` are filled in from the tokenizer when training starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class ModelConfig:
    """Fields every architecture shares."""

    arch: str = ""
    vocab_size: int = 30522
    d_model: int = 768
    n_layers: int = 12
    n_heads: int = 12
    d_ff: int = 3072
    max_seq_len: int = 512
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: str = "gelu"
    norm_first: bool = False  # False: post-LN (original Transformer, BERT); True: pre-LN (GPT-2)
    position: str = "learned"  # or "sinusoidal", or "alibi" (a distance penalty in attention, no position vectors)
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    init_std: float = 0.02
    # Recompute each layer's activations in the backward pass instead of keeping them: one more forward pass
    # of the layers (~1.3x step time) for far less activation memory. Training only, no effect on the weights:
    # checkpoints saved before the field existed load with the default.
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")

    def stack_kwargs(self) -> dict:
        """The ``TransformerStack`` arguments every architecture takes from its config."""
        return dict(d_model=self.d_model, n_heads=self.n_heads, d_ff=self.d_ff, dropout=self.dropout,
                    attention_dropout=self.attention_dropout, activation=self.activation,
                    norm_first=self.norm_first, layer_norm_eps=self.layer_norm_eps, alibi=self.position == "alibi",
                    gradient_checkpointing=self.gradient_checkpointing)


@dataclass
class BertConfig(ModelConfig):
    """BERT: a bidirectional encoder (Devlin et al., 2019). Defaults follow bert-base."""

    arch: str = "bert"
    type_vocab_size: int = 2
    # Padding-free batches: a padded batch runs through the layers as its real tokens alone (bertlite.nn.packing).
    # The same function as the padded path; no effect on the weights.
    unpad: bool = True


@dataclass
class GPTConfig(ModelConfig):
    """GPT: a causal decoder (Radford et al., 2018/2019), pre-LN as GPT-2."""

    arch: str = "gpt"
    norm_first: bool = True
    layer_norm_eps: float = 1e-5


@dataclass
class TransformerConfig(ModelConfig):
    """The encoder-decoder Transformer (Vaswani et al., 2017): ``n_layers`` encoder layers and
    ``n_decoder_layers`` decoder layers, sinusoidal positions, post-LN, shared input/output embeddings."""

    arch: str = "transformer"
    n_decoder_layers: int = 6
    position: str = "sinusoidal"
    layer_norm_eps: float = 1e-5


# (layers, d_model) of the compact BERTs (Turc et al., 2019): 64-dimensional heads, FFN 4x wider.
SIZES = {"tiny": (2, 128), "mini": (4, 256), "small": (4, 512), "medium": (8, 512), "base": (12, 768),
         "large": (24, 1024)}


def _shape(n_layers: int, d_model: int) -> dict:
    return dict(n_layers=n_layers, d_model=d_model, n_heads=max(2, d_model // 64), d_ff=4 * d_model)


def _transformer(n_layers: int, d_model: int) -> TransformerConfig:
    # Half the layers each side. A decoder layer has cross-attention too (16 d^2 weights against 12 d^2),
    # so d_ff shrinks to 3.5 d_model: the total then stays within 10% of the same-named BERT.
    shape = _shape(n_layers // 2, d_model)
    return TransformerConfig(**{**shape, "d_ff": 7 * d_model // 2}, n_decoder_layers=n_layers // 2)


PRESETS: dict[str, ModelConfig] = {}
for _size, (_layers, _d) in SIZES.items():
    PRESETS[f"bert-{_size}"] = BertConfig(**_shape(_layers, _d))
    PRESETS[f"gpt-{_size}"] = GPTConfig(**_shape(_layers, _d))
    PRESETS[f"transformer-{_size}"] = _transformer(_layers, _d)

CONFIG_CLASSES = {"bert": BertConfig, "gpt": GPTConfig, "transformer": TransformerConfig}


def preset(name: str, **overrides) -> ModelConfig:
    """A named preset, with any fields replaced: preset("bert-mini", dropout=0.0)."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; available: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


def config_from_dict(values: dict) -> ModelConfig:
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
