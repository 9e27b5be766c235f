"""Local (sliding-window) attention: the band against its formula and transformers' convention, the fused path
against the reference path, keys outside the window, the padding-free path, cached decoding, and FlexAttention."""

from __future__ import annotations

import warnings

import pytest
import torch

from bertlite.nn import local_attention
from bertlite.nn.attention import MultiHeadAttention, attention_fused
from bertlite.nn.local_attention import attention_chunked, attention_chunked_padded, local_window_mask, with_window
from bertlite.nn.packing import PackedSequences

D_MODEL, N_HEADS, T = 32, 4, 16
LENGTHS = [16, 5, 11, 3]


def _attention(window: int | None, rope_theta: float | None = None, n_heads: int = N_HEADS) -> MultiHeadAttention:
    torch.manual_seed(0)
    return MultiHeadAttention(D_MODEL, n_heads, rope_theta=rope_theta, window=window).eval()


def _padded_batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """x (4, T, C) and its key mask (4, 1, 1, T): right-padded sentences of LENGTHS tokens."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(T)[None, :] < torch.tensor(LENGTHS)[:, None]  # (B, T)
    return torch.randn(len(LENGTHS), T, D_MODEL, generator=g), mask


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("window", [1, 4, 5, 128])
@pytest.mark.parametrize("t_q,t_k", [(9, 9), (3, 9), (1, 7)])
def test_band_mask_follows_the_formula(window, causal, t_q, t_k):
    band = local_window_mask(t_q, t_k, window, causal)
    for i in range(t_q):
        p = i + t_k - t_q  # the query's absolute position: the newest t_q of t_k
        for j in range(t_k):
            expected = (p - window < j <= p) if causal else abs(p - j) <= window // 2
            assert band[i, j].item() == expected, (i, j)


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_band_matches_transformers_sliding_window_masks(causal):
    """ModernBERT's local_attention=w is transformers' bidirectional sliding_window w // 2; a causal window w is
    its causal sliding_window w (Mistral)."""
    masking = pytest.importorskip("transformers.masking_utils")
    window, t = 6, 12
    mask_function = (masking.sliding_window_causal_mask_function(window) if causal
                     else masking.sliding_window_bidirectional_mask_function(window // 2))
    q_idx, kv_idx = torch.arange(t)[:, None], torch.arange(t)[None, :]
    reference = torch.tensor([[bool(mask_function(0, 0, q_idx[i, 0], kv_idx[0, j])) for j in range(t)]
                              for i in range(t)])
    assert torch.equal(local_window_mask(t, t, window, causal), reference)


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_fused_path_matches_the_reference_path(causal):
    module = _attention(window=5)
    x, mask = _padded_batch()
    with torch.no_grad():
        fused = module(x, mask=mask[:, None, None, :], causal=causal)
        module.record_weights = True
        reference = module(x, mask=mask[:, None, None, :], causal=causal)
    torch.testing.assert_close(fused, reference, atol=1e-6, rtol=0)
    assert torch.isfinite(reference).all()  # a padding query far from every real token still has keys: no NaN
    weights = module.attention_weights  # (B, h, T, T)
    real_queries = weights[0]  # the first sentence fills the row: no padding query
    outside = ~local_window_mask(T, T, 5, causal)
    assert torch.all(real_queries[:, outside] == 0) and torch.all(real_queries[:, ~outside] > 0)


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_a_key_outside_the_window_has_no_influence(causal):
    """Window 4: query 3 sees keys 1..5 (bidirectional) or 0..3 (causal). Changing token 10 leaves it unchanged;
    changing a token inside its window does not."""
    module = _attention(window=4, rope_theta=10000.0)
    x, _ = _padded_batch()
    far, near = x.clone(), x.clone()
    far[:, 10] += 1.0
    near[:, 2] += 1.0
    with torch.no_grad():
        out, out_far, out_near = (module(v, causal=causal) for v in (x, far, near))
    assert torch.equal(out_far[:, 3], out[:, 3])
    assert not torch.allclose(out_near[:, 3], out[:, 3], atol=1e-4)
    assert not torch.allclose(out_far[:, 10], out[:, 10], atol=1e-4)


@pytest.mark.parametrize("nested", [False, True], ids=["repadded-attention", "nested-tensors"])
def test_padding_free_path_matches_the_padded_path(nested):
    module = _attention(window=5, rope_theta=10000.0)
    x, mask = _padded_batch()
    packed = PackedSequences.from_mask(mask.long(), nested=nested)
    with torch.no_grad():
        padded = packed.pack(module(x, mask=mask[:, None, None, :]))
        unpadded = module(packed.pack(x), mask=packed)
    torch.testing.assert_close(unpadded, padded, atol=1e-5, rtol=0)


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_a_window_as_long_as_the_sequence_is_global_attention(causal):
    x, mask = _padded_batch()
    window = 2 * T if not causal else T
    with torch.no_grad():
        local = _attention(window=window)(x, mask=mask[:, None, None, :], causal=causal)
        global_ = _attention(window=None)(x, mask=mask[:, None, None, :], causal=causal)
    torch.testing.assert_close(local, global_, atol=1e-6, rtol=0)


def test_cached_decoding_matches_full_recomputation_for_a_causal_local_layer():
    """Each cached step's query sits at its absolute position and sees only the window's newest keys."""
    module = _attention(window=4, rope_theta=10000.0)
    x, _ = _padded_batch()
    with torch.no_grad():
        full = module(x, causal=True)
        cache: dict = {}
        steps = [module(x[:, :6], causal=True, cache=cache)]  # the prompt, then one token at a time
        steps += [module(x[:, t:t + 1], causal=True, cache=cache) for t in range(6, T)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    assert not torch.allclose(full, _attention(window=None, rope_theta=10000.0)(x, causal=True), atol=1e-3)


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("window,chunk,t", [(5, 4, 23), (8, 16, 64), (1, 3, 10)])
def test_chunked_attention_matches_the_band_mask(window, chunk, t, causal):
    """Chunks of queries against the slabs of keys they reach give the band mask's output at every real query,
    also where T is no multiple of the chunk."""
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(3, 2, t, 8, generator=g) for _ in range(3))
    real = torch.arange(t)[None, :] < torch.tensor([t, t // 2, 2])[:, None]  # (B, T)
    for key_mask in (real[:, None, None, :], None, torch.ones_like(real)[:, None, None, :]):
        band = local_window_mask(t, t, window, causal) if key_mask is None else with_window(key_mask, t, t, window,
                                                                                              causal)
        expected = attention_fused(q, k, v, band).transpose(1, 2)  # (B, T, h, d)
        got = attention_chunked_padded(q, k, v, key_mask, window, causal, attention_fused, chunk).transpose(1, 2)
        assert torch.isfinite(got).all()
        at = real if key_mask is not None else torch.ones_like(real)
        torch.testing.assert_close(got[at], expected[at], atol=1e-6, rtol=0)


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_long_sequences_take_the_chunked_path_and_match_the_reference(causal, monkeypatch):
    """At 64 tokens with window 8 a layer attends chunk by chunk, padded and padding-free; its output at the real
    tokens is the reference path's, and its gradients too."""
    module = _attention(window=8, rope_theta=10000.0)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 64, D_MODEL, generator=g, requires_grad=True)
    real = torch.arange(64)[None, :] < torch.tensor([64, 37])[:, None]
    packed = PackedSequences.from_mask(real.long())
    calls = []
    monkeypatch.setattr("bertlite.nn.attention.attention_chunked",
                        lambda *a: calls.append("packed") or attention_chunked(*a))
    monkeypatch.setattr("bertlite.nn.attention.attention_chunked_padded",
                        lambda *a: calls.append("padded") or attention_chunked_padded(*a))
    fused = module(x, mask=real[:, None, None, :], causal=causal)
    (grad_fused,) = torch.autograd.grad(fused[real].sum(), x)
    module.record_weights = True
    reference = module(x, mask=real[:, None, None, :], causal=causal)
    (grad_reference,) = torch.autograd.grad(reference[real].sum(), x)
    torch.testing.assert_close(fused[real], reference[real], atol=1e-6, rtol=0)
    torch.testing.assert_close(grad_fused, grad_reference, atol=1e-5, rtol=0)
    if not causal:  # the padding-free path is the encoder's
        module.record_weights = False
        torch.testing.assert_close(module(packed.pack(x), mask=packed), reference[real], atol=1e-5, rtol=0)
    assert calls == (["padded"] if causal else ["padded", "packed"])


