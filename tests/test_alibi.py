"""ALiBi positions: the slopes and the bias against the paper's formulas, both attention paths with the bias,
and the models built with it (no position vectors, relative only, causal, cached decoding)."""

from __future__ import annotations

import pytest
import torch

from bertlite.errors import ConfigError
from bertlite.interop.hf_bert import config_to_hf
from bertlite.models import BertModel, preset
from bertlite.models.decoder import GPTForCausalLM
from bertlite.nn import attention_fused, attention_reference
from bertlite.nn.positional import alibi_bias, alibi_slopes

TINY = dict(vocab_size=60, d_model=32, n_heads=4, d_ff=64, n_layers=2, max_seq_len=32, dropout=0.0,
            attention_dropout=0.0, position="alibi")


def test_slopes_follow_the_paper():
    # Press et al.: for 8 heads 1/2, 1/4, ..., 1/256; for 6, the 4-head slopes then 1/2 and 1/8 from the 8-head ones
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0 ** -i for i in range(1, 9)]))
    torch.testing.assert_close(alibi_slopes(6), torch.tensor([2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8,
                                                              2.0 ** -1, 2.0 ** -3]))


def test_bias_is_minus_slope_times_distance_aligned_to_the_last_key():
    slopes = torch.tensor([0.5, 0.125])
    bias = alibi_bias(slopes, t_q=2, t_k=5)  # the queries are positions 3 and 4
    assert bias.shape == (2, 2, 5)
    for h in range(2):
        for i, pos in enumerate((3, 4)):
            for j in range(5):
                assert bias[h, i, j].item() == pytest.approx(-slopes[h].item() * abs(pos - j))


def test_reference_weights_decay_with_distance():
    """Equal scores (q = 0): the weights are exp(-m|i - j|), normalised, exactly the prior ALiBi gives a head."""
    t, slopes = 6, alibi_slopes(2)
    q, k, v = torch.zeros(1, 2, t, 8), torch.randn(1, 2, t, 8), torch.randn(1, 2, t, 8)
    _, weights = attention_reference(q, k, v, bias=alibi_bias(slopes, t, t))
    distance = (torch.arange(t)[:, None] - torch.arange(t)[None, :]).abs()
    expected = torch.exp(-slopes[:, None, None] * distance)
    torch.testing.assert_close(weights[0], expected / expected.sum(-1, keepdim=True))


@pytest.mark.parametrize("causal", [False, True])
def test_fused_matches_reference_with_bias_and_padding(causal):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 4, 10, 16, generator=g) for _ in range(3))
    mask = (torch.arange(10)[None, :] < torch.tensor([10, 6, 3])[:, None])[:, None, None, :]
    bias = alibi_bias(alibi_slopes(4), 10, 10)
    ref, _ = attention_reference(q, k, v, mask, causal, bias=bias)
    torch.testing.assert_close(attention_fused(q, k, v, mask, causal, bias=bias), ref, atol=1e-5, rtol=0)
    without, _ = attention_reference(q, k, v, mask, causal)
    assert not torch.allclose(without, ref, atol=1e-3)


def test_alibi_bert_has_no_position_vectors_and_sees_relative_positions_only():
    torch.manual_seed(0)
    model = BertModel(preset("bert-tiny", **TINY)).eval()
    assert model.embeddings.position is None
    assert not any("position" in name for name, _ in model.named_parameters())
    ids = torch.randint(5, 60, (1, 9))
    # Left padding shifts every token's absolute position by 4: with distances only, nothing changes.
    shifted = torch.cat([torch.zeros(1, 4, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 9, dtype=torch.long)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(shifted, mask)[:, 4:], model(ids), atol=1e-5, rtol=0)
        # ...whereas learned absolute positions do see the shift
        learned = BertModel(preset("bert-tiny", **{**TINY, "position": "learned"})).eval()
        assert not torch.allclose(learned(shifted, mask)[:, 4:], learned(ids), atol=1e-3)


def test_alibi_gpt_is_causal_and_its_cache_matches():
    torch.manual_seed(0)
    model = GPTForCausalLM(preset("gpt-tiny", **TINY)).eval()
    ids = torch.randint(5, 60, (2, 16))
    changed = ids.clone()
    changed[:, 8:] = torch.randint(5, 60, (2, 8))
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert (a[:, :8] - b[:, :8]).abs().max() <= 1e-6 and (a[:, 8:] - b[:, 8:]).abs().max() > 1e-3
    prompt = ids[:, :5]
    cached = model.generate(prompt, 10, greedy=True, use_cache=True)
    uncached = model.generate(prompt, 10, greedy=True, use_cache=False)
    assert torch.equal(cached, uncached)


def test_alibi_encoder_does_not_export_to_hf_bert():
    with pytest.raises(ConfigError, match="position='alibi'"):
        config_to_hf(preset("bert-tiny", **TINY), "BertModel")
