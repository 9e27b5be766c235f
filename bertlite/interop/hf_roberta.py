"""The correspondence between Hugging Face RoBERTa and bertlite's BERT (``ROBERTA``).

RoBERTa (Liu et al., 2019) is BERT's network with three differences that reach the weights:
- learned positions counted from ``padding_idx + 1``: the HF table has max_position_embeddings = 514 rows for 512
  tokens, kept whole as a bertlite BertConfig with ``position_offset = pad_token_id + 1``;
- one token type (type_vocab_size 1, read as it is);
- its heads: ``lm_head`` (dense, gelu, layer_norm, decoder tied to the word embeddings, bias) is bertlite's
  MaskedLMHead; the sequence classifier (dense, tanh, dropout, out_proj on <s>) is bertlite's ClassificationHead.
The encoder layers are BERT's, under ``roberta.``.
"""

from __future__ import annotations

import re

from bertlite.errors import ConfigError
from bertlite.interop.hf_arch import HFArchitecture, with_biases
from bertlite.interop.hf_bert import (EMBEDDINGS, HF_NAMES, LAYER, bert_family_config, bert_family_refusals,
                                      bert_family_to_hf)

HEADS = {  # bertlite name -> HF name, as RobertaForMaskedLM / RobertaForSequenceClassification / ... save them
    "mlm": {**with_biases({"mlm_head.dense": "lm_head.dense", "mlm_head.norm": "lm_head.layer_norm"}),
            "mlm_head.decoder.bias": "lm_head.bias"},
    "classification": with_biases({"head.dense": "classifier.dense", "head.classifier": "classifier.out_proj"}),
    "token_classification": with_biases({"head.classifier": "classifier"}),
    "pooler": with_biases({"pooler.dense": "roberta.pooler.dense"}),  # a RobertaModel's
}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def config_from_hf(hf: dict) -> dict:
    """An HF RoBERTa ``config.json`` -> bertlite BertConfig fields: max_seq_len counts the usable positions,
    position_offset the rows before them."""
    values = bert_family_config(hf, "RoBERTa", pad_default=1)
    if values["activation"] != "gelu":  # RobertaLMHead applies gelu whatever hidden_act says
        raise ConfigError(f"hidden_act={hf.get('hidden_act')!r:.80}: bertlite imports RoBERTa with hidden_act=gelu "
                          "only (RoBERTa's MLM head uses gelu whatever hidden_act says, bertlite's the encoder's)")
    rows, pad = values["max_seq_len"], values["pad_token_id"]
    if _is_int(rows) and _is_int(pad):  # other values are refused by type, by config_from_dict
        if pad < 0 or rows - pad - 1 < 1:
            raise ConfigError(f"max_position_embeddings={rows} with pad_token_id={pad} leaves no position for a "
                              "token (RoBERTa's positions start at pad_token_id + 1)")
        values.update(max_seq_len=rows - pad - 1, position_offset=pad + 1)
    return values


def config_to_hf(config, architecture: str, label_names: list[str] | None = None,
                 problem_type: str | None = None) -> dict:
    """A bertlite BertConfig with RoBERTa's positions -> an HF RoBERTa ``config.json``."""
    refusals = bert_family_refusals(config, "RoBERTa")
    if config.arch == "bert" and config.activation != "gelu":
        refusals.append(f"activation={config.activation!r} (RoBERTa's MLM head is gelu)")
    if config.arch == "bert" and config.position_offset != config.pad_token_id + 1:
        refusals.append(f"position_offset={config.position_offset} (RoBERTa's positions start at pad_token_id + 1 "
                        f"= {config.pad_token_id + 1})")
    if refusals:
        raise ConfigError("cannot export to Hugging Face RoBERTa: no HF equivalent for " + "; ".join(refusals))
    return bert_family_to_hf(config, "roberta", architecture, label_names, problem_type)


ROBERTA = HFArchitecture(
    name="RoBERTa", model_type="roberta", prefix="roberta",
    classes={"classification": "RobertaForSequenceClassification", "mlm": "RobertaForMaskedLM",
             "encoder": "RobertaModel", "token_classification": "RobertaForTokenClassification"},
    embeddings=EMBEDDINGS, layer=LAYER, heads=HEADS,
    markers=(("classification", ("classifier.out_proj.weight",)), ("token_classification", ("classifier.weight",)),
             ("mlm", ("lm_head.dense.weight",))),
    # recomputed, or tied: the decoder to the word embeddings, its bias to lm_head.bias
    ignored=re.compile(r"(position_ids$|lm_head\.decoder\.(weight|bias)$)"),
    tied_decoder="lm_head.decoder.weight",
    config_from_hf=config_from_hf, config_to_hf=config_to_hf,
    field_names={**HF_NAMES, "position_offset": "pad_token_id"},
    exports=lambda config: 0 < getattr(config, "position_offset", 0) == config.pad_token_id + 1,
)
