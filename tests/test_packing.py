"""Padding-free batches: the layers run on the real tokens alone and give what the padded path gives."""

from __future__ import annotations

import pytest
import torch

from bertlite.models import BertModel, preset
from bertlite.models.encoder import BertForSequenceClassification
from bertlite.nn import MultiHeadAttention
from bertlite.nn.attention import attention_fused, attention_varlen
from bertlite.nn.packing import PackedSequences

ATOL = 1e-5
B, T = 4, 16


def _batch(seed: int, left: bool = False, pairs: bool = True):
    """Random ids, lengths 3..T (one row full), sentence pairs as token types 0 then 1."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, T, (B,), generator=g)
    lengths[0] = T
    positions = torch.arange(T)[None, :]
    mask = (positions >= T - lengths[:, None]) if left else (positions < lengths[:, None])
    ids = torch.randint(5, 100, (B, T), generator=g).masked_fill(~mask, 0)
    types = ((positions >= lengths[:, None] // 2) & mask).long() if pairs else None
    return ids, mask.long(), types


def _model(position: str = "learned", **overrides) -> BertModel:
    torch.manual_seed(0)
    config = preset("bert-tiny", vocab_size=100, d_model=32, n_heads=4, d_ff=64, n_layers=2, max_seq_len=T,
                    dropout=0.0, attention_dropout=0.0, position=position, **overrides)
    return BertModel(config).eval()


def _both(model: BertModel, ids, mask, types, nested: bool | None = None):
    """Hidden states at the real tokens, (N, C): padded path, padding-free path."""
    model.config.unpad = False
    padded = model(ids, mask, types)
    packed = PackedSequences.from_mask(mask, nested=nested)
    x = model.embeddings(ids, types)
    unpadded = model.encoder(packed.pack(x), mask=packed)
    return packed.pack(padded), unpadded


@pytest.mark.parametrize("nested", [False, True], ids=["repadded-attention", "nested-tensors"])
@pytest.mark.parametrize("position", ["learned", "sinusoidal", "alibi"])
def test_padding_free_layers_match_the_padded_path(nested, position):
    ids, mask, types = _batch(0)
    padded, unpadded = _both(_model(position), ids, mask, types, nested)
    assert unpadded.shape == (int(mask.sum()), 32)
    torch.testing.assert_close(unpadded, padded, atol=ATOL, rtol=0)


def test_left_padding_and_no_token_types():
    ids, mask, _ = _batch(1, left=True, pairs=False)
    padded, unpadded = _both(_model(), ids, mask, None)
    torch.testing.assert_close(unpadded, padded, atol=ATOL, rtol=0)


@pytest.mark.parametrize("nested", [False, True], ids=["repadded-attention", "nested-tensors"])
def test_gradients_match_the_padded_path(nested):
    ids, mask, types = _batch(2)
    model = _model()
    grads = []
    for unpad in (False, True):
        model.zero_grad()
        if unpad:
            packed = PackedSequences.from_mask(mask, nested=nested)
            hidden = packed.pad(model.encoder(packed.pack(model.embeddings(ids, types)), mask=packed))
        else:
            model.config.unpad = False
            hidden = model(ids, mask, types)
        (hidden * mask[..., None]).square().sum().backward()  # a loss on the real tokens only
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-4, rtol=1e-4, msg=name)


def test_the_model_switches_on_padding_and_zeroes_the_padding_positions():
    ids, mask, types = _batch(3)
    model = _model()
    model.config.unpad = False
    padded = model(ids, mask, types)
    model.config.unpad = True
    unpadded = model(ids, mask, types)
    real = mask.bool()
    torch.testing.assert_close(unpadded[real], padded[real], atol=ATOL, rtol=0)
    assert (unpadded[~real] == 0).all() and (padded[~real] != 0).any()
    full = torch.ones_like(mask)  # no padding: the padded path, the same numbers
    model.config.unpad = False
    expected = model(ids, full, types)
    model.config.unpad = True
    assert torch.equal(model(ids, full, types), expected)


def test_classifier_logits_agree_with_and_without_unpadding():
    ids, mask, types = _batch(4)
    torch.manual_seed(0)
    config = preset("bert-tiny", vocab_size=100, d_model=32, n_heads=4, d_ff=64, n_layers=2, max_seq_len=T)
    model = BertForSequenceClassification(config, num_labels=3).eval()
    model.config.unpad = False
    padded = model(ids, mask, types)
    model.config.unpad = True
    torch.testing.assert_close(model(ids, mask, types), padded, atol=ATOL, rtol=0)


def test_attention_varlen_is_each_sentence_attending_to_itself():
    g = torch.Generator().manual_seed(5)
    lengths = [5, 1, 9]
    q, k, v = (torch.randn(sum(lengths), 2, 8, generator=g) for _ in range(3))  # (N, h, d_k)
    mask = torch.tensor([[1] * n + [0] * (9 - n) for n in lengths])
    out = attention_varlen(q, k, v, PackedSequences.from_mask(mask, nested=True))
    start = 0
    for n in lengths:
        one = [x[start:start + n].transpose(0, 1)[None] for x in (q, k, v)]  # (1, h, n, d_k)
        expected = attention_fused(*one)[0].transpose(0, 1)
        torch.testing.assert_close(out[start:start + n], expected, atol=ATOL, rtol=0)
        start += n


def test_recorded_attention_weights_have_the_padded_shape():
    ids, mask, types = _batch(6)
    model = _model()
    attention: MultiHeadAttention = model.encoder.layers[0].self_attn
    attention.record_weights = True
    model.config.unpad = True
    model(ids, mask, types)
    weights = attention.attention_weights
    assert weights.shape == (B, 4, T, T)
    assert torch.allclose(weights.sum(-1)[mask.bool()[:, None, :].expand(-1, 4, -1)], torch.tensor(1.0))
    assert (weights * (1 - mask)[:, None, None, :]).abs().max() == 0  # nothing attends to padding


def test_pack_and_pad_are_inverse():
    _, mask, _ = _batch(7)
    packed = PackedSequences.from_mask(mask)
    x = torch.randn(B, T, 3) * mask[..., None]
    assert torch.equal(packed.pad(packed.pack(x)), x)
    assert packed.offsets.tolist() == [0, *mask.sum(1).cumsum(0).tolist()]
    assert packed.max_len == T and not packed.nested  # nested tensors only on CUDA by default
