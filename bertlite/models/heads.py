"""Pooling a sequence of hidden states into one vector, and the classification heads on top of it."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bertlite.nn.feedforward import ACTIVATIONS

POOLINGS = ("cls", "mean", "last")


def pool(hidden: Tensor, attention_mask: Tensor | None, how: str) -> Tensor:
    """hidden (B, T, C) -> (B, C).

    cls: the first position ([CLS], as BERT); mean: the average over real tokens;
    last: the last real token (a causal decoder's only position that has seen the whole text).
    """
    if how == "cls":
        return hidden[:, 0]
    if attention_mask is None:
        attention_mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
    if how == "mean":
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    if how == "last":
        last = attention_mask.sum(1).clamp(min=1) - 1  # (B,) index of the last real token
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    raise ValueError(f"unknown pooling {how!r}; choose one of {', '.join(POOLINGS)}")


class Pooler(nn.Module):
    """BERT's pooler: the [CLS] hidden state through a dense layer and tanh (what HF calls ``pooler_output``)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, T, C) -> (B, C)


class ClassificationHead(nn.Module):
    """BERT's pooler (dense + tanh), dropout, then a linear layer to the labels."""

    def __init__(self, d_model: int, num_labels: int, dropout: float = 0.1, bias: bool = True):
        super().__init__()
        self.dense = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(d_model, num_labels)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.classifier(self.dropout(torch.tanh(self.dense(pooled))))  # (B, C) -> (B, num_labels)


class TokenClassificationHead(nn.Module):
    """Dropout, then a linear layer from each position's hidden state to the tags (BERT's token-level head)."""

    def __init__(self, d_model: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(d_model, num_labels)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.classifier(self.dropout(hidden))  # (B, T, C) -> (B, T, num_labels)


class TransformClassificationHead(nn.Module):
    """ModernBERT's classifier: the MLM head's transform (dense, activation, LayerNorm), dropout, then a linear layer
    to the labels. The same module classifies a pooled vector (B, C) or every position (B, T, C)."""

    def __init__(self, d_model: int, num_labels: int, activation: str = "gelu", layer_norm_eps: float = 1e-5,
                 bias: bool = True, dropout: float = 0.1):
        super().__init__()
        self.dense = nn.Linear(d_model, d_model, bias=bias)
        self.act = ACTIVATIONS[activation]
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(d_model, num_labels)  # biased even in a bias-free model, as ModernBERT's

    def forward(self, hidden: Tensor) -> Tensor:
        return self.classifier(self.dropout(self.norm(self.act(self.dense(hidden)))))  # (..., C) -> (..., num_labels)
