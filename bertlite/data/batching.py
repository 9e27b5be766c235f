"""Batches of labelled rows: padding to the longest row, a seeded sampler that can group rows of similar length,
an evaluation sampler, and a loader that resumes mid-epoch. Shared by the classification data modules and
inference."""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Sampler


def pad_batch(rows: list[dict], pad_id: int, multiple_of: int = 1) -> dict[str, torch.Tensor]:
    """Pad input_ids and token_type_ids to the longest row (rounded up to ``multiple_of``); attention_mask
    marks the real tokens."""
    length = max(len(r["input_ids"]) for r in rows)
    length = -(-length // multiple_of) * multiple_of
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    token_type_ids = torch.zeros((len(rows), length), dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        input_ids[i, :n] = torch.as_tensor(r["input_ids"])
        token_type_ids[i, :n] = torch.as_tensor(r["token_type_ids"])
        attention_mask[i, :n] = 1
    batch = {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}
    if "label" in rows[0]:  # class indices (long); numbers or multi-hot vectors (float)
        labels = torch.as_tensor([r["label"] for r in rows])
        batch["labels"] = labels.float() if labels.is_floating_point() else labels.long()
    return batch


class LengthGroupedSampler(Sampler[int]):
    """One seeded permutation per epoch (``seed + epoch``; Lightning calls ``set_epoch``). With ``group``:
    sorted by length inside windows of ``batch_size * window`` rows, cut into batches, the batches shuffled
    and the longest batch first (as HF's group_by_length): random order across training, similar lengths
    within a batch, and a batch too big for the device fails at step one, not hours in."""

    def __init__(self, lengths: Sequence[int], batch_size: int, window: int = 50, seed: int = 0, group: bool = True):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.window = window
        self.seed = seed
        self.group = group
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        if not self.group:
            yield from order
            return
        size = self.batch_size * self.window
        batches = []
        for start in range(0, len(order), size):
            chunk = sorted(order[start:start + size], key=lambda i: -self.lengths[i])
            batches += [chunk[k:k + self.batch_size] for k in range(0, len(chunk), self.batch_size)]
        batches = [batches[b] for b in torch.randperm(len(batches), generator=g).tolist()]
        longest = max(range(len(batches)), key=lambda b: max(self.lengths[i] for i in batches[b]))
        batches[0], batches[longest] = batches[longest], batches[0]
        for batch in batches:
            yield from batch


def spread_order(n: int) -> list[int]:
    """0 .. n-1 in an order of which every prefix spreads over the whole range: both ends, then the middle, then
    the quarter points, and so on (a van der Corput sequence on the closed interval, rounded to the n points).
    For 8: 0, 7, 4, 2, 5, 1, 3, 6."""
    if n <= 2:
        return list(range(n))
    levels = (n - 2).bit_length()  # 2**levels >= n - 1: every point of the range is reached
    grid = 1 << levels
    points = [0, grid] + [int(format(i, f"0{levels}b")[::-1], 2) for i in range(1, grid)]  # bit-reversed: 1/2, 1/4..
    order = dict.fromkeys((2 * p * (n - 1) + grid) // (2 * grid) for p in points)  # p / grid * (n - 1), rounded
    return list(order)


class EvaluationSampler(DistributedSampler):
    """The order validation and test rows are scored in.

    - Each row once: under DDP each rank takes every ``num_replicas``-th row of the length-sorted set, a disjoint
      share (shares differ by one row at most; the metrics are sums over rows, so uneven shares are fine). Torch's
      ``DistributedSampler``, which Lightning puts on evaluation loaders, repeats rows to even the shares, and
      those are scored twice. A ``DistributedSampler`` subclass, so Lightning keeps it.
    - Little padding: a rank's rows, sorted by length, are cut into batches of ``batch_size``.
    - Any prefix is a fair sample: the batches come in ``spread_order``, so ``trainer.limit_val_batches``
      scores batches spread over the whole range of lengths, not the shortest rows. The last batch of a rank,
      its only short one, comes last, so that the loader's batches are the sampler's.
    A set with fewer rows than ranks gives the ranks left over one row each again: every rank must have a batch,
    or the others would wait for it forever when the metrics are gathered."""

    def __init__(self, lengths: Sequence[int], batch_size: int, num_replicas: int | None = None,
                 rank: int | None = None):
        distributed = dist.is_available() and dist.is_initialized()
        num_replicas = num_replicas if num_replicas is not None else dist.get_world_size() if distributed else 1
        rank = rank if rank is not None else dist.get_rank() if distributed else 0
        lengths = list(lengths)
        super().__init__(lengths, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        by_length = sorted(range(len(lengths)), key=lambda i: lengths[i])
        mine = by_length[rank::num_replicas] or by_length[rank % len(by_length):][:1]
        full, rest = divmod(len(mine), batch_size)
        batches = [mine[rest + b * batch_size:rest + (b + 1) * batch_size] for b in range(full)]
        if rest:  # the shortest rows: the only batch that is not full
            batches.append(mine[:rest])
        order = spread_order(full) + ([full] if rest else [])
        self.indices = [i for b in order for i in batches[b]]
        self.num_samples = len(self.indices)
        self.total_size = len(lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return self.num_samples


class ResumableBatches(DataLoader):
    """A DataLoader over a sampler whose order depends only on its epoch: it saves how many batches of the
    current epoch it has handed out (Lightning stores ``state_dict()`` in every checkpoint and hands it back
    on resume), and a resumed epoch skips that many, so no batch is repeated or skipped. Skipped batches are
    still collated (cheap for classification rows); in DDP each rank skips its own, so resume with the same
    number of devices."""

    _resume: tuple[int, int] | None = None  # (epoch, batches done), from load_state_dict
    _epoch, _done = 0, 0

    def __iter__(self):
        sampler = self.sampler if self.batch_sampler is None else self.batch_sampler.sampler
        self._epoch = getattr(sampler, "epoch", 0)
        self._done = 0
        batches = super().__iter__()
        if self._resume is not None and self._resume[0] == self._epoch:
            for _ in range(self._resume[1]):
                next(batches)
            self._done = self._resume[1]
        self._resume = None
        for batch in batches:
            self._done += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self._epoch, "batches_done": self._done}

    def load_state_dict(self, state: dict) -> None:
        self._resume = (state["epoch"], state["batches_done"])