def test_batches_without_padding_build_the_chunked_mask_once(monkeypatch):
    """Every local layer of every batch of one shape without padding uses the same mask, built at the first."""
    local_attention._cached_row_bias.cache_clear()
    builds = []
    row_band = local_attention.row_band
    monkeypatch.setattr(local_attention, "row_band", lambda *a: builds.append(a) or row_band(*a))
    q, k, v = (torch.randn(2, 2, 40, 8) for _ in range(3))
    full = torch.ones(2, 1, 1, 40, dtype=torch.bool)
    first = attention_chunked_padded(q, k, v, full, 8, False, attention_fused, 8)
    again = attention_chunked_padded(q, k, v, None, 8, False, attention_fused, 8)
    assert len(builds) == 1 and torch.equal(first, again)


def test_a_chunked_mask_first_built_under_inference_mode_serves_training():
    """The kept mask is an ordinary tensor: made under torch.inference_mode, it still takes part in a backward."""
    local_attention._cached_row_bias.cache_clear()
    module = _attention(window=8)
    x = torch.randn(2, 64, D_MODEL, requires_grad=True)
    with torch.inference_mode():
        expected = module(x)
    out = module(x)
    out.sum().backward()
    torch.testing.assert_close(out.detach(), expected, atol=0, rtol=0)
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_a_window_below_one_is_refused():
    with pytest.raises(ValueError, match="window=0"):
        MultiHeadAttention(D_MODEL, N_HEADS, window=0)


