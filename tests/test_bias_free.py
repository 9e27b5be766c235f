"""Bias-free models (model.bias=false), ModernBERT's first-layer and head layout, and the layout of the models that
existed before these flags: their state-dict keys, shapes and initial values stay as they were."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bertlite.models import BertForMaskedLM, BertModel, preset
from bertlite.models.encoder import BertForSequenceClassification, BertForTokenClassification
from bertlite.models.registry import PRETRAINING_MODELS, build_classifier

TINY = dict(vocab_size=60, d_model=32, n_heads=4, d_ff=48, n_layers=2, max_seq_len=32, dropout=0.0,
            attention_dropout=0.0)
MODERN = dict(bias=False, norm_first=True, first_layer_attn_norm=False, activation="geglu", position="rope",
              type_vocab_size=0, classifier_head="transform")


def _biases(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_parameters() if name.endswith("bias")]


@pytest.mark.parametrize("arch", ["bert", "gpt", "transformer"])
def test_bias_free_stack_has_no_bias_parameter_at_all(arch):
    config = preset(f"{arch}-tiny", **TINY, bias=False, norm_first=True)
    model = PRETRAINING_MODELS[arch](config)
    backbone = getattr(model, arch)  # the network without its output layer
    assert _biases(backbone) == []
    norms = [m for m in backbone.modules() if isinstance(m, nn.LayerNorm)]
    assert norms and all(m.bias is None for m in norms)


def test_bias_free_heads_keep_a_bias_only_where_modernbert_has_one():
    config = preset("bert-tiny", **TINY, **MODERN)
    assert _biases(BertForMaskedLM(config)) == ["mlm_head.decoder.bias"]  # ModernBERT's decoder_bias=True
    assert _biases(BertForMaskedLM(preset("bert-tiny", **TINY, **MODERN, decoder_bias=False))) == []
    assert _biases(BertForSequenceClassification(config, 3)) == ["head.classifier.bias"]
    assert _biases(BertForTokenClassification(config, 3)) == ["head.classifier.bias"]


def test_modernbert_layout_first_layer_reads_the_normalised_embeddings_and_a_final_norm_closes_the_stack():
    torch.manual_seed(0)
    model = BertModel(preset("bert-tiny", **TINY, **MODERN)).eval()
    keys = set(model.state_dict())
    assert "encoder.layers.0.self_attn_norm.weight" not in keys
    assert {"encoder.layers.1.self_attn_norm.weight", "encoder.final_norm.weight", "embeddings.norm.weight"} <= keys
    assert not any(k.startswith("embeddings.token_type") or k.startswith("embeddings.position") for k in keys)
    layer0 = model.encoder.layers[0]
    x = model.embeddings(torch.randint(1, 60, (2, 9)))  # token embedding -> LayerNorm
    expected = x + layer0.self_attn(x)  # no norm before layer 0's attention
    expected = expected + layer0.feed_forward(layer0.feed_forward_norm(expected))
    with torch.no_grad():
        torch.testing.assert_close(layer0(x), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("per_token", [False, True])
def test_transform_head_is_dense_activation_norm_dropout_classifier(per_token):
    torch.manual_seed(0)
    config = preset("bert-tiny", **TINY, **MODERN)
    model = (BertForTokenClassification(config, 3) if per_token else
             BertForSequenceClassification(config, 3, pooling="mean")).eval()
    ids, mask = torch.randint(1, 60, (2, 9)), torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    head = model.head
    with torch.no_grad():
        hidden = model.bert(ids, mask)
        if not per_token:
            hidden = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # mean over real tokens
        expected = head.classifier(head.norm(torch.nn.functional.gelu(head.dense(hidden))))
        torch.testing.assert_close(model(ids, mask), expected, rtol=0, atol=1e-6)


def test_post_ln_cannot_skip_the_first_attention_norm():
    with pytest.raises(ValueError, match="first_layer_attn_norm=false needs norm_first=true"):
        preset("bert-tiny", **TINY, first_layer_attn_norm=False)
    with pytest.raises(ValueError, match="classifier_head='cls'"):
        preset("bert-tiny", **TINY, classifier_head="cls")


LAYER_KEYS = ["self_attn.qkv_proj.weight", "self_attn.qkv_proj.bias", "self_attn.out_proj.weight",
              "self_attn.out_proj.bias", "self_attn_norm.weight", "self_attn_norm.bias", "feed_forward.up.weight",
              "feed_forward.up.bias", "feed_forward.down.weight", "feed_forward.down.bias",
              "feed_forward_norm.weight", "feed_forward_norm.bias"]
BERT_TINY_MLM_KEYS = (
    ["bert.embeddings.token.weight", "bert.embeddings.position.weight", "bert.embeddings.token_type.weight",
     "bert.embeddings.norm.weight", "bert.embeddings.norm.bias"]
    + [f"bert.encoder.layers.{i}.{k}" for i in range(2) for k in LAYER_KEYS]
    + ["mlm_head.dense.weight", "mlm_head.dense.bias", "mlm_head.norm.weight", "mlm_head.norm.bias",
       "mlm_head.decoder.weight", "mlm_head.decoder.bias"])


def test_bert_tiny_keeps_its_state_dict_keys_and_shapes():
    config = preset("bert-tiny", vocab_size=100)
    state = BertForMaskedLM(config).state_dict()
    assert list(state) == BERT_TINY_MLM_KEYS
    assert state["bert.encoder.layers.0.feed_forward.up.weight"].shape == (512, 128)
    assert list(build_classifier(config, 2).state_dict())[-4:] == ["head.dense.weight", "head.dense.bias",
                                                                   "head.classifier.weight", "head.classifier.bias"]
    assert list(BertForTokenClassification(config, 3).state_dict())[-2:] == ["head.classifier.weight",
                                                                             "head.classifier.bias"]
