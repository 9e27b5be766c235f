"""The correspondence between Hugging Face ModernBERT and bertlite's BERT with the modern blocks (``MODERNBERT``).

ModernBERT (Warner et al., 2024) is a bertlite BertConfig with the flags of the ``modernbert-*`` presets: pre-LN
(``norm_first``) with an embedding LayerNorm and none before layer 0's attention (``first_layer_attn_norm=false``),
a final LayerNorm, GeGLU (``Wi`` is bertlite's gated ``up``, input half first), rotary positions with one base in
global layers and another in local ones, local layers that see ``local_attention // 2`` tokens either side, no
token types, and heads that transform (dense, activation, LayerNorm) before the decoder or the classifier.
What reaches config.json and the weights:
- ``Wqkv`` stacks query, key and value as bertlite's ``qkv_proj`` does: copied as it is (``fused_qkv``);
- biases: attention_bias, mlp_bias, norm_bias and classifier_bias are one switch in bertlite (``bias``), so they
  must agree; decoder_bias is its own (``decoder_bias``);
- which layers are local: ``layer_types`` (transformers 5) or ``global_attn_every_n_layers`` (older configs), as
  bertlite's rule "layer i is global when i % n == 0"; every layer global is ``local_attention=0``;
- rotary bases: ``rope_parameters`` (transformers 5) or ``global_rope_theta``/``local_rope_theta``;
- dropout (training only): mlp_dropout is bertlite's ``dropout`` (its embeddings' too), attention_dropout its
  attention's; a classifier's dropout is the fine-tuning task's ``classifier_dropout``;
- ``classifier_pooling`` ("cls" or "mean") is the classification checkpoint's pooling.
"""

from __future__ import annotations

import re

from bertlite.errors import ConfigError
from bertlite.interop.hf_arch import HFArchitecture, with_biases
from bertlite.interop.hf_bert import HF_PROBLEM_TYPES

FULL, SLIDING = "full_attention", "sliding_attention"  # HF's layer types: global and local attention

GLU_FROM_HF = {"gelu": "geglu", "silu": "swiglu", "swish": "swiglu"}  # hidden_activation (of Wi's gate)
GLU_TO_HF = {"geglu": "gelu", "swiglu": "silu"}
# classifier_activation (the heads' transform) <-> bertlite's head_activation
HEAD_FROM_HF = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                "silu": "silu", "swish": "silu"}
HEAD_TO_HF = {"gelu": "gelu", "relu": "relu", "gelu_tanh": "gelu_pytorch_tanh", "silu": "silu"}
BIASES = ("attention_bias", "mlp_bias", "norm_bias", "classifier_bias")  # bertlite's one ``bias``
POOLINGS = ("cls", "mean")

EMBEDDINGS = {"embeddings.token.weight": "embeddings.tok_embeddings.weight",
              **with_biases({"embeddings.norm": "embeddings.norm", "encoder.final_norm": "final_norm"})}
LAYER_MODULES = {
    "self_attn.qkv_proj": "attn.Wqkv",
    "self_attn.out_proj": "attn.Wo",
    "self_attn_norm": "attn_norm",  # none in layer 0 (HF: Identity; bertlite: first_layer_attn_norm=false)
    "feed_forward.up": "mlp.Wi",
    "feed_forward.down": "mlp.Wo",
    "feed_forward_norm": "mlp_norm",
}
# every name a ModernBERT may have; the bias-free ones, and layer 0's attn_norm, are those the model lacks
LAYER = with_biases({ours: f"layers.{{i}}.{theirs}" for ours, theirs in LAYER_MODULES.items()})
TRANSFORM = {"dense": "head.dense", "norm": "head.norm"}  # ModernBertPredictionHead, in every task's head
HEADS = {  # bertlite name -> HF name, as ModernBertForMaskedLM / ...ForSequenceClassification / ... save them
    "mlm": {**with_biases({f"mlm_head.{ours}": theirs for ours, theirs in TRANSFORM.items()}),
            "mlm_head.decoder.bias": "decoder.bias"},
    "classification": with_biases({**{f"head.{ours}": theirs for ours, theirs in TRANSFORM.items()},
                                   "head.classifier": "classifier"}),
}
HEADS["token_classification"] = HEADS["classification"]

