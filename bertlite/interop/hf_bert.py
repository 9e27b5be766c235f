"""The correspondence between Hugging Face BERT and bertlite's BERT: config fields and weight names.

One table serves both directions, so import and export cannot drift apart. Neither direction needs
``transformers``: weights are read and written with ``safetensors`` (or ``torch.load`` for ``.bin``).
"""

from __future__ import annotations

import re

from bertlite.errors import ConfigError

# HF hidden_act -> bertlite activation
ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
ACTIVATIONS_TO_HF = {"gelu": "gelu", "relu": "relu", "gelu_tanh": "gelu_pytorch_tanh"}

# bertlite backbone name -> HF name, without the ``bert.`` prefix. {i} is the layer index.
BACKBONE = {
    "embeddings.token.weight": "embeddings.word_embeddings.weight",
    "embeddings.position.weight": "embeddings.position_embeddings.weight",
    "embeddings.token_type.weight": "embeddings.token_type_embeddings.weight",
    "embeddings.norm.weight": "embeddings.LayerNorm.weight",
    "embeddings.norm.bias": "embeddings.LayerNorm.bias",
}
LAYER = {
    "self_attn.q_proj": "attention.self.query",
    "self_attn.k_proj": "attention.self.key",
    "self_attn.v_proj": "attention.self.value",
    "self_attn.out_proj": "attention.output.dense",
    "self_attn_norm": "attention.output.LayerNorm",
    "feed_forward.up": "intermediate.dense",
    "feed_forward.down": "output.dense",
    "feed_forward_norm": "output.LayerNorm",
}
# heads: bertlite name -> HF name (full names, HF side as in BertForMaskedLM / BertForSequenceClassification)
MLM_HEAD = {
    "mlm_head.dense.weight": "cls.predictions.transform.dense.weight",
    "mlm_head.dense.bias": "cls.predictions.transform.dense.bias",
    "mlm_head.norm.weight": "cls.predictions.transform.LayerNorm.weight",
    "mlm_head.norm.bias": "cls.predictions.transform.LayerNorm.bias",
    "mlm_head.decoder.bias": "cls.predictions.bias",
}
CLASSIFIER_HEAD = {  # bertlite's ClassificationHead is BERT's pooler (dense + tanh) followed by the classifier
    "head.dense.weight": "bert.pooler.dense.weight",
    "head.dense.bias": "bert.pooler.dense.bias",
    "head.classifier.weight": "classifier.weight",
    "head.classifier.bias": "classifier.bias",
}
TOKEN_CLASSIFIER_HEAD = {  # BertForTokenClassification: dropout and a linear layer on every position (no pooler)
    "head.classifier.weight": "classifier.weight",
    "head.classifier.bias": "classifier.bias",
}
POOLER = {  # an HF BertModel's pooler, kept by bertlite's BertEncoder(pooler=True)
    "pooler.dense.weight": "bert.pooler.dense.weight",
    "pooler.dense.bias": "bert.pooler.dense.bias",
}
# present in HF files, with no counterpart here (recomputed, tied, or a pretraining-only head)
IGNORED = re.compile(r"(position_ids$|cls\.predictions\.decoder\.(weight|bias)$)")


def backbone_names(n_layers: int) -> dict[str, str]:
    """bertlite ``bert.*`` name -> HF ``bert.*`` name, for every encoder weight."""
    names = {f"bert.{ours}": f"bert.{theirs}" for ours, theirs in BACKBONE.items()}
    for i in range(n_layers):
        for ours, theirs in LAYER.items():
            for p in ("weight", "bias"):
                names[f"bert.encoder.layers.{i}.{ours}.{p}"] = f"bert.encoder.layer.{i}.{theirs}.{p}"
    return names


def normalise_hf_names(state: dict) -> dict:
    """Give every HF weight its BertFor* name: ``bert.`` prefix added where a BertModel saved none,
    and the LayerNorm ``gamma``/``beta`` of old TF-converted checkpoints renamed ``weight``/``bias``."""
    out = {}
    for name, tensor in state.items():
        name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name))
        if name.startswith(("embeddings.", "encoder.", "pooler.")):
            name = "bert." + name
        out[name] = tensor
    return out


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


def config_from_hf(hf: dict) -> dict:
    """An HF BERT ``config.json`` -> bertlite BertConfig fields; options bertlite lacks are refused by name.
    The values are copied as they are: config_from_dict(..., names=HF_NAMES) checks their types."""
    model_type = hf.get("model_type")
    if model_type != "bert":
        raise ConfigError(f"config.json describes a {model_type!r:.80} model (architectures "
                          f"{hf.get('architectures')!r:.200}); bertlite imports BERT models only (model_type 'bert')")
    act = hf.get("hidden_act", "gelu")
    if not isinstance(act, str) or act not in ACTIVATIONS:
        raise ConfigError(f"hidden_act={act!r:.80} has no bertlite equivalent; supported: {', '.join(ACTIVATIONS)}")
    position = hf.get("position_embedding_type", "absolute")
    if position != "absolute":
        raise ConfigError(f"position_embedding_type={position!r:.80} is not supported; bertlite imports "
                          "absolute (learned) position embeddings only")
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        raise ConfigError("this BERT is configured as a decoder (is_decoder/add_cross_attention); "
                          "bertlite imports bidirectional BERT encoders")
    missing = [theirs for theirs, default in HF_FIELDS.values() if default is None and theirs not in hf]
    if missing:
        raise ConfigError(f"config.json lacks {', '.join(missing)}: it does not describe a whole BERT model")
    values = {ours: hf.get(theirs, default) for ours, (theirs, default) in HF_FIELDS.items()}
    return dict(arch="bert", **values, activation=ACTIVATIONS[act], norm_first=False, position="learned",
                pad_token_id=hf.get("pad_token_id") or 0)


# bertlite's data.problem_type -> Hugging Face's config.problem_type (the loss its sequence classifier uses)
HF_PROBLEM_TYPES = {"single_label": "single_label_classification", "multi_label": "multi_label_classification",
                    "regression": "regression"}


def problem_type_from_hf(hf: dict, num_labels: int) -> str:
    """HF's problem_type; unset, it is regression for one output and single-label otherwise (as HF decides)."""
    named = {theirs: ours for ours, theirs in HF_PROBLEM_TYPES.items()}.get(hf.get("problem_type"))
    return named or ("regression" if num_labels == 1 else "single_label")


def config_to_hf(config, architecture: str, label_names: list[str] | None = None,
                 problem_type: str | None = None) -> dict:
    """A bertlite BertConfig -> an HF ``config.json``; refuses options HF BERT cannot express."""
    refusals = []
    if config.arch != "bert":
        refusals.append(f"arch={config.arch!r} (only BERT encoders export to HF BERT)")
    else:
        if config.norm_first:
            refusals.append("norm_first=true (pre-LN; HF BERT is post-LN)")
        if config.position != "learned":
            refusals.append(f"position={config.position!r} (HF BERT has learned absolute positions)")
        if config.activation not in ACTIVATIONS_TO_HF:
            refusals.append(f"activation={config.activation!r}")
        if config.type_vocab_size < 1:
            refusals.append("type_vocab_size=0 (HF BERT always has token-type embeddings)")
    if refusals:
        raise ConfigError("cannot export to Hugging Face BERT: no HF equivalent for " + "; ".join(refusals))
    hf = {
        "architectures": [architecture],
        "model_type": "bert",
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "intermediate_size": config.d_ff,
        "hidden_act": ACTIVATIONS_TO_HF[config.activation],
        "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": config.attention_dropout,
        "max_position_embeddings": config.max_seq_len,
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
