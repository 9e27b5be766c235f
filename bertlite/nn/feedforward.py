"""Position-wise feed-forward network, applied to each position alike.

    plain:  FFN(x) = W_2 act(W_1 x + b_1) + b_2
    gated:  FFN(x) = W_2 (act(W_in x) * (W_gate x))   (GLU variants, Shazeer 2020: GEGLU with GELU, SwiGLU with SiLU)

In the gated form ``up`` holds W_in and W_gate stacked, 2 d_ff rows, the first d_ff the activated half: the
layout of ModernBERT's ``Wi`` (``input, gate = Wi(x).chunk(2, dim=-1)``). d_ff is the width after the gate.
"""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

# F.gelu is the exact (erf) GELU, as transformers' "gelu" (GELUActivation)
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu, "relu": F.relu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "silu": F.silu,
}
GATED = {"geglu": "gelu", "swiglu": "silu"}  # a gated feed-forward -> the activation of its input half
FEED_FORWARD_ACTIVATIONS = (*ACTIVATIONS, *GATED)


def base_activation(activation: str) -> str:
    """The element-wise activation inside ``activation``: itself, or a gated one's input half (geglu -> gelu)."""
    return GATED.get(activation, activation)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu", dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if activation not in FEED_FORWARD_ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(FEED_FORWARD_ACTIVATIONS)}")
        self.gated = activation in GATED
        self.up = nn.Linear(d_model, 2 * d_ff if self.gated else d_ff, bias=bias)  # W_1 (or [W_in; W_gate])
        self.down = nn.Linear(d_ff, d_model, bias=bias)  # W_2: d_ff -> d_model
        self.act = ACTIVATIONS[base_activation(activation)]
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """x (..., d_model) -> (..., d_model)."""
        h = self.up(x)  # (..., d_ff), or (..., 2 d_ff) gated
        if self.gated:
            h, gate = h.chunk(2, dim=-1)  # 2 x (..., d_ff): the first half is activated, the second gates it
            return self.down(self.dropout(self.act(h) * gate))
        return self.down(self.dropout(self.act(h)))