# BertConfig field -> (config.json key, its value when the key is absent; None: required)
HF_FIELDS = {
    "vocab_size": ("vocab_size", None),
    "d_model": ("hidden_size", None),
    "n_layers": ("num_hidden_layers", None),
    "n_heads": ("num_attention_heads", None),
    "d_ff": ("intermediate_size", None),
    "max_seq_len": ("max_position_embeddings", 8192),
    "dropout": ("mlp_dropout", 0.0),
    "attention_dropout": ("attention_dropout", 0.0),
    "layer_norm_eps": ("norm_eps", 1e-5),
    "init_std": ("initializer_range", 0.02),
    "pad_token_id": ("pad_token_id", 50283),
    "decoder_bias": ("decoder_bias", True),
}
HF_NAMES = {ours: theirs for ours, (theirs, _) in HF_FIELDS.items()} | {
    "activation": "hidden_activation", "head_activation": "classifier_activation", "bias": "attention_bias",
    "local_attention": "local_attention", "global_attn_every_n_layers": "layer_types",
    "rope_theta": f"rope_parameters.{FULL}.rope_theta", "rope_theta_local": f"rope_parameters.{SLIDING}.rope_theta"}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _layer_types(hf: dict, n_layers: int) -> list:
    """config.json's layer types, or those its older ``global_attn_every_n_layers`` (default 3) implies."""
    if "layer_types" in hf and hf["layer_types"] is not None:
        return hf["layer_types"]
    every = hf.get("global_attn_every_n_layers", 3)
    if not _is_int(every) or every < 1:
        raise ConfigError(f"global_attn_every_n_layers={every!r:.80}: expected a whole number >= 1")
    return [SLIDING if i % every else FULL for i in range(n_layers)]


def attention_pattern(hf: dict, n_layers: int) -> tuple[int, int]:
    """(local_attention, global_attn_every_n_layers) of an HF ModernBERT with ``n_layers`` layers; a pattern of
    local and global layers other than bertlite's (global when i % n == 0) is refused by name."""
    types = _layer_types(hf, n_layers)
    if not isinstance(types, list) or len(types) != n_layers or not set(types) <= {FULL, SLIDING}:
        raise ConfigError(f"layer_types={types!r:.200}: expected one of {FULL!r}, {SLIDING!r} for each of the "
                          f"num_hidden_layers={n_layers} layers")
    if SLIDING not in types:
        return 0, 1  # every layer global: no window
    named = hf.get("global_attn_every_n_layers")
    candidates = ([named] if _is_int(named) and named > 1 else []) + list(range(2, n_layers + 1))
    every = next((n for n in candidates if types == [SLIDING if i % n else FULL for i in range(n_layers)]), None)
    if every is None:
        raise ConfigError(f"layer_types={types!r:.200}: bertlite's local attention makes layer i global when "
                          "i % n == 0 and the others local (global_attn_every_n_layers=n); this pattern is not one")
    window = hf.get("local_attention", 128)
    if not _is_int(window) or window < 1:
        raise ConfigError(f"local_attention={window!r:.80}: the local layers' window is a whole number of tokens "
                          ">= 1")
    return window, every


def rope_thetas(hf: dict) -> tuple[float, float]:
    """(global, local) rotary bases: rope_parameters (transformers 5), else global_rope_theta/local_rope_theta;
    rotary scaling (any rope_type but "default") is refused by name."""
    if hf.get("rope_scaling"):
        raise ConfigError(f"rope_scaling={hf['rope_scaling']!r:.120}: bertlite's rotary positions are unscaled "
                          "(rope_type 'default')")
    params = hf.get("rope_parameters") or {}
    thetas = []
    for kind, old_key, default in ((FULL, "global_rope_theta", 160000.0), (SLIDING, "local_rope_theta", 10000.0)):
        own = params.get(kind) if isinstance(params, dict) else None
        own = own if own is not None else {}
        if not isinstance(own, dict):
            raise ConfigError(f"rope_parameters.{kind}={own!r:.80}: expected an object with rope_theta")
        rope_type = own.get("rope_type", own.get("type", "default"))
        if rope_type != "default":
            raise ConfigError(f"rope_parameters.{kind}.rope_type={rope_type!r:.80}: bertlite's rotary positions "
                              "are unscaled (rope_type 'default')")
        thetas.append(own.get("rope_theta", hf.get(old_key, default)))
    return thetas[0], thetas[1]


