"""AdamW with decoupled weight decay on matrices only, and warm-up then linear or cosine decay."""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weight matrices and embeddings decay; biases and LayerNorm parameters (1-D) do not."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"name": "decay", "params": decay, "weight_decay": weight_decay},
            {"name": "no_decay", "params": no_decay, "weight_decay": 0.0}]


def build_adamw(groups: Iterable[dict], lr: float, betas=(0.9, 0.999), eps: float = 1e-8) -> torch.optim.AdamW:
    """PyTorch picks the multi-tensor (foreach) kernel on GPU. The fused kernel is not used: Lightning
    refuses gradient clipping with it under mixed precision."""
    return torch.optim.AdamW(list(groups), lr=lr, betas=tuple(betas), eps=eps)


SCHEDULES = ("linear", "cosine", "constant")


def warmup_decay(step: int, warmup_steps: int, total_steps: int, schedule: str = "linear",
                 min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate at ``step``: linear warm-up, then linear/cosine decay or constant."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "linear":
        decay = 1.0 - progress
    else:  # cosine
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay
