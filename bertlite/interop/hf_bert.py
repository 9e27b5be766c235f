"""The correspondence between Hugging Face BERT and bertlite's BERT: config fields and weight names (``BERT``).

One table serves both directions, so import and export cannot drift apart. Neither direction needs
``transformers``: weights are read and written with ``safetensors`` (or ``torch.load`` for ``.bin``).
RoBERTa (hf_roberta.py) shares BERT's layout and the config code here.
"""

from __future__ import annotations

import re

from bertlite.errors import ConfigError
from bertlite.interop.hf_arch import HFArchitecture, with_biases

# HF hidden_act -> bertlite activation
ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
ACTIVATIONS_TO_HF = {"gelu": "gelu", "relu": "relu", "gelu_tanh": "gelu_pytorch_tanh"}

# bertlite name (under "bert.") -> HF name (under "bert."); {i} is the layer index
EMBEDDINGS = {
    "embeddings.token.weight": "embeddings.word_embeddings.weight",
    "embeddings.position.weight": "embeddings.position_embeddings.weight",
    "embeddings.token_type.weight": "embeddings.token_type_embeddings.weight",
    "embeddings.norm.weight": "embeddings.LayerNorm.weight",
    "embeddings.norm.bias": "embeddings.LayerNorm.bias",
}
LAYER_MODULES = {
    "self_attn.q_proj": "attention.self.query",
    "self_attn.k_proj": "attention.self.key",
    "self_attn.v_proj": "attention.self.value",
    "self_attn.out_proj": "attention.output.dense",
    "self_attn_norm": "attention.output.LayerNorm",
    "feed_forward.up": "intermediate.dense",
    "feed_forward.down": "output.dense",
    "feed_forward_norm": "output.LayerNorm",
}
LAYER = with_biases({ours: f"encoder.layer.{{i}}.{theirs}" for ours, theirs in LAYER_MODULES.items()})
HEADS = {  # bertlite name -> HF name, as BertForMaskedLM / BertForSequenceClassification / ... save them
    "mlm": {**with_biases({"mlm_head.dense": "cls.predictions.transform.dense",
                           "mlm_head.norm": "cls.predictions.transform.LayerNorm"}),
            "mlm_head.decoder.bias": "cls.predictions.bias"},
    # bertlite's ClassificationHead is BERT's pooler (dense + tanh) followed by the classifier
    "classification": with_biases({"head.dense": "bert.pooler.dense", "head.classifier": "classifier"}),
    # BertForTokenClassification: dropout and a linear layer on every position (no pooler)
    "token_classification": with_biases({"head.classifier": "classifier"}),
    "pooler": with_biases({"pooler.dense": "bert.pooler.dense"}),  # a BertModel's, kept by BertEncoder(pooler=True)
}


# BertConfig field -> (the HF config.json key it comes from, its value when the key is absent; None: required)
HF_FIELDS = {
    "vocab_size": ("vocab_size", None),
    "d_model": ("hidden_size", None),
    "n_layers": ("num_hidden_layers", None),
    "n_heads": ("num_attention_heads", None),
    "d_ff": ("intermediate_size", None),
    "max_seq_len": ("max_position_embeddings", 512),
    "dropout": ("hidden_dropout_prob", 0.1),
    "attention_dropout": ("attention_probs_dropout_prob", 0.1),
    "layer_norm_eps": ("layer_norm_eps", 1e-12),
    "init_std": ("initializer_range", 0.02),
    "type_vocab_size": ("type_vocab_size", 2),
}
HF_NAMES = {ours: theirs for ours, (theirs, _) in HF_FIELDS.items()} | {"pad_token_id": "pad_token_id",
                                                                        "activation": "hidden_act"}


def bert_family_config(hf: dict, family: str, pad_default: int) -> dict:
    """An HF config.json of BERT's layout (BERT, RoBERTa) -> bertlite BertConfig fields; options bertlite lacks are
    refused by name. The values are copied as they are: config_from_dict(..., names=HF_NAMES) checks their types."""
    act = hf.get("hidden_act", "gelu")
    if not isinstance(act, str) or act not in ACTIVATIONS:
        raise ConfigError(f"hidden_act={act!r:.80} has no bertlite equivalent; supported: {', '.join(ACTIVATIONS)}")
    position = hf.get("position_embedding_type", "absolute")
    if position != "absolute":
        raise ConfigError(f"position_embedding_type={position!r:.80} is not supported; bertlite imports "
                          "absolute (learned) position embeddings only")
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        raise ConfigError(f"this {family} is configured as a decoder (is_decoder/add_cross_attention); "
                          f"bertlite imports bidirectional {family} encoders")
    missing = [theirs for theirs, default in HF_FIELDS.values() if default is None and theirs not in hf]
    if missing:
        raise ConfigError(f"config.json lacks {', '.join(missing)}: it does not describe a whole {family} model")
    values = {ours: hf.get(theirs, default) for ours, (theirs, default) in HF_FIELDS.items()}
    pad = hf.get("pad_token_id")
    return dict(arch="bert", **values, activation=ACTIVATIONS[act], norm_first=False, position="learned",
                pad_token_id=pad_default if pad is None else pad)


