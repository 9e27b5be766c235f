"""Gated feed-forward layers (GEGLU, SwiGLU): the formula, ModernBERT's layout of the input projection, the
activation of the heads, and the refusal of an unknown activation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bertlite.errors import ConfigError
from bertlite.models import BertForMaskedLM, config_from_dict, preset
from bertlite.nn import FeedForward

TINY = dict(vocab_size=60, d_model=32, n_heads=4, d_ff=48, n_layers=2, max_seq_len=32, dropout=0.0,
            attention_dropout=0.0)


@pytest.mark.parametrize("activation,act", [("geglu", F.gelu), ("swiglu", F.silu)])
def test_gated_feed_forward_is_the_glu_formula(activation, act):
    torch.manual_seed(0)
    ff = FeedForward(16, 24, activation)
    x = torch.randn(3, 5, 16)
    w, b = ff.up.weight, ff.up.bias  # (2 d_ff, d_model): W_in above W_gate
    value = x @ w[:24].T + b[:24]
    gate = x @ w[24:].T + b[24:]
    expected = (act(value) * gate) @ ff.down.weight.T + ff.down.bias
    torch.testing.assert_close(ff(x), expected, rtol=0, atol=1e-6)


def test_gated_input_projection_is_twice_d_ff_wide_and_d_ff_is_the_width_after_the_gate():
    ff = FeedForward(16, 24, "geglu", bias=False)
    assert ff.up.weight.shape == (48, 16) and ff.down.weight.shape == (16, 24)
    assert ff.up.bias is None and ff.down.bias is None
    plain = FeedForward(16, 24, "gelu")
    assert plain.up.weight.shape == (24, 16)


def test_geglu_matches_transformers_modernbert_mlp():
    from transformers import ModernBertConfig
    from transformers.models.modernbert.modeling_modernbert import ModernBertMLP

    hf = ModernBertMLP(ModernBertConfig(hidden_size=16, intermediate_size=24)).eval()  # hidden_activation "gelu"
    ff = FeedForward(16, 24, "geglu", bias=False)
    ff.load_state_dict({"up.weight": hf.Wi.weight, "down.weight": hf.Wo.weight})
    x = torch.randn(2, 7, 16) * 3  # large enough that the tanh approximation of GELU would differ
    torch.testing.assert_close(ff(x), hf(x), rtol=0, atol=1e-6)


def test_gelu_is_the_exact_erf_form():
    x = torch.linspace(-4, 4, 101)
    ff = FeedForward(1, 1, "geglu")
    assert torch.allclose(ff.act(x), 0.5 * x * (1 + torch.erf(x / 2 ** 0.5)), atol=1e-6)


@pytest.mark.parametrize("activation,head", [("geglu", "gelu"), ("swiglu", "silu"), ("relu", "relu")])
def test_mlm_head_takes_the_element_wise_activation_of_a_gated_feed_forward(activation, head):
    model = BertForMaskedLM(preset("bert-tiny", **TINY, activation=activation))
    x = torch.randn(4, 32)
    assert torch.equal(model.mlm_head.act(x), FeedForward(1, 1, head).act(x))
    chosen = BertForMaskedLM(preset("bert-tiny", **TINY, activation=activation, head_activation="gelu_tanh"))
    assert torch.equal(chosen.mlm_head.act(x), F.gelu(x, approximate="tanh"))


def test_glu_layers_hold_three_d_model_by_d_ff_matrices():
    model = BertForMaskedLM(preset("bert-tiny", **TINY, activation="swiglu"))
    ff = model.bert.encoder.layers[1].feed_forward
    assert ff.up.weight.numel() + ff.down.weight.numel() == 3 * 32 * 48


def test_unknown_activations_are_refused_by_the_config():
    with pytest.raises(ValueError, match="activation='reglu'.*geglu, swiglu"):
        preset("bert-tiny", **TINY, activation="reglu")
    with pytest.raises(ConfigError, match="activation='reglu'"):
        config_from_dict({**TINY, "arch": "bert", "activation": "reglu"})
    with pytest.raises(ValueError, match="head_activation='geglu'"):  # the head's dense layer is not gated
        preset("bert-tiny", **TINY, head_activation="geglu")
