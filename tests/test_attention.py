"""Scaled dot-product attention: the reference and fused paths, masks, multi-head attention,
padding invariance of BertModel, and key/value-cache consistency."""

from __future__ import annotations

import math

import pytest
import torch

from bertlite.models import BertModel, preset
from bertlite.nn import MultiHeadAttention, TransformerStack, attention_fused, attention_reference

ATOL = 1e-5
B, H, T, DK = 3, 2, 12, 16
D_MODEL, N_HEADS, D_FF = 32, 4, 64


def _qkv(seed: int, t_q: int = T, t_k: int = T):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, t_q, DK, generator=g)
    k = torch.randn(B, H, t_k, DK, generator=g)
    v = torch.randn(B, H, t_k, DK, generator=g)
    return q, k, v


def _padding_mask(seed: int, t: int = T) -> tuple[torch.Tensor, torch.Tensor]:
    """Right padding with random lengths in [1, t]; at least one row is shorter than t."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (B,), generator=g)
    lengths[0] = max(1, t // 2)
    key_mask = torch.arange(t)[None, :] < lengths[:, None]  # (B, T)
    return key_mask[:, None, None, :], lengths  # (B, 1, 1, T)


# --------------------------------------------------------------------------------------------
# attention_reference vs attention_fused
# --------------------------------------------------------------------------------------------
def test_fused_matches_reference_no_mask():
    q, k, v = _qkv(0)
    ref, _ = attention_reference(q, k, v)
    torch.testing.assert_close(attention_fused(q, k, v), ref, atol=ATOL, rtol=0)


def test_fused_matches_reference_padding_mask():
    q, k, v = _qkv(1)
    mask, lengths = _padding_mask(1)
    assert mask.shape == (B, 1, 1, T) and mask.dtype == torch.bool
    assert (lengths < T).any()
    ref, _ = attention_reference(q, k, v, mask=mask)
    torch.testing.assert_close(attention_fused(q, k, v, mask=mask), ref, atol=ATOL, rtol=0)
    # The mask must actually do something: without it the result differs.
    unmasked, _ = attention_reference(q, k, v)
    assert not torch.allclose(unmasked, ref, atol=1e-3)


def test_fused_matches_reference_causal():
    q, k, v = _qkv(2)
    ref, _ = attention_reference(q, k, v, causal=True)
    torch.testing.assert_close(attention_fused(q, k, v, causal=True), ref, atol=ATOL, rtol=0)
    # Causal: the first query sees only the first key, so its output is exactly v[..., 0, :].
    torch.testing.assert_close(ref[:, :, 0], v[:, :, 0], atol=ATOL, rtol=0)


def test_fused_matches_reference_causal_and_padding():
    q, k, v = _qkv(3)
    mask, _ = _padding_mask(3)
    ref, w = attention_reference(q, k, v, mask=mask, causal=True)
    torch.testing.assert_close(attention_fused(q, k, v, mask=mask, causal=True), ref, atol=ATOL, rtol=0)
    # Both constraints are applied: key j is visible to query i only if j <= i and j is a real token.
    allowed = torch.ones(T, T, dtype=torch.bool).tril() & mask
    assert torch.all(w[~allowed.expand_as(w)] == 0)


@pytest.mark.parametrize("t_q", [1, 4, T - 1])
def test_fused_causal_with_fewer_queries_than_keys(t_q):
    """Queries are the last t_q positions of the sequence (as when earlier keys come from a cache)."""
    q_full, k, v = _qkv(4)
    q = q_full[:, :, -t_q:]
    ref, _ = attention_reference(q, k, v, causal=True)
    fused = attention_fused(q, k, v, causal=True)
    full, _ = attention_reference(q_full, k, v, causal=True)
    assert fused.shape == (B, H, t_q, DK)
    torch.testing.assert_close(fused, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(fused, full[:, :, -t_q:], atol=ATOL, rtol=0)


def test_fused_causal_fewer_queries_with_padding_mask():
    q_full, k, v = _qkv(5)
    mask, _ = _padding_mask(5)
    t_q = 5
    fused = attention_fused(q_full[:, :, -t_q:], k, v, mask=mask, causal=True)
    full, _ = attention_reference(q_full, k, v, mask=mask, causal=True)
    torch.testing.assert_close(fused, full[:, :, -t_q:], atol=ATOL, rtol=0)


def test_reference_weights_are_distributions_zero_at_masked_keys():
    q, k, v = _qkv(6)
    mask, _ = _padding_mask(6)
    _, w = attention_reference(q, k, v, mask=mask)
    assert w.shape == (B, H, T, T)
    torch.testing.assert_close(w.sum(-1), torch.ones(B, H, T), atol=ATOL, rtol=0)
    masked = (~mask).expand_as(w)
    assert masked.any()
    assert torch.all(w[masked] == 0.0)  # exactly zero, not merely small
    assert torch.all(w[~masked] > 0.0)

    _, wc = attention_reference(q, k, v, causal=True)
    torch.testing.assert_close(wc.sum(-1), torch.ones(B, H, T), atol=ATOL, rtol=0)
    future = torch.ones(T, T, dtype=torch.bool).triu(diagonal=1).expand_as(wc)
    assert torch.all(wc[future] == 0.0)


def test_reference_uses_inverse_sqrt_dk_scaling():
    q, k, v = _qkv(7)
    out, w = attention_reference(q, k, v)
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(DK)
    expected_w = torch.softmax(scores, dim=-1)
    torch.testing.assert_close(w, expected_w, atol=ATOL, rtol=0)
    torch.testing.assert_close(out, torch.matmul(expected_w, v), atol=ATOL, rtol=0)
    # And not some other temperature: unscaled or 1/d_k scaling gives a visibly different result.
    for wrong in (1.0, 1.0 / DK):
        other = torch.matmul(torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * wrong, dim=-1), v)
        assert not torch.allclose(other, out, atol=1e-3)


# --------------------------------------------------------------------------------------------
# MultiHeadAttention
# --------------------------------------------------------------------------------------------
def _mha(seed: int = 0) -> MultiHeadAttention:
    torch.manual_seed(seed)
    return MultiHeadAttention(D_MODEL, N_HEADS).eval()


def test_mha_rejects_indivisible_heads():
    with pytest.raises(ValueError):
        MultiHeadAttention(30, 4)


def test_mha_output_shape():
    mha = _mha()
    x = torch.randn(B, T, D_MODEL, generator=torch.Generator().manual_seed(0))
    assert mha(x).shape == (B, T, D_MODEL)
    assert mha.attention_weights is None  # the fused path records nothing


@pytest.mark.parametrize("causal", [False, True])
def test_mha_record_weights_matches_fused(causal):
    mha = _mha(1)
    x = torch.randn(B, T, D_MODEL, generator=torch.Generator().manual_seed(1))
    mask, _ = _padding_mask(1)
    with torch.no_grad():
        fused = mha(x, mask=mask, causal=causal)
        mha.record_weights = True
        recorded = mha(x, mask=mask, causal=causal)
    torch.testing.assert_close(recorded, fused, atol=ATOL, rtol=0)
    w = mha.attention_weights
    assert w is not None and w.shape == (B, N_HEADS, T, T)
    torch.testing.assert_close(w.sum(-1), torch.ones(B, N_HEADS, T), atol=ATOL, rtol=0)


def test_mha_cross_attention_different_context_length():
    mha = _mha(2)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(B, T, D_MODEL, generator=g)
    s = 7
    context = torch.randn(B, s, D_MODEL, generator=g)
    with torch.no_grad():
        out = mha(x, context=context)
        mha.record_weights = True
        out_ref = mha(x, context=context)
    assert out.shape == (B, T, D_MODEL)
    assert mha.attention_weights.shape == (B, N_HEADS, T, s)
    torch.testing.assert_close(out, out_ref, atol=ATOL, rtol=0)
    # Keys and values come from the context: changing the context changes the output,
    # while per-query independence means each output row depends only on its own query.
    with torch.no_grad():
        out2 = mha(x, context=context + 1.0)
        first_only = mha(x[:, :1], context=context)
    assert not torch.allclose(out, out2, atol=1e-3)
    torch.testing.assert_close(first_only[:, 0], out[:, 0], atol=ATOL, rtol=0)


# --------------------------------------------------------------------------------------------
# Padding invariance of BertModel
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bert():
    cfg = preset("bert-tiny", d_model=64, n_heads=2, d_ff=128, n_layers=2, vocab_size=100, max_seq_len=32,
                 dropout=0.0, attention_dropout=0.0)
    torch.manual_seed(0)
    return BertModel(cfg).eval()


def test_bert_padding_invariance(bert):
    g = torch.Generator().manual_seed(10)
    lengths = [9, 5, 13]
    padded_len = 20
    seqs = [torch.randint(5, 100, (n,), generator=g) for n in lengths]
    ids = torch.zeros(len(seqs), padded_len, dtype=torch.long)
    attention_mask = torch.zeros(len(seqs), padded_len, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        attention_mask[i, : len(s)] = 1
    with torch.no_grad():
        padded = bert(ids, attention_mask)
        # Different junk at the padded positions.
        junk = torch.where(attention_mask.bool(), ids, torch.randint(1, 100, ids.shape, generator=g))
        padded_junk = bert(junk, attention_mask)
        for i, s in enumerate(seqs):
            alone = bert(s[None], torch.ones(1, len(s), dtype=torch.long))[0]
            alone_no_mask = bert(s[None])[0]
            n = len(s)
            torch.testing.assert_close(padded[i, :n], alone, atol=ATOL, rtol=0)
            torch.testing.assert_close(padded[i, :n], alone_no_mask, atol=ATOL, rtol=0)
            torch.testing.assert_close(padded_junk[i, :n], padded[i, :n], atol=ATOL, rtol=0)
    # Sanity: without the attention mask the padding *does* leak into the real positions.
    with torch.no_grad():
        leaky = bert(ids)
    assert not torch.allclose(leaky[1, : lengths[1]], padded[1, : lengths[1]], atol=1e-3)


# --------------------------------------------------------------------------------------------
# Key/value cache consistency
# --------------------------------------------------------------------------------------------
def test_mha_kv_cache_step_by_step_matches_full():
    mha = _mha(3)
    x = torch.randn(2, T, D_MODEL, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = mha(x, causal=True)
        cache: dict = {}
        for t in range(T):
            step = mha(x[:, t : t + 1], causal=True, cache=cache)
            assert step.shape == (2, 1, D_MODEL)
            assert cache["k"].shape == (2, N_HEADS, t + 1, D_MODEL // N_HEADS)
            torch.testing.assert_close(step[:, 0], full[:, t], atol=ATOL, rtol=0)


def test_mha_kv_cache_in_chunks_matches_full():
    """A prompt of several tokens, then single tokens, then a chunk: the causal offset must line up."""
    mha = _mha(4)
    x = torch.randn(2, T, D_MODEL, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = mha(x, causal=True)
        cache: dict = {}
        outs = [mha(x[:, a:b], causal=True, cache=cache) for a, b in [(0, 5), (5, 6), (6, 7), (7, T)]]
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=ATOL, rtol=0)


def test_stack_kv_cache_step_by_step_matches_full():
    torch.manual_seed(5)
    n_layers = 2
    stack = TransformerStack(n_layers, causal=True, d_model=D_MODEL, n_heads=N_HEADS, d_ff=D_FF,
                             norm_first=True).eval()
    assert stack.final_norm is not None
    x = torch.randn(2, T, D_MODEL, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        full = stack(x)
        cache = [{} for _ in range(n_layers)]
        for t in range(T):
            step = stack(x[:, t : t + 1], cache=cache)
            torch.testing.assert_close(step[:, 0], full[:, t], atol=ATOL, rtol=0)
    for layer_cache in cache:
        assert layer_cache["self"]["k"].shape[2] == T
    # Causality: the full output at position t does not depend on later inputs.
    x2 = x.clone()
    x2[:, 6:] += torch.randn(2, T - 6, D_MODEL, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        full2 = stack(x2)
    torch.testing.assert_close(full2[:, :6], full[:, :6], atol=ATOL, rtol=0)
    assert not torch.allclose(full2[:, 6:], full[:, 6:], atol=1e-3)


# --- one stacked Q/K/V projection ---------------------------------------------------------------------------
def _separate_projections(mha: MultiHeadAttention) -> list[torch.nn.Linear]:
    """Three nn.Linear holding W^Q, W^K and W^V as the stacked matrix holds them."""
    d = mha.d_model
    layers = []
    for i in range(3):
        layer = torch.nn.Linear(d, d)
        layer.weight.data.copy_(mha.qkv_proj.weight[i * d:(i + 1) * d])
        layer.bias.data.copy_(mha.qkv_proj.bias[i * d:(i + 1) * d])
        layers.append(layer)
    return layers


@pytest.mark.parametrize("cross", [False, True])
def test_stacked_qkv_equals_three_separate_projections(cross):
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4).eval()
    x, context = torch.randn(2, 9, 32), torch.randn(2, 13, 32)
    mask = torch.ones(2, 1, 1, 13 if cross else 9, dtype=torch.bool)
    mask[1, ..., -4:] = False  # padding in the second row
    q_proj, k_proj, v_proj = _separate_projections(mha)
    source = context if cross else x
    q, k, v = (mha.split_heads(p(s)) for p, s in ((q_proj, x), (k_proj, source), (v_proj, source)))
    out, _ = attention_reference(q, k, v, mask)
    expected = mha.out_proj(out.transpose(1, 2).reshape(2, 9, 32))
    assert torch.allclose(mha(x, context if cross else None, mask=mask), expected, atol=1e-6, rtol=0)


def test_checkpoints_with_separate_qkv_still_load():
    """State dicts written before the stacked projection (q_proj, k_proj, v_proj) load into today's model,
    through load_state_dict (bertlite.load, Lightning's resume, fine-tuning's load_encoder) unchanged."""
    from bertlite.models import BertForMaskedLM
    from bertlite.nn.attention import fuse_qkv, split_qkv

    torch.manual_seed(0)
    config = preset("bert-tiny", d_model=32, n_heads=2, d_ff=64, n_layers=2, vocab_size=50, max_seq_len=16,
                    dropout=0.0, attention_dropout=0.0)
    model = BertForMaskedLM(config).eval()
    old = split_qkv(model.state_dict())
    assert "bert.encoder.layers.0.self_attn.q_proj.weight" in old and not any("qkv_proj" in k for k in old)
    assert fuse_qkv(old).keys() == model.state_dict().keys()
    fresh = BertForMaskedLM(config).eval()
    fresh.load_state_dict(old)  # strict: every key accounted for
    ids = torch.randint(5, 50, (2, 12))
    assert torch.equal(fresh(ids).logits, model(ids).logits)