def _flex_against_band(device: str, monkeypatch, atol: float) -> None:
    """Local attention through FlexAttention on ``device`` equals the band-mask path on a CPU: padded
    (bidirectional and causal, with padding) and padding-free, and builds no (T, T) band. Heads of 16, the CUDA
    kernel's least."""
    module = _attention(window=5, rope_theta=10000.0, n_heads=2)
    x, mask = _padded_batch()
    packed = PackedSequences.from_mask(mask.long(), nested=False)
    with torch.no_grad():
        expected = [module(x, mask=mask[:, None, None, :], causal=c) for c in (False, True)]
        expected.append(module(packed.pack(x), mask=packed))
        monkeypatch.setattr(local_attention, "FLEX_DEVICES", (device,))
        padded_calls = []
        monkeypatch.setattr("bertlite.nn.attention.attention_flex",
                            lambda *a: padded_calls.append(1) or local_attention.attention_flex(*a))
        monkeypatch.setattr(local_attention, "local_window_mask", lambda *a: pytest.fail("a (T, T) band was built"))
        module.to(device)
        x, mask = x.to(device), mask.to(device)
        packed = PackedSequences.from_mask(mask.long())
        got = [module(x, mask=mask[:, None, None, :], causal=c) for c in (False, True)]
        got.append(module(packed.pack(x), mask=packed))
    assert len(padded_calls) == 2 and ("local", 5) in packed.block_masks  # both paths through block masks
    for g, e in zip(got, expected):
        torch.testing.assert_close(g.cpu(), e, atol=atol, rtol=0)


def test_flex_attention_matches_the_band_mask_on_a_cpu(monkeypatch):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        _flex_against_band("cpu", monkeypatch, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_flex_attention_on_cuda_matches_the_band_mask_on_a_cpu(monkeypatch):
    _flex_against_band("cuda", monkeypatch, atol=1e-4)