def _one_bias(hf: dict) -> bool:
    """bertlite's ``bias``: the four HF switches it stands for, which must agree."""
    values = {name: hf.get(name, False) for name in BIASES}
    if len(set(values.values())) > 1:
        raise ConfigError(f"{', '.join(f'{k}={v}' for k, v in values.items())}: bertlite has one switch for the "
                          "biases of the layers, the LayerNorms and the heads (model.bias); it imports ModernBERTs "
                          "whose four agree")
    return values["attention_bias"]


def _activations(hf: dict) -> tuple[str, str]:
    glu = hf.get("hidden_activation", "gelu")
    if not isinstance(glu, str) or glu not in GLU_FROM_HF:
        raise ConfigError(f"hidden_activation={glu!r:.80} has no bertlite equivalent: its gated feed-forward is "
                          f"geglu or swiglu (hidden_activation {', '.join(GLU_FROM_HF)})")
    head = hf.get("classifier_activation", "gelu")
    if not isinstance(head, str) or head not in HEAD_FROM_HF:
        raise ConfigError(f"classifier_activation={head!r:.80} has no bertlite equivalent; supported: "
                          f"{', '.join(HEAD_FROM_HF)}")
    return GLU_FROM_HF[glu], HEAD_FROM_HF[head]


def _check_unsupported(hf: dict) -> None:
    """Options that change what the network computes and that bertlite lacks, refused by name."""
    if hf.get("tie_word_embeddings") is False:
        raise ConfigError("tie_word_embeddings=false: bertlite's MLM decoder is the word embedding matrix")
    if hf.get("classifier_pooling", "cls") not in POOLINGS:
        raise ConfigError(f"classifier_pooling={hf['classifier_pooling']!r:.80}: bertlite pools by "
                          f"{' or '.join(POOLINGS)}")
    missing = [theirs for theirs, default in HF_FIELDS.values() if default is None and theirs not in hf]
    if missing:
        raise ConfigError(f"config.json lacks {', '.join(missing)}: it does not describe a whole ModernBERT model")


def config_from_hf(hf: dict) -> dict:
    """An HF ModernBERT ``config.json`` -> bertlite BertConfig fields; what bertlite cannot express is one
    ConfigError naming the field. Values are copied as they are: config_from_dict checks their types."""
    _check_unsupported(hf)
    values = {ours: hf.get(theirs, default) for ours, (theirs, default) in HF_FIELDS.items()}
    pad, vocab = values["pad_token_id"], values["vocab_size"]
    if _is_int(vocab) and not (_is_int(pad) and 0 <= pad < vocab):
        raise ConfigError(f"pad_token_id={pad!r:.40}: bertlite needs the id of the padding token, within the "
                          f"vocabulary (0 to {vocab - 1})")
    n_layers = values["n_layers"]
    window, every = attention_pattern(hf, n_layers) if _is_int(n_layers) and n_layers > 0 else (0, 1)
    rope_theta, rope_theta_local = rope_thetas(hf)
    activation, head_activation = _activations(hf)
    return dict(arch="bert", **values, activation=activation, head_activation=head_activation, bias=_one_bias(hf),
                norm_first=True, first_layer_attn_norm=False, position="rope", rope_theta=rope_theta,
                rope_theta_local=rope_theta_local, local_attention=window, global_attn_every_n_layers=every,
                type_vocab_size=0, classifier_head="transform")


# BertConfig fields -> the value every ModernBERT has, and why HF cannot express another
MODERN_LAYOUT = {
    "norm_first": (True, "ModernBERT is pre-LN"),
    "first_layer_attn_norm": (False, "ModernBERT's first layer has no attention LayerNorm"),
    "position": ("rope", "ModernBERT has rotary positions"),
    "type_vocab_size": (0, "ModernBERT has no token types"),
    "classifier_head": ("transform", "ModernBERT's classifiers transform: dense, activation, LayerNorm"),
}


