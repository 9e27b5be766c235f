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
from bertlite.nn.feedforward import ACTIVATIONS, FEED_FORWARD_ACTIVATIONS, base_activation


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
    # the feed-forward's: gelu, relu, gelu_tanh, silu; or gated (GLU), its input projection 2 x d_ff wide: geglu
    # (GELU), swiglu (SiLU). d_ff is the width after the gate (ModernBERT's intermediate_size).
    activation: str = "gelu"
    # False: no bias in the layers' linear maps and LayerNorms, the final and the embedding LayerNorm, and BERT's
    # heads (except the MLM decoder's, see decoder_bias, and the classifier's last layer), as ModernBERT
    bias: bool = True
    norm_first: bool = False  # False: post-LN (original Transformer, BERT); True: pre-LN (GPT-2)
    # or "sinusoidal", or "alibi" (a distance penalty in attention, no position vectors), or "rope" (rotary: queries
    # and keys of self-attention rotated by their positions, no position vectors)
    position: str = "learned"
    rope_theta: float = 10000.0  # position="rope": the base of the rotation frequencies, theta^(-2i/d_k)
    # position="rope": the base for local-attention layers (ModernBERT: 10,000 local, 160,000 global); null: the same
    # as rope_theta. Read by the local-attention layers only.
    rope_theta_local: float | None = None
    # Local attention (ModernBERT): > 0, the window of the local layers in tokens: a query sees keys within
    # local_attention // 2 either side (128: +-64). 0: every layer global.
    local_attention: int = 0
    # with local_attention > 0: layer i is global when i % global_attn_every_n_layers == 0, else local
    # (ModernBERT: 3, so layers 0, 3, 6, ... are global). 1: every layer global.
    global_attn_every_n_layers: int = 1
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
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id={self.pad_token_id} is not an id of the vocabulary of {self.vocab_size}: "
                             "set pad_token_id with vocab_size (the CLI takes both from the tokenizer)")
        if self.position == "rope":
            self._check_rope()
        self._check_blocks()

    def _check_blocks(self) -> None:
        if self.activation not in FEED_FORWARD_ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r:.40}: choose one of {', '.join(FEED_FORWARD_ACTIVATIONS)}")
        if self.local_attention < 0 or self.global_attn_every_n_layers < 1:
            raise ValueError(f"local_attention={self.local_attention}, global_attn_every_n_layers="
                             f"{self.global_attn_every_n_layers}: the window is 0 (none) or a token count, and "
                             "every n-th layer global needs n >= 1")
        if (self.local_attention > 0) != (self.global_attn_every_n_layers > 1):
            raise ValueError(f"local_attention={self.local_attention} with global_attn_every_n_layers="
                             f"{self.global_attn_every_n_layers}: local layers need both, a window and some layers "
                             "that are not global (ModernBERT: local_attention=128, global_attn_every_n_layers=3); "
                             "for global attention everywhere set local_attention=0 and global_attn_every_n_layers=1")

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
                    rope_theta_local=self.rope_theta_local if self.position == "rope" else None,
                    bias=self.bias, local_attention=self.local_attention,
                    global_attn_every_n_layers=self.global_attn_every_n_layers,
                    gradient_checkpointing=self.gradient_checkpointing)


