"""Rotary position embeddings (Su et al., "RoFormer", 2021).

No position vectors are added to the embeddings. Instead, in self-attention, each head's query and key at
position m are rotated: dimension pair i turns by the angle m * theta^(-2i / d_k). The score of query m against
key n is then q^T R(n - m) k: it depends on the two tokens and on their distance only.

Pairs follow the GPT-NeoX / Hugging Face convention ("rotate_half", as transformers' Llama and ModernBERT): the
first and second halves of the head dimension are paired, element i with element i + d_k / 2.

    rotary(x) = x * cos(m w) + rotate_half(x) * sin(m w),   rotate_half([x1, x2]) = [-x2, x1]

Two paths compute the same function:
- ``apply_rotary_reference``: the formula above, with full-width tables, computed in float32.
- ``apply_rotary``: the fast path: half-width tables in the activations' dtype, the two halves rotated
  directly (no rotate_half copy), used by ``MultiHeadAttention``.
The tables are computed on the fly from the positions: no buffer, so no state-dict key and no table that a
``model.to(torch.bfloat16)`` would round.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rotary_angles(positions: Tensor, head_dim: int, theta: float) -> Tensor:
    """positions (...) integer -> angles (..., head_dim / 2) in float32: position m times w_i = theta^(-2i / d)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim  # (d/2,)
    inv_freq = 1.0 / (theta ** exponents)  # (d/2,): w_0 = 1 down to nearly 1 / theta
    return positions.to(torch.float32)[..., None] * inv_freq  # (..., 1) * (d/2,) -> (..., d/2)


def rotary_tables(positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos and sin of ``rotary_angles``, each (..., head_dim / 2): computed in float32, then cast to ``dtype``."""
    angles = rotary_angles(positions, head_dim, theta)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    """(..., d) -> (..., d): [x1, x2] -> [-x2, x1], x1 and x2 the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)  # 2 x (..., d/2)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary_reference(x: Tensor, positions: Tensor, theta: float) -> Tensor:
    """x (..., T, d) -> x rotated, the formula written out in float32. positions (T,), or broadcastable to x's
    leading dimensions without the last one (e.g. (N, 1) for x (N, h, d))."""
    angles = rotary_angles(positions, x.size(-1), theta)  # (..., d/2)
    angles = torch.cat([angles, angles], dim=-1)  # (..., d): element i and i + d/2 turn by the same angle
    rotated = x.float() * angles.cos() + rotate_half(x.float()) * angles.sin()
    return rotated.to(x.dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (..., d); cos, sin (..., d/2) from ``rotary_tables``, broadcastable to x's halves -> (..., d).

    The rotation of each pair (x1_i, x2_i) by its angle, written on the halves: [x1 cos - x2 sin, x2 cos + x1 sin].
    """
    x1, x2 = x.chunk(2, dim=-1)  # 2 x (..., d/2)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class RotaryEmbedding:
    """Rotates queries and keys for one attention layer. Holds no tensors: the tables are computed per call
    from the positions (a few small kernels, next to attention's matrix multiplies)."""

    def __init__(self, head_dim: int, theta: float = 10000.0):
        if head_dim % 2:
            raise ValueError(f"rotary positions need an even head dimension, got d_k={head_dim}")
        self.head_dim = head_dim
        self.theta = theta

    def __repr__(self) -> str:
        return f"RotaryEmbedding(head_dim={self.head_dim}, theta={self.theta})"

    def __call__(self, q: Tensor, k: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """q, k (..., T, d) with the positions (T,) of their tokens (or broadcastable, see
        ``apply_rotary_reference``) -> q and k rotated, in their dtype."""
        cos, sin = rotary_tables(positions, self.head_dim, self.theta, q.dtype)  # (..., d/2) each
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