def _refusals(config) -> list[str]:
    """What a bertlite config has that HF ModernBERT cannot express (empty: nothing)."""
    if config.arch != "bert":
        return [f"arch={config.arch!r} (only BERT encoders export to HF ModernBERT)"]
    refusals = [f"{name}={getattr(config, name)!r} ({why})" for name, (value, why) in MODERN_LAYOUT.items()
                if getattr(config, name) != value]
    if config.activation not in GLU_TO_HF:
        refusals.append(f"activation={config.activation!r} (ModernBERT's feed-forward is gated: geglu or swiglu)")
    return refusals


def _attention_to_hf(config) -> dict:
    """Which layers are local, and their window: as transformers 5 reads it (layer_types) and as 4 did."""
    every = config.global_attn_every_n_layers if config.local_attention else 1
    return {"layer_types": [SLIDING if i % every else FULL for i in range(config.n_layers)],
            "global_attn_every_n_layers": every,
            "local_attention": config.local_attention or 128}  # unread when every layer is global: HF's default


def special_token_ids(ids: dict[str, int]) -> dict:
    """config.json's ids of the tokens that open and close a sequence, from the tokenizer's {role: id}
    (ModernBERT's [CLS] is also its bos, [SEP] its eos); None where the tokenizer has no such token."""
    return {"cls_token_id": ids.get("cls"), "sep_token_id": ids.get("sep"),
            "bos_token_id": ids.get("bos", ids.get("cls")), "eos_token_id": ids.get("eos", ids.get("sep"))}


def config_to_hf(config, architecture: str, label_names: list[str] | None = None,
                 problem_type: str | None = None) -> dict:
    """A bertlite BertConfig of ModernBERT's layout -> an HF ModernBERT ``config.json`` (both the transformers 5
    keys, layer_types and rope_parameters, and the older ones that transformers 4 reads)."""
    refusals = _refusals(config)
    if refusals:
        raise ConfigError("cannot export to Hugging Face ModernBERT: no HF equivalent for " + "; ".join(refusals))
    local_theta = config.rope_theta_local or config.rope_theta  # bertlite's local layers fall back to rope_theta
    hf = {"architectures": [architecture], "model_type": "modernbert"}
    if label_names is not None:
        hf["id2label"] = {str(i): name for i, name in enumerate(label_names)}
        hf["label2id"] = {name: i for i, name in enumerate(label_names)}
    if problem_type is not None:
        hf["problem_type"] = HF_PROBLEM_TYPES[problem_type]
    hf.update({theirs: getattr(config, ours) for ours, (theirs, _) in HF_FIELDS.items()})
    hf.update({
        "hidden_activation": GLU_TO_HF[config.activation],
        "classifier_activation": HEAD_TO_HF[config.transform_activation()],
        **{name: config.bias for name in BIASES},
        "embedding_dropout": config.dropout,
        **_attention_to_hf(config),
        "rope_parameters": {FULL: {"rope_type": "default", "rope_theta": config.rope_theta},
                            SLIDING: {"rope_type": "default", "rope_theta": local_theta}},
        "global_rope_theta": config.rope_theta,
        "local_rope_theta": local_theta,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    })
    return hf


MODERNBERT = HFArchitecture(
    name="ModernBERT", model_type="modernbert", prefix="model",
    classes={"classification": "ModernBertForSequenceClassification", "mlm": "ModernBertForMaskedLM",
             "encoder": "ModernBertModel", "token_classification": "ModernBertForTokenClassification"},
    embeddings=EMBEDDINGS, layer=LAYER, heads=HEADS,
    # a sequence and a token classifier hold the same weights: without a class named, a classifier is a sequence one
    markers=(("classification", ("classifier.weight",)), ("mlm", ("head.dense.weight",))),
    ignored=re.compile(r"(^decoder\.weight$)"),  # tied to the word embeddings
    tied_decoder="decoder.weight",
    config_from_hf=config_from_hf, config_to_hf=config_to_hf, field_names=HF_NAMES,
    exports=lambda config: config.arch == "bert" and config.position == "rope",
    base_names=("embeddings.", "layers.", "final_norm."),
    fused_qkv=True, pooling_key="classifier_pooling", poolings=POOLINGS, special_token_ids=special_token_ids,
)
