"""Streaming pretraining data: documents read on the fly from a ``datasets.IterableDataset`` (local shards or
a hub data set), tokenized and packed inside the DataLoader workers, with a resumable position.

Who reads what:
- **ranks**: ``datasets.distributed.split_dataset_by_node`` gives each rank whole shards when the shard count
  divides by the number of ranks. Otherwise every rank reads every shard and keeps every ``world_size``-th
  block of each (said in the log): each block is still trained once, but each rank tokenizes the whole corpus.
- **workers** of a rank take the rank's shards in turn (shard ``j`` goes to worker ``j % num_workers``).

Blocks are packed **per shard** as in the map-style path ([CLS] + ``max_seq_len - 1`` tokens of the running
stream, every document ending with [SEP]; a shard's last partial block is dropped), so a block is the same
whichever rank or worker reads its shard. Shard order is permuted every pass (seeded), and blocks are shuffled
within windows of ``shuffle_buffer`` blocks.

Exact resume without replay: each reader's position is the source's ``state_dict()`` at the start of the
current window, the tokens carried into it, and how many of the window's blocks were handed out. Resuming
re-reads one window (bounded work, wherever the run stopped), permutes it with the same seed and skips what
was already trained. ``StatefulDataLoader`` (torchdata) collects these positions from the workers.

Broken data: a shard that fails mid-read is skipped or stops the run as ``on_bad_shard`` says
(``bertlite/data/shards.py``). A stream with no block to train on is a
``DataError`` too (``check_yields_a_block`` before training, and at the end of a pass), never an endless loop.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Iterator

import datasets
import numpy as np
import torch
from datasets.distributed import split_dataset_by_node
from tokenizers import Tokenizer
from torch.utils.data import IterableDataset, get_worker_info
from torchdata.stateful_dataloader import StatefulDataLoader

from bertlite.data.shards import check_bad_shard_policy, describe_files, read_failure, shard_files
from bertlite.data.sources import is_json_file, refuse_null_rows
from bertlite.data.special_tokens import special_id
from bertlite.errors import BertliteError, ConfigError, DataError

log = logging.getLogger(__name__)


def block_key(seed: int, *parts: int) -> int:
    """A 63-bit number naming one block of one pass (its masks are drawn from a generator seeded with it)."""
    key = seed & 0x7FFFFFFFFFFFFFFF
    for part in parts:  # splitmix64-style mixing: distinct parts give unrelated keys
        key = (key ^ (part + 0x9E3779B97F4A7C15 + (key << 6) + (key >> 2))) & 0xFFFFFFFFFFFFFFFF
        key = ((key ^ (key >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return key & 0x7FFFFFFFFFFFFFFF


class StreamingBlocks(IterableDataset):
    """Rows ``{"input_ids": (max_seq_len,) ids, "mask_seed": key}`` from a stream of documents.

    ``holdout`` blocks at the start of shard 0 form the validation set (``validation_blocks``) and are never
    trained on. ``passes=None`` streams forever (the run ends at ``trainer.max_steps``), one pass after another.
    ``on_bad_shard``: "skip" or "error" (module docstring); ``skipped`` holds the shards already reported as
    unreadable, shared by the readers of one run so that each is reported once.
    """

    def __init__(self, documents: datasets.IterableDataset, tokenizer: Tokenizer, text_column: str = "text",
                 max_seq_len: int = 128, shuffle_buffer: int = 1000, seed: int = 0, rank: int = 0,
                 world_size: int = 1, holdout: int = 0, passes: int | None = None, docs_per_read: int = 256,
                 on_bad_shard: str = "skip", skipped: set[int] | None = None):
        check_bad_shard_policy(on_bad_shard)
        self.documents = documents
        self.tokenizer = tokenizer
        self.text_column = text_column
        self.max_seq_len = max_seq_len
        self.shuffle_buffer = max(1, shuffle_buffer)
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.holdout = holdout
        self.passes = passes
        self.docs_per_read = docs_per_read
        self.on_bad_shard = on_bad_shard
        self.skipped = skipped if skipped is not None else set()
        self.null_free: set[int] = set()  # JSON shards scanned for null rows (free_of_null_rows)
        files = shard_files(documents)
        self.files = files if len(files) == documents.num_shards else []
        self.cls_id = special_id(tokenizer, "cls", "packing pretraining blocks (each starts with it)")
        self.sep_id = special_id(tokenizer, "sep", "packing pretraining blocks (each document ends with it)")
        n = documents.num_shards
        self.by_shard = n % world_size == 0
        if self.by_shard:  # shards rank, rank + world_size, ... (the rule of split_dataset_by_node)
            self.source = split_dataset_by_node(documents, rank=rank, world_size=world_size)
        else:
            self.source = documents
            if rank == 0:
                log.warning("%d shards do not divide among %d ranks: every rank reads all shards and keeps 1 "
                            "block in %d of each, so each block is trained once but every rank tokenizes the whole "
                            "corpus. Write the corpus as a multiple of %d files to split it by shard.", n, world_size,
                            world_size, world_size)
        self.position: dict[str, Any] = {}  # this reader's resume point (load_state_dict)
        self._state: dict[str, Any] = {}    # where this reader is now (state_dict)

    # --- which shards this reader reads ------------------------------------------------------
    def global_shard(self, j: int) -> int:
        return self.rank + j * self.world_size if self.by_shard else j

    def shard_name(self, shard: int) -> str:
        return self.files[shard] if self.files else f"shard {shard} of {self.documents.num_shards}"

    def keeps(self, shard: int, block: int) -> bool:
        if shard == 0 and block < self.holdout:
            return False  # the validation blocks
        return self.by_shard or block % self.world_size == self.rank

    def shard_order(self, pass_: int, worker: int, workers: int) -> list[int]:
        """This worker's shards (indices into ``self.source``) for one pass, in a seeded order."""
        n = self.source.num_shards
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + pass_)).tolist()
        return order[worker::workers]

    # --- reading -----------------------------------------------------------------------------
    def shard_blocks(self, j: int, start: dict | None = None) -> Iterator[tuple[int, np.ndarray, dict]]:
        """Blocks of shard ``j`` in canonical order: (block index in the shard, ids, where its read began).

        Reads ``docs_per_read`` documents at a time. A read's position is the source's state before it, the
        tokens carried into it and the index of its first block: enough to start again at that read.
        """
        if not self.free_of_null_rows(self.global_shard(j)):
            return
        shard = self.source.shard(self.source.num_shards, j)
        if start and start.get("source") is not None:
            shard.load_state_dict(start["source"])
        carry = list(start["carry"]) if start else []
        block = start["block"] if start else 0
        chunk = self.max_seq_len - 1
        reads = shard.iter(batch_size=self.docs_per_read)
        source_state = start["source"] if start else None
        while True:
            try:
                docs = next(reads)[self.text_column]
            except StopIteration:
                return  # the shard's last partial block is dropped, as in the map-style path
            except Exception as exc:  # a truncated, mis-encoded or malformed file fails only when it is read
                self.bad_shard(self.global_shard(j), exc, block)
                return
            here = {"source": source_state, "carry": carry, "block": block}
            stream = list(carry)
            for enc in self.tokenizer.encode_batch([d for d in docs if d and d.strip()], add_special_tokens=False):
                stream.extend(enc.ids)
                stream.append(self.sep_id)
            n = len(stream) // chunk
            ids = np.empty((n, self.max_seq_len), dtype=np.int32)  # (n, T): compact while it waits in a window
            ids[:, 0] = self.cls_id
            ids[:, 1:] = np.asarray(stream[:n * chunk], dtype=np.int32).reshape(n, chunk)
            for k in range(n):
                yield block + k, ids[k], here
            block += n
            carry = stream[n * chunk:]
            source_state = shard.state_dict()

    def windows(self, j: int, start: dict | None) -> Iterator[tuple[dict, list[tuple[int, np.ndarray]]]]:
        """Shard ``j`` in windows of ``shuffle_buffer`` blocks: (where the window starts, its blocks). A window
        starts at block ``first`` of a read; ``start`` (such a position) resumes the shard at that window."""
        window: list[tuple[int, np.ndarray]] = []
        where: dict | None = None
        first = start["first"] if start else 0
        for index, ids, read in self.shard_blocks(j, start["read"] if start else None):
            if index < first:
                continue  # a resumed read's blocks before the window
            if where is None:
                where = {"read": read, "first": index}
            window.append((index, ids))
            if len(window) == self.shuffle_buffer:
                yield where, window
                window, where = [], None
        if window:
            yield where, window

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        pos = self.position.get(worker) or {}
        pass_ = pos.get("pass", 0)
        if worker == 0 and self.rank == 0 and self.source.num_shards % workers:
            log.warning("%d shards per rank do not divide among %d DataLoader workers: worker w reads shards w, "
                        "w + %d, ... so some read more than others%s", self.source.num_shards, workers, workers,
                        " and some none" if self.source.num_shards < workers else "")
        barren: set[int] = set()  # shards read whole that gave this reader nothing: all of them is an error
        while self.passes is None or pass_ < self.passes:
            shards = self.shard_order(pass_, worker, workers)
            if not shards:
                return  # more workers than shards: this one has nothing to read
            for shard_pos in range(pos.get("shard_pos", 0), len(shards)):
                j, resumed, given = shards[shard_pos], bool(pos), 0
                for row in self.shard_rows(pass_, shard_pos, j, pos):
                    given += 1
                    yield row
                if given:
                    barren.discard(j)
                elif not resumed:  # a resumed read starts mid-shard: its emptiness says nothing
                    barren.add(j)
                pos = {}
            if len(barren) == self.source.num_shards:  # another pass would spin forever, yielding nothing
                raise DataError(self.no_block_message())
            pass_ += 1

    def shard_rows(self, pass_: int, shard_pos: int, j: int, pos: dict) -> Iterator[dict[str, Any]]:
        """Shard ``j``'s training rows for one pass, window by window, from ``pos`` (a resumed position) or
        from its start; each row handed out updates the reader's position (``state_dict``)."""
        shard_id = self.global_shard(j)
        window_id, skip, start = pos.get("window", 0), pos.get("taken", 0), pos.get("start")
        for where, window in self.windows(j, start):
            order = torch.randperm(len(window), generator=torch.Generator().manual_seed(
                block_key(self.seed, pass_, shard_id, window_id))).tolist()
            for taken in range(skip, len(order)):
                index, ids = window[order[taken]]
                self._state = {"pass": pass_, "shard_pos": shard_pos, "start": where, "window": window_id,
                               "taken": taken + 1}
                if self.keeps(shard_id, index):
                    yield {"input_ids": torch.from_numpy(ids.astype(np.int64)),
                           "mask_seed": block_key(self.seed, pass_, shard_id, index)}
            skip, window_id = 0, window_id + 1

    # --- broken and empty data --------------------------------------------------------------------
    def free_of_null_rows(self, shard: int) -> bool:
        """A bare ``null`` row crashes Arrow's JSON reader outright (no exception to skip the shard on), so a JSON
        shard is scanned for one before its first read in this reader; a shard that has one is a bad shard."""
        if shard in self.null_free or not self.files:
            return True
        name = self.files[shard]
        if is_json_file(name):
            try:
                refuse_null_rows([name])
            except DataError as exc:
                self.bad_shard(shard, exc, 0)
                return False
        self.null_free.add(shard)
        return True

    def bad_shard(self, shard: int, exc: Exception, blocks_before: int) -> None:
        """Shard ``shard`` failed mid-read after ``blocks_before`` blocks: stop (on_bad_shard=error) or warn
        once and go on without the rest of it."""
        if self.on_bad_shard == "skip" and shard in self.skipped:
            return
        read_failure(exc, self.shard_name(shard), f"{blocks_before} blocks", self.on_bad_shard)
        self.skipped.add(shard)

    def check_yields_a_block(self) -> None:
        """A ``DataError`` unless this reader's shards hold a block it trains on. Reads until the first one
        (shard 0 last, as its first blocks are held out): an empty or too-short stream, or one whose every
        block is held out for validation, would otherwise keep the training loop waiting forever."""
        shards = sorted(range(self.source.num_shards), key=lambda j: self.global_shard(j) == 0)
        for j in shards:
            if any(self.keeps(self.global_shard(j), index) for index, _, _ in self.shard_blocks(j)):
                return
        raise DataError(self.no_block_message())

    def no_block_message(self) -> str:
        n = self.documents.num_shards
        files = describe_files(self.files) if self.files else f"the {n} shards of the stream"
        reader = f" for process {self.rank} of {self.world_size}" if self.world_size > 1 else ""
        held = (f" beyond the first {self.holdout} blocks of {self.shard_name(0)}, held out for validation "
                "(data.validation_blocks)" if self.holdout else "")
        skipped = f"; {len(self.skipped)} unreadable shard(s) skipped, see the warnings" if self.skipped else ""
        fixes = "more text or a smaller data.max_seq_len" + (
            ", a smaller data.validation_blocks or data.validation_files" if self.holdout else "") + (
            ", more shard files or fewer processes" if self.world_size > 1 else "")
        return (f"the training stream holds no full block of {self.max_seq_len} tokens (data.max_seq_len) to "
                f"train on{reader}{held}: {files}{skipped}. Give {fixes}")

    # --- resumable position (torchdata's StatefulDataLoader calls these in each worker) -----------
    def state_dict(self) -> dict[str, Any]:
        info = get_worker_info()
        return {"worker": info.id if info is not None else 0, **self._state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.position = {state.pop("worker", 0): state}


class TrainedPositionLoader(StatefulDataLoader):
    """A ``StatefulDataLoader`` (torchdata) over ``StreamingBlocks`` whose ``state_dict`` holds every rank's position.

    - The position is the one *before* the batch it handed out last. Lightning fetches one batch ahead of the
      step it trains for loaders without a length, so when it saves a checkpoint after step k the loader has
      already produced batch k + 1, which has not been trained on and must come first after a resume.
    - Lightning writes rank zero's copy of the loader state into the checkpoint, but each rank reads its own
      part of the stream: the ranks' positions are gathered (every rank takes part in saving a checkpoint),
      and each rank restores its own.
    - ``waiting_for_data`` is true while it waits for the next batch: a SIGTERM then need not wait for a step
      boundary (``bertlite.tasks.resilience.SaveOnInterrupt``), as no step is under way.
    """

    dataset: StreamingBlocks
    waiting_for_data = False

    def __iter__(self):
        iterator = super().__iter__()
        self._trained = before = super().state_dict()
        while True:
            self.waiting_for_data = True
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except BertliteError as exc:
                if (message := worker_message(exc)) is None:
                    raise
                raise type(exc)(message) from None  # one line, without the worker's traceback
            finally:
                self.waiting_for_data = False
            self._trained, before = before, super().state_dict()
            yield batch

    def state_dict(self) -> dict[str, Any]:
        own = getattr(self, "_trained", None) or super().state_dict()
        ranks = [own]
        if self.dataset.world_size > 1 and torch.distributed.is_initialized():
            ranks = [None] * self.dataset.world_size
            torch.distributed.all_gather_object(ranks, own)
        return {"ranks": ranks, "num_workers": self.num_workers}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = (len(state.get("ranks", [])), state.get("num_workers"))
        if saved != (self.dataset.world_size, self.num_workers):
            raise ConfigError(
                f"the checkpoint's stream position was saved by {saved[0]} processes with data.num_workers="
                f"{saved[1]} each, and this run has {self.dataset.world_size} with {self.num_workers}: each "
                "reader's place in its shards cannot be carried over. Resume with the same devices, nodes "
                "and data.num_workers, or start a new run from its weights with init_from=<checkpoint>")
        super().load_state_dict(state["ranks"][self.dataset.rank])


def worker_message(exc: BaseException) -> str | None:
    """The message of an error raised in a DataLoader worker, which torch re-raises in the main process with the
    worker's traceback ("Caught DataError in DataLoader worker process 0. Original Traceback ... DataError:
    <message>"); None for an error raised in this process."""
    text = str(exc)
    if not text.startswith("Caught ") or "Original Traceback" not in text:
        return None
    return text.rstrip().splitlines()[-1].partition(": ")[2] or text


def stream_loader(dataset: StreamingBlocks, batch_size: int, collate_fn, num_workers: int) -> TrainedPositionLoader:
    """The training loader of a stream: whole batches only, shuffled by the dataset's own seeded windows."""
    with warnings.catch_warnings():  # torchdata 0.11 calls a torch API that now warns, at every construction
        warnings.filterwarnings("ignore", message=".*set_vital")
        return TrainedPositionLoader(dataset, batch_size=batch_size, collate_fn=collate_fn, num_workers=num_workers,
                                     drop_last=True, generator=torch.Generator().manual_seed(dataset.seed))
