"""Positional information: the sinusoidal table, the two encodings, and TransformerEmbeddings."""

from __future__ import annotations

import math

import pytest
import torch

from bertlite.nn import (LearnedPositionalEmbedding, SinusoidalPositionalEncoding, TransformerEmbeddings,
                         sinusoidal_table)
from bertlite.nn.positional import positional_encoding


def _reference_table(max_len: int, d_model: int) -> torch.Tensor:
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(pos / 10000^(2i/d)), with plain Python."""
    rows = []
    for pos in range(max_len):
        row = []
        for j in range(d_model):
            two_i = j - (j % 2)  # the even index 2i shared by columns 2i and 2i+1
            angle = pos / (10000 ** (two_i / d_model))
            row.append(math.sin(angle) if j % 2 == 0 else math.cos(angle))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float32)


@pytest.mark.parametrize("max_len,d_model", [(16, 8), (16, 7), (5, 2), (32, 64)])
def test_sinusoidal_table_matches_formula(max_len, d_model):
    table = sinusoidal_table(max_len, d_model)
    assert table.shape == (max_len, d_model)
    assert table.dtype == torch.float32
    torch.testing.assert_close(table, _reference_table(max_len, d_model), atol=1e-5, rtol=0)


def test_sinusoidal_table_first_row():
    # pos 0: sin(0) = 0 on even columns, cos(0) = 1 on odd columns.
    row = sinusoidal_table(4, 6)[0]
    assert torch.equal(row, torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]))


def test_sinusoidal_encoding_has_no_parameters_and_no_saved_buffer():
    enc = SinusoidalPositionalEncoding(16, 8)
    assert list(enc.parameters()) == []
    assert "table" in dict(enc.named_buffers())
    assert len(enc.state_dict()) == 0
    positions = torch.tensor([0, 3, 15])
    torch.testing.assert_close(enc(positions), _reference_table(16, 8)[positions], atol=1e-5, rtol=0)


def test_learned_positional_embedding_is_trainable():
    torch.manual_seed(0)
    enc = LearnedPositionalEmbedding(16, 8)
    params = list(enc.parameters())
    assert len(params) == 1 and params[0].shape == (16, 8) and params[0].requires_grad
    assert "weight" in enc.state_dict()
    positions = torch.tensor([1, 2, 5])
    enc(positions).sum().backward()
    grad = params[0].grad
    assert torch.all(grad[positions] == 1.0)
    others = torch.ones(16, dtype=torch.bool)
    others[positions] = False
    assert torch.all(grad[others] == 0.0)


def test_positional_encoding_factory():
    assert isinstance(positional_encoding("sinusoidal", 8, 4), SinusoidalPositionalEncoding)
    assert isinstance(positional_encoding("learned", 8, 4), LearnedPositionalEmbedding)
    with pytest.raises(ValueError, match="rotary"):
        positional_encoding("rotary", 8, 4)


def _plain_embeddings(max_len: int = 16, d_model: int = 8, vocab: int = 20) -> TransformerEmbeddings:
    torch.manual_seed(0)
    return TransformerEmbeddings(vocab, d_model, max_len, position="sinusoidal", type_vocab_size=0, norm=False,
                                 dropout=0.0).eval()


def test_embeddings_are_token_plus_table_rows():
    emb = _plain_embeddings()
    ids = torch.tensor([[3, 1, 4, 1, 5], [9, 2, 6, 5, 0]])
    out = emb(ids)
    expected = emb.token.weight[ids] + _reference_table(16, 8)[:5]
    assert out.shape == (2, 5, 8)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    # The padding token's embedding row starts at zero, so a pad position holds only its position encoding.
    torch.testing.assert_close(out[1, 4], _reference_table(16, 8)[4], atol=1e-5, rtol=0)


def test_embeddings_start_offset_selects_later_rows():
    emb = _plain_embeddings()
    ids = torch.tensor([[7, 8, 9]])
    out = emb(ids, start=10)
    expected = emb.token.weight[ids] + _reference_table(16, 8)[10:13]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    # Equivalently: the matching slice of a full-length call.
    full_ids = torch.cat([torch.full((1, 10), 3), ids], dim=1)
    torch.testing.assert_close(out, emb(full_ids)[:, 10:], atol=1e-5, rtol=0)


def test_embeddings_reject_too_long_sequences():
    emb = _plain_embeddings(max_len=16)
    emb(torch.zeros(1, 16, dtype=torch.long))  # exactly max_len is fine
    emb(torch.zeros(1, 6, dtype=torch.long), start=10)
    with pytest.raises(ValueError, match="max_seq_len=16"):
        emb(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError):
        emb(torch.zeros(1, 7, dtype=torch.long), start=10)


def test_extending_an_offset_table_keeps_the_offset_rows_and_repeats_the_positions_only():
    from bertlite.nn.positional import extend_learned_positions

    table = torch.arange(6.0)[:, None]  # RoBERTa-style: rows 0 and 1 sit before the first position (offset 2)
    extended = extend_learned_positions(table, 10, offset=2)
    assert extended[:, 0].tolist() == [0, 1, 2, 3, 4, 5, 2, 3, 4, 5]
