"""Padding-free batches: only the real tokens of a padded batch go through the layers.

A padded batch (B, T) of sentences of lengths L_1 .. L_B holds N = sum(L_i) real tokens and B*T - N padding.
The linear layers, the feed-forward network and LayerNorm treat every position alike, so they can run on the
N real tokens packed one after another, (N, C), instead of on (B, T, C). Only attention needs to know where
each sentence starts and ends: the cumulative lengths ``offsets`` = [0, L_1, L_1+L_2, .., N].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class PackedSequences:
    """Where the real tokens of a padded (B, T) batch sit, and how to move between the two layouts."""

    index: Tensor  # (N,) positions of the real tokens in the flattened (B*T) batch, sentence after sentence
    offsets: Tensor  # (B+1,) sentence i is rows offsets[i]:offsets[i+1] of a packed (N, ...) tensor
    key_mask: Tensor  # (B, 1, 1, T) boolean: True at real tokens (for attention over the re-padded batch)
    max_len: int  # the longest sentence
    nested: bool  # attention through nested tensors (a variable-length kernel) rather than re-padding
    # what the batch's layers share and build once, e.g. local attention's block mask, keyed by what it is
    block_masks: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_mask(cls, attention_mask: Tensor, nested: bool | None = None) -> PackedSequences:
        """attention_mask (B, T), 1 = token, 0 = padding. nested=None: nested tensors on CUDA only, where SDPA
        has a variable-length kernel; on a CPU SDPA loops over the sentences of a nested tensor, and attention
        over the re-padded batch is faster (32 sentences of 5-60 tokens, 4 heads: 7 ms against 48 ms)."""
        mask = attention_mask.bool()
        lengths = mask.sum(1)  # (B,)
        offsets = torch.zeros(mask.size(0) + 1, dtype=torch.long, device=mask.device)
        offsets[1:] = lengths.cumsum(0)
        nested = mask.is_cuda if nested is None else nested
        return cls(mask.flatten().nonzero().squeeze(1), offsets, mask[:, None, None, :], int(lengths.max()), nested)

    @property
    def batch_shape(self) -> tuple[int, int]:
        return self.key_mask.size(0), self.key_mask.size(-1)  # (B, T)

    def positions(self) -> Tensor:
        """(N,) each real token's column in the padded (B, T) batch: with right padding, each sentence counts from
        0 again. The padded path's positions, so that rotary positions agree on both paths (and with HF's unpadding
        of position_ids)."""
        return self.index % self.batch_shape[1]

    def pack(self, x: Tensor) -> Tensor:
        """(B, T, ...) -> (N, ...): the real tokens only."""
        return x.flatten(0, 1).index_select(0, self.index)

    def pad(self, x: Tensor) -> Tensor:
        """(N, ...) -> (B, T, ...), zeros at the padding."""
        b, t = self.batch_shape
        out = x.new_zeros((b * t, *x.shape[1:])).index_copy(0, self.index, x)
        return out.view(b, t, *x.shape[1:])