@dataclass
class BertConfig(ModelConfig):
    """BERT: a bidirectional encoder (Devlin et al., 2019). Defaults follow bert-base."""

    arch: str = "bert"
    type_vocab_size: int = 2
    # Padding-free batches: a padded batch runs through the layers as its real tokens alone (bertlite.nn.packing).
    # The same function as the padded path; no effect on the weights.
    unpad: bool = True
    # Learned positions start at this row: the table holds max_seq_len + position_offset rows. RoBERTa counts from
    # padding_idx + 1 (2: its 514-row table serves 512 tokens); 0 for BERT.
    position_offset: int = 0
    # False (pre-LN only): layer 0's attention takes the embeddings' output as it is, already normalised by the
    # embedding LayerNorm, and has no norm weights of its own (ModernBERT)
    first_layer_attn_norm: bool = True
    # what precedes the classifier's last linear layer: "pooler" (BERT: [CLS] or pooled vector through dense + tanh;
    # nothing for token classification) or "transform" (ModernBERT: dense, activation, LayerNorm, as the MLM head,
    # for sequence and token classification alike)
    classifier_head: str = "pooler"
    # the activation of the MLM head's and the "transform" classifier head's dense layer; null: the feed-forward's
    # (its input half's when gated: gelu for geglu)
    head_activation: str | None = None
    decoder_bias: bool = True  # the MLM decoder's per-token bias on the logits (HF: decoder_bias, cls.predictions.bias)

    def stack_kwargs(self) -> dict:
        return {**super().stack_kwargs(), "first_layer_attn_norm": self.first_layer_attn_norm}

    def transform_activation(self) -> str:
        """The activation of the heads' transform (dense, activation, LayerNorm): head_activation, else the
        feed-forward's element-wise one."""
        return self.head_activation or base_activation(self.activation)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_heads()
        if self.position_offset < 0:
            raise ValueError(f"position_offset={self.position_offset}: the first row of the position table is 0 "
                             "or more")
        if self.position_offset and self.position != "learned":
            raise ValueError(f"position_offset={self.position_offset} shifts learned positions; position="
                             f"{self.position!r} has no table to shift: set position_offset=0")

    def _check_heads(self) -> None:
        if not (self.first_layer_attn_norm or self.norm_first):
            raise ValueError("first_layer_attn_norm=false needs norm_first=true (pre-LN): a post-LN layer normalises "
                             "its attention's output, not its input")
        if self.classifier_head not in CLASSIFIER_HEADS:
            raise ValueError(f"classifier_head={self.classifier_head!r:.40}: choose one of "
                             f"{', '.join(CLASSIFIER_HEADS)}")
        if self.head_activation is not None and self.head_activation not in ACTIVATIONS:
            raise ValueError(f"head_activation={self.head_activation!r:.40}: choose one of {', '.join(ACTIVATIONS)}, "
                             "or null for the feed-forward's")


CLASSIFIER_HEADS = ("pooler", "transform")


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


def _modernbert(n_layers: int, d_model: int, d_ff: int, max_seq_len: int = 8192) -> BertConfig:
    """ModernBERT (Warner et al., 2024), as its transformers config: pre-LN without biases, GeGLU, rotary positions
    (base 160,000 in global layers, 10,000 in local ones), every third layer global and the others within 128 tokens,
    no token types, no dropout, the vocabulary and padding id of its tokenizer; 64-dimensional heads."""
    return BertConfig(n_layers=n_layers, d_model=d_model, n_heads=d_model // 64, d_ff=d_ff, max_seq_len=max_seq_len,
                      vocab_size=50368, pad_token_id=50283, type_vocab_size=0, dropout=0.0, attention_dropout=0.0,
                      activation="geglu", bias=False, norm_first=True, first_layer_attn_norm=False,
                      layer_norm_eps=1e-5, position="rope", rope_theta=160000.0, rope_theta_local=10000.0,
                      local_attention=128, global_attn_every_n_layers=3, classifier_head="transform",
                      head_activation="gelu")


PRESETS: dict[str, ModelConfig] = {}
for _size, (_layers, _d) in SIZES.items():
    PRESETS[f"bert-{_size}"] = BertConfig(**_shape(_layers, _d))
    PRESETS[f"gpt-{_size}"] = GPTConfig(**_shape(_layers, _d))
    PRESETS[f"transformer-{_size}"] = _transformer(_layers, _d)
# the paper's base and large; tiny and mini at bert-tiny's and bert-mini's shapes and length, d_ff 1.5 d_model as base
PRESETS["modernbert-tiny"] = _modernbert(2, 128, 192, max_seq_len=512)
PRESETS["modernbert-mini"] = _modernbert(4, 256, 384, max_seq_len=512)
PRESETS["modernbert-base"] = _modernbert(22, 768, 1152)
PRESETS["modernbert-large"] = _modernbert(28, 1024, 2624)

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
