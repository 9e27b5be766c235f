"""Shards of a streamed corpus that break while they are read, and the policy for them (``data.on_bad_shard``).

A shard is read only as training goes, so a truncated ``.gz``, a file that is not UTF-8 or a bad JSON line fails
mid-run. ``"skip"`` drops the rest of that shard, with a warning that says what is lost, and reads on; ``"error"``
stops with a ``DataError`` naming it. ``stream_texts`` applies the same policy to the texts a tokenizer is trained
on; ``streaming.StreamingBlocks`` to the blocks training reads.
"""

from __future__ import annotations

import logging
from typing import Iterator

import datasets

from bertlite.data.sources import is_json_file, refuse_null_rows
from bertlite.errors import ConfigError, DataError

log = logging.getLogger(__name__)


BAD_SHARD_POLICIES = ("skip", "error")


def check_bad_shard_policy(on_bad_shard: str) -> None:
    if on_bad_shard not in BAD_SHARD_POLICIES:
        raise ConfigError(f"data.on_bad_shard={on_bad_shard!r}; choose skip (warn and go on without the rest of "
                          "an unreadable shard) or error (stop, after saving a checkpoint)")


def shard_files(documents: datasets.IterableDataset) -> list[str]:
    """The files (or URLs) of a stream in shard order, as ``datasets``' file readers hold them; [] if unknown."""
    ex_iterable = getattr(documents, "_ex_iterable", None)
    while ex_iterable is not None:  # the reader sits under any wrapping (shard, split by node)
        kwargs = getattr(ex_iterable, "kwargs", None) or {}
        for key in ("base_files", "files"):  # json, text, csv; parquet
            files = kwargs.get(key)
            if isinstance(files, list) and all(isinstance(f, str) for f in files):
                return files
        ex_iterable = getattr(ex_iterable, "ex_iterable", None)
    return []


def describe_files(files: list[str], most: int = 3) -> str:
    shown = ", ".join(files[:most])
    return shown + (f" and {len(files) - most} more" if len(files) > most else "")


def one_line(exc: BaseException, most: int = 200) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:most]}{'...' if len(text) > most else ''}"


def read_failure(exc: Exception, name: str, read_before: str, on_bad_shard: str) -> None:
    """A shard that failed mid-read after ``read_before`` ("12 blocks"): a ``DataError`` (on_bad_shard=error),
    else a warning that says what is lost."""
    if on_bad_shard == "error":
        raise DataError(f"cannot read training shard {name} ({one_line(exc)}) after its first {read_before}; "
                        "repair or replace the file, or set data.on_bad_shard=skip to train on without the rest "
                        "of it")
    log.warning("Skipping the rest of training shard %s (%s): only its first %s are used, on every pass; repair "
                "or replace the file to use it all (data.on_bad_shard=error stops instead)", name, one_line(exc),
                read_before)


def stream_texts(documents: datasets.IterableDataset, text_column: str = "text", on_bad_shard: str = "skip",
                 batch_size: int = 256) -> Iterator[str]:
    """The non-blank texts of a stream, shard after shard (the stream's own order), with a shard that fails
    mid-read handled as ``on_bad_shard`` says: what a tokenizer is trained on."""
    check_bad_shard_policy(on_bad_shard)
    n, files = documents.num_shards, shard_files(documents)
    for j in range(n):
        name = files[j] if len(files) == n else f"shard {j} of {n}"
        if len(files) == n and is_json_file(name):
            try:
                refuse_null_rows([name])  # a null row would crash the reader, not raise (free_of_null_rows)
            except DataError as exc:
                read_failure(exc, name, "0 documents", on_bad_shard)
                continue
        reads, texts = documents.shard(n, j).iter(batch_size=batch_size), 0
        while True:
            try:
                batch = next(reads)[text_column]
            except StopIteration:
                break
            except Exception as exc:  # a truncated, mis-encoded or malformed file fails only when it is read
                read_failure(exc, name, f"{texts} documents", on_bad_shard)
                break
            texts += len(batch)
            yield from (t for t in batch if t and t.strip())
