"""Typed model configurations, one per architecture, and their named presets.

A config is plain data: it travels inside every checkpoint, so a model can be rebuilt without Hydra.
``vocab_size`` and ``pad_token_id`` are filled in from the tokenizer when training starts.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass

from bertlite.errors import CheckpointError, ConfigError


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
    # or "sinusoidal", or "alibi" (a distance penalty in attention, no position vectors), or "rope" (rotary: queries
    # and keys of self-attention rotated by their positions, no position vectors)
    position: str = "learned"
    rope_theta: float = 10000.0  # position="rope": the base of the rotation frequencies, theta^(-2i/d_k)
    # position="rope": the base for local-attention layers (ModernBERT: 10,000 local, 160,000 global); null: the same
    # as rope_theta. Read by layers with local attention; until those exist every layer is global and uses rope_theta.
    rope_theta_local: float | None = None
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    init_std: float = 0.02
    # Recompute each layer's activations in the backward pass instead of keeping them: one more forward pass
    # of the layers (~1.3x step time) for far less activation memory. Training only, no effect on the weights:
    # checkpoints saved before the field existed load with the default.
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        sizes = {"vocab_size": self.vocab_size, "d_model": self.d_model, "n_layers": self.n_layers,
                 "n_heads": self.n_heads, "d_ff": self.d_ff, "max_seq_len": self.max_seq_len}
        bad = [f"{name}={value}" for name, value in sizes.items() if value < 1]
        if bad:
            raise ValueError(f"{', '.join(bad)}: a model size must be a positive integer")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.position == "rope":
            self._check_rope()

    def _check_rope(self) -> None:
        thetas = {"rope_theta": self.rope_theta, "rope_theta_local": self.rope_theta_local}
        bad = [f"{name}={value}" for name, value in thetas.items() if value is not None and not value > 1]
        if bad:
            raise ValueError(f"{', '.join(bad)}: a rotary base must be a number above 1 (10000 is usual)")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError(f"position=rope needs an even head size; d_model={self.d_model} / "
                             f"n_heads={self.n_heads} = {self.d_model // self.n_heads}")

    def stack_kwargs(self) -> dict:
        """The ``TransformerStack`` arguments every architecture takes from its config."""
        return dict(d_model=self.d_model, n_heads=self.n_heads, d_ff=self.d_ff, dropout=self.dropout,
                    attention_dropout=self.attention_dropout, activation=self.activation,
                    norm_first=self.norm_first, layer_norm_eps=self.layer_norm_eps, alibi=self.position == "alibi",
                    rope_theta=self.rope_theta if self.position == "rope" else None,
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


# Why a file's config values are checked: whatever reads them as config (Hydra) would call a dict's _target_ and
# resolve a ${...} string, so a value from a file must be data.
FILE_VALUE_RULE = ("a config value read from a file must be plain data (a number, a string, true/false, or a list "
                   "of these): dicts, _target_ keys and ${...} interpolations are refused")


class ConfigValueError(ConfigError, ValueError):
    """A model config that does not fit its dataclass: a ``ConfigError`` (one line from the CLI) that code catching
    ``ValueError``, as config_from_dict's callers did, still catches."""


def config_from_dict(values: dict, source: str | None = None, names: dict[str, str] | None = None) -> ModelConfig:
    """Rebuild a config from its ``asdict`` form (as stored in checkpoints and Hydra configs), checking every value
    against its field's type. ``source`` names the file the values were read from: its problems are a
    ``CheckpointError`` naming it, those of other values a ``ConfigValueError``. ``names``: the source's own name
    of a field, for the message (an HF config.json's initializer_range for init_std)."""
    if not isinstance(values, dict):
        raise _refusal(source, f"the model config is a {type(values).__name__}, not a dict of fields")
    values = dict(values)
    arch = values.get("arch", "bert")
    if not isinstance(arch, str) or arch not in CONFIG_CLASSES:
        raise _refusal(source, f"unknown architecture {arch!r:.80}; known: {', '.join(CONFIG_CLASSES)}")
    cls = CONFIG_CLASSES[arch]
    types = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(types), key=str)
    if unknown:
        raise _refusal(source, f"unknown {arch} config fields: {', '.join(map(str, unknown))}"[:300])
    for name, value in values.items():
        problem = value_type_problem(value, types[name])
        if problem:
            field = (names or {}).get(name) or (name if source else f"model.{name}")
            code_like = isinstance(value, dict) or "${" in str(value)  # what Hydra would act on
            rule = f"; {FILE_VALUE_RULE}" if source and code_like else ""
            raise _refusal(source, f"{field}={value!r:.100} {problem}{rule}", malformed=names is None)
    try:
        return cls(**values)
    except ValueError as exc:
        raise _refusal(source, str(exc)) from None


PLAIN_TYPES = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}  # a field's type -> the values it takes


def value_type_problem(value, expected) -> str | None:
    """Why ``value`` does not fit a field annotated ``expected`` (int, float, str, bool or a list of these), or
    None when it fits. An int fits a float field; a bool fits neither (True is no number here). An optional field
    (``float | None``) also takes None."""
    if isinstance(expected, types.UnionType) or typing.get_origin(expected) is typing.Union:
        (inner,) = [a for a in typing.get_args(expected) if a is not type(None)]  # X | None: one type and None
        return None if value is None else value_type_problem(value, inner)
    if typing.get_origin(expected) is list:
        if not isinstance(value, list):
            return f"is a {type(value).__name__}, not a list"
        (item,) = typing.get_args(expected)
        return next((f"holds {v!r:.40}, which {p}" for v in value if (p := value_type_problem(v, item))), None)
    if isinstance(value, str) and "${" in value:
        return "is an interpolation (${...}), not a value"
    if expected not in PLAIN_TYPES:
        raise TypeError(f"a config field of type {expected} cannot be checked: use int, float, str, bool or a list")
    fits = PLAIN_TYPES[expected]
    if isinstance(value, fits) and (expected is bool or not isinstance(value, bool)):
        return None
    kind = "a dict with _target_" if isinstance(value, dict) and "_target_" in value else f"a {type(value).__name__}"
    return f"is {kind}, not {'an' if expected is int else 'a'} {expected.__name__}"


def _refusal(source: str | None, problem: str, malformed: bool = True) -> Exception:
    if source is None:
        return ConfigValueError(problem)
    return CheckpointError(f"{source}: {'model_config is malformed: ' if malformed else ''}{problem}")