def config_from_hf(hf: dict) -> dict:
    """An HF BERT ``config.json`` -> bertlite BertConfig fields."""
    return bert_family_config(hf, "BERT", pad_default=0)


# bertlite's data.problem_type -> Hugging Face's config.problem_type (the loss its sequence classifier uses)
HF_PROBLEM_TYPES = {"single_label": "single_label_classification", "multi_label": "multi_label_classification",
                    "regression": "regression"}


def problem_type_from_hf(hf: dict, num_labels: int) -> str:
    """HF's problem_type; unset, it is regression for one output and single-label otherwise (as HF decides)."""
    named = {theirs: ours for ours, theirs in HF_PROBLEM_TYPES.items()}.get(hf.get("problem_type"))
    return named or ("regression" if num_labels == 1 else "single_label")


def bert_family_refusals(config, family: str) -> list[str]:
    """What a bertlite config has that an HF model of BERT's layout cannot express (empty: nothing)."""
    if config.arch != "bert":
        return [f"arch={config.arch!r} (only BERT encoders export to HF {family})"]
    refusals = []
    if config.norm_first:
        refusals.append(f"norm_first=true (pre-LN; HF {family} is post-LN)")
    if config.position != "learned":
        refusals.append(f"position={config.position!r} (HF {family} has learned absolute positions)")
    if config.activation not in ACTIVATIONS_TO_HF:
        refusals.append(f"activation={config.activation!r}")
    if config.type_vocab_size < 1:
        refusals.append(f"type_vocab_size=0 (HF {family} always has token-type embeddings)")
    for name, plain in BERT_LAYOUT.items():  # the modern blocks' switches, each at BERT's setting
        value = getattr(config, name, plain)
        if value != plain and not (name == "head_activation" and value == config.activation):
            refusals.append(f"{name}={value!r}")
    return refusals


# BertConfig fields beyond BERT's layout -> the value at which a model has BERT's layout
BERT_LAYOUT = {"bias": True, "local_attention": 0, "first_layer_attn_norm": True, "classifier_head": "pooler",
               "head_activation": None, "decoder_bias": True}


def bert_family_to_hf(config, model_type: str, architecture: str, label_names: list[str] | None,
                      problem_type: str | None) -> dict:
    """The config.json fields BERT and RoBERTa share (max_position_embeddings: bertlite's table, offset included)."""
    hf = {
        "architectures": [architecture],
        "model_type": model_type,
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "intermediate_size": config.d_ff,
        "hidden_act": ACTIVATIONS_TO_HF[config.activation],
        "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": config.attention_dropout,
        "max_position_embeddings": config.max_seq_len + getattr(config, "position_offset", 0),
        "type_vocab_size": config.type_vocab_size,
        "initializer_range": config.init_std,
        "layer_norm_eps": config.layer_norm_eps,
        "pad_token_id": config.pad_token_id,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }
    if label_names is not None:
        hf["id2label"] = {str(i): name for i, name in enumerate(label_names)}
        hf["label2id"] = {name: i for i, name in enumerate(label_names)}
    if problem_type is not None:
        hf["problem_type"] = HF_PROBLEM_TYPES[problem_type]
    return hf


def config_to_hf(config, architecture: str, label_names: list[str] | None = None,
                 problem_type: str | None = None) -> dict:
    """A bertlite BertConfig -> an HF BERT ``config.json``; refuses options HF BERT cannot express."""
    refusals = bert_family_refusals(config, "BERT")
    if getattr(config, "position_offset", 0):
        refusals.append(f"position_offset={config.position_offset} (HF BERT's positions start at row 0)")
    if refusals:
        raise ConfigError("cannot export to Hugging Face BERT: no HF equivalent for " + "; ".join(refusals))
    return bert_family_to_hf(config, "bert", architecture, label_names, problem_type)


BERT = HFArchitecture(
    name="BERT", model_type="bert", prefix="bert",
    classes={"classification": "BertForSequenceClassification", "mlm": "BertForMaskedLM", "encoder": "BertModel",
             "token_classification": "BertForTokenClassification"},
    also_reads={"BertForPreTraining": "mlm"},
    embeddings=EMBEDDINGS, layer=LAYER, heads=HEADS,
    markers=(("classification", ("classifier.weight", "bert.pooler.dense.weight")),
             ("token_classification", ("classifier.weight",)),
             ("mlm", ("cls.predictions.transform.dense.weight",))),
    # recomputed, or tied to the word embeddings
    ignored=re.compile(r"(position_ids$|cls\.predictions\.decoder\.(weight|bias)$)"),
    tied_decoder="cls.predictions.decoder.weight",
    config_from_hf=config_from_hf, config_to_hf=config_to_hf, field_names=HF_NAMES,
    exports=lambda config: getattr(config, "position_offset", 0) == 0,
)
