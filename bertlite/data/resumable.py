"""A training DataLoader that knows its position in the data, so a run resumed mid-epoch neither repeats
nor skips a batch.

Lightning 2.6 saves the ``state_dict()`` of every training loader that has one (``FitLoop.on_save_checkpoint``,
key ``loops.fit_loop.state_dict.combined_loader``) and calls ``load_state_dict()`` on resume, before it
creates the iterator. It does not fast-forward plain loaders: without this, a resumed epoch starts again
from its first batch.

The position is counted in *samples of the epoch's permutation* consumed by all ranks together, so a
resume with another number of devices or another batch size still sees every remaining sample once.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from bertlite.data.streaming import block_key

log = logging.getLogger(__name__)


class KeyedRows(Dataset):
    """A map-style data set read with ``(epoch, index)`` keys (from ``ResumableSampler(keyed=True)``): each row
    carries ``mask_seed``, the name of that block in that epoch, which its random masks are drawn from."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> dict:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[dict]:
        rows = [self.dataset[i] for _, i in keys]
        return [{**row, "mask_seed": block_key(self.seed, epoch, i)} for row, (epoch, i) in zip(rows, keys)]


class ResumableSampler(DistributedSampler):
    """One permutation per epoch (seeded by ``seed + epoch``, independent of the global RNG), split across
    ranks as ``DistributedSampler`` splits it; ``offset`` samples at the start of the permutation are
    skipped once, on the next pass. A ``DistributedSampler`` subclass, so Lightning does not wrap it again.
    With ``keyed=True`` it yields ``(epoch, index)`` for ``KeyedRows``."""

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, keyed: bool = False):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=True)
        self.offset = 0  # samples of offset_epoch's permutation consumed before a resume
        self.offset_epoch = 0
        self.keyed = keyed

    def permutation(self) -> list[int]:
        n = len(self.dataset)  # type: ignore[arg-type]
        if not self.shuffle:
            return list(range(n))
        return torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()

    def __iter__(self) -> Iterator[int]:
        # a generator: the permutation is drawn at the first batch, after Lightning's set_epoch()
        rest = self.permutation()[self.offset if self.epoch == self.offset_epoch else 0:]
        self.offset = 0
        per_rank = len(rest) // self.num_replicas
        mine = rest[self.rank:per_rank * self.num_replicas:self.num_replicas]
        yield from ((self.epoch, i) for i in mine) if self.keyed else mine

    # __len__ stays the full epoch's share (DistributedSampler's): Lightning counts a resumed epoch's batches
    # from the restored batch index, so the epoch still ends after len(loader) batches in all.


class ResumableDataLoader(DataLoader):
    """Counts the batches it has handed out in the current epoch and saves that, with the epoch, in
    ``state_dict()``. Needs a ``ResumableSampler`` and ``drop_last=True`` (so each batch is ``batch_size``
    samples on every rank). Exact with workers too when the masks are keyed by block (``KeyedRows``).

    Resumed with another batch size or number of ranks (``global_batch_size`` on another number of devices),
    the remaining samples make another number of batches than Lightning's restored batch count assumes, and it
    would end the epoch early (or late). ``on_resize(batches_done)`` is then told how many batches of the new
    size the epoch has already had, so the caller can set Lightning's progress in those units."""

    def __init__(self, dataset: Dataset, batch_size: int, sampler: ResumableSampler,
                 on_resize: Callable[[int], None] | None = None, **kwargs: Any):
        if not isinstance(sampler, ResumableSampler):
            raise TypeError("ResumableDataLoader needs a ResumableSampler")
        kwargs.setdefault("generator", torch.Generator().manual_seed(sampler.seed))  # leave the global RNG alone
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, **kwargs)
        self.batches_done = 0      # batches handed out in the current pass, on this rank
        self._start = 0            # samples of the epoch consumed before this pass began (a resumed epoch)
        self._resume_from = 0      # the start of the next pass, set by load_state_dict
        self._pass_epoch = sampler.epoch
        self.on_resize = on_resize

    def __iter__(self) -> Iterator[Any]:
        sampler: ResumableSampler = self.sampler
        resumed = self._resume_from and sampler.epoch == sampler.offset_epoch
        self.batches_done = 0
        self._start = self._resume_from if resumed else 0
        self._resume_from = 0
        self._pass_epoch = sampler.epoch
        for batch in super().__iter__():
            self.batches_done += 1
            yield batch

    def samples_done(self) -> int:
        """Samples of this epoch's permutation consumed by all ranks together."""
        if self.sampler.epoch != self._pass_epoch:  # set_epoch() for the next epoch, which has not begun
            return 0
        return self._start + self.batches_done * self.batch_size * self.sampler.num_replicas

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.sampler.epoch, "samples_done": self.samples_done(), "seed": self.sampler.seed,
                "shuffle": self.sampler.shuffle, "dataset_size": len(self.dataset),
                "batch_samples": self.batch_size * self.sampler.num_replicas}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sampler: ResumableSampler = self.sampler
        if state.get("dataset_size") != len(self.dataset) or state.get("seed") != sampler.seed:
            log.warning("The checkpoint's data position is for another data set or seed (%s blocks, seed %s; now "
                        "%d, %d): the resumed epoch starts from its beginning", state.get("dataset_size"),
                        state.get("seed"), len(self.dataset), sampler.seed)
            return
        sampler.set_epoch(state["epoch"])
        sampler.offset = state["samples_done"]
        sampler.offset_epoch = state["epoch"]
        self._resume_from = state["samples_done"]
        # a checkpoint taken before the first resumed batch reports the same position
        self.batches_done = 0
        self._start = state["samples_done"]
        self._pass_epoch = state["epoch"]
        step = self.batch_size * sampler.num_replicas
        if state.get("batch_samples", step) != step and self.on_resize is not None:
            remaining = (len(self.dataset) - state["samples_done"]) // sampler.num_replicas // self.batch_size
            log.info("Resuming with %d samples per batch over all ranks instead of %d: %d of the epoch's %d batches "
                     "remain", step, state["batch_samples"], remaining, len(self))
            self.on_resize(len(self) - remaining)
