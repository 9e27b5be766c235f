"""Positional information.

Added to the token embeddings: fixed sinusoidal encodings (Vaswani et al., 3.5) or learned embeddings (BERT, GPT).
Or, instead of either, ALiBi (Press et al., 2022): no position vectors at all; each attention head subtracts
slope_h * |i - j| from the score of query i for key j, so from the first step a head prefers nearby tokens,
some heads sharply (large slopes), others barely (MosaicBERT uses it in an encoder).
Or rotary embeddings (RoPE, Su et al., 2021; ``bertlite.nn.rotary``): no position vectors either; self-attention
rotates each query and key by its position (ModernBERT, Llama).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_table(max_len: int, d_model: int) -> Tensor:
    """(max_len, d_model): PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(pos / 10000^(2i/d))."""
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (L, 1)
    inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq[: d_model // 2])
    return table


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed encodings: no parameters, a buffer that is not saved in checkpoints."""

    def __init__(self, max_len: int, d_model: int):
        super().__init__()
        self.register_buffer("table", sinusoidal_table(max_len, d_model), persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        return self.table[positions]


class LearnedPositionalEmbedding(nn.Embedding):
    """One trained vector per position, up to max_len."""

    def __init__(self, max_len: int, d_model: int):
        super().__init__(max_len, d_model)


def extend_learned_positions(table: Tensor, max_len: int, offset: int = 0) -> Tensor:
    """(L, C) trained position vectors -> (max_len, C), for a second phase at longer inputs (BERT trained 90% of
    its steps at 128 tokens, then 512). Rows < L are the trained ones, unchanged. The new rows start as copies of
    the trained rows, repeated (row i from row i mod L), as Longformer initialised its 4,096 positions from
    RoBERTa's 512 (Beltagy et al., 2020): attention then sees familiar vectors at once, and a random start
    converged much more slowly in their measurements. ``offset``: rows before the first position (RoBERTa keeps
    padding_idx + 1 of them), kept unchanged and left out of the repetition."""
    if offset:
        return torch.cat([table[:offset], extend_learned_positions(table[offset:], max_len - offset)])
    length = table.size(0)
    if max_len <= length:
        return table[:max_len].clone()
    return table.repeat(-(-max_len // length), 1)[:max_len].clone()  # (ceil(max_len / L) * L, C) -> (max_len, C)


def alibi_slopes(n_heads: int) -> Tensor:
    """(n_heads,): the geometric sequence 2^(-8/n), 2^(-16/n), ..., 2^(-8). When n is not a power of two:
    the slopes for the power of two below it, then every other slope of the next power of two (as the paper)."""

    def geometric(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]

    below = 2 ** int(math.floor(math.log2(n_heads)))
    return torch.tensor(geometric(below) + geometric(2 * below)[0::2][: n_heads - below])


def alibi_bias(slopes: Tensor, t_q: int, t_k: int) -> Tensor:
    """(h, T_q, T_k) additive score bias -slope_h * |i - j|. Query i sits at position i + (T_k - T_q), so the
    last query aligns with the last key, as in ``causal_mask``, and a cached prefix keeps its distances."""
    query_pos = torch.arange(t_k - t_q, t_k, device=slopes.device)  # (T_q,)
    key_pos = torch.arange(t_k, device=slopes.device)  # (T_k,)
    distance = (query_pos[:, None] - key_pos[None, :]).abs()  # (T_q, T_k)
    return -slopes[:, None, None] * distance  # (h, 1, 1) * (T_q, T_k) -> (h, T_q, T_k)


POSITIONS = ("learned", "sinusoidal", "alibi", "rope")


def positional_encoding(kind: str, max_len: int, d_model: int) -> nn.Module | None:
    """The module whose output is added to the token embeddings; None for ALiBi and rotary positions, which act in
    attention instead."""
    if kind == "sinusoidal":
        return SinusoidalPositionalEncoding(max_len, d_model)
    if kind == "learned":
        return LearnedPositionalEmbedding(max_len, d_model)
    if kind in ("alibi", "rope"):
        return None
    raise ValueError(f"unknown position encoding {kind!r}; choose one of {', '.join(POSITIONS)}")
