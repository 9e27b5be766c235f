"""Load raw data sets with Hugging Face ``datasets``: local files (text, JSON Lines, CSV, TSV, Parquet)
or a hub data set. Every failure becomes one ``DataError`` that says what to fix."""

from __future__ import annotations

import bz2
import codecs
import glob
import gzip
import json
import logging
import lzma
import os
import re
from pathlib import Path
from typing import Sequence

import datasets

from bertlite.errors import DataError

log = logging.getLogger(__name__)

# file ending -> datasets builder name
FORMATS = {".txt": "text", ".text": "text", ".raw": "text", ".json": "json", ".jsonl": "json",
           ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}


def expand_files(patterns: str | Sequence[str] | None, what: str) -> list[str]:
    """Glob patterns -> existing files, sorted. A pattern that matches nothing is an error."""
    if patterns is None:
        return []
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    files: list[str] = []
    for pattern in patterns:
        pattern = os.path.expanduser(str(pattern))
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        missing = [m for m in matches if not os.path.isfile(m)]
        if not matches or missing:
            raise DataError(f"{what} not found: {missing[0] if missing else pattern}. Check the path "
                            f"(relative paths start from {os.getcwd()}), or set the data directory with "
                            "paths.data_dir=... or the BERTLITE_DATA_DIR environment variable")
        unreadable = [m for m in matches if not os.access(m, os.R_OK)]
        if unreadable:
            raise DataError(f"{what} is not readable: {unreadable[0]}. Fix its permissions")
        files.extend(matches)
    return files


def infer_format(files: list[str]) -> str:
    endings = set()
    for f in files:
        suffixes = Path(f).suffixes
        ending = suffixes[-2] if suffixes and suffixes[-1] in (".gz", ".bz2", ".xz", ".zst") and len(suffixes) > 1 \
            else (suffixes[-1] if suffixes else "")
        if ending.lower() not in FORMATS:
            raise DataError(f"cannot tell the format of {f}; set data.format to one of text, json, csv, parquet")
        endings.add(FORMATS[ending.lower()])
    if len(endings) > 1:
        raise DataError(f"files of mixed formats {sorted(endings)}; give one format per data set")
    return endings.pop()


def load_files(splits: dict[str, list[str]], fmt: str | None = None, **reader_kwargs) -> datasets.DatasetDict:
    """{split: files} -> DatasetDict. TSV files are read as CSV with a tab separator."""
    splits = {k: v for k, v in splits.items() if v}
    all_files = [f for files in splits.values() for f in files]
    fmt = fmt or infer_format(all_files)
    if fmt == "tsv":
        fmt = "csv"
        reader_kwargs.setdefault("sep", "\t")
    if fmt == "csv" and any(f.endswith((".tsv", ".tsv.gz")) for f in all_files):
        reader_kwargs.setdefault("sep", "\t")
    if fmt == "json" and not reader_kwargs.get("streaming"):
        refuse_null_rows(all_files)
    try:
        dsd = datasets.load_dataset(fmt, data_files=splits, **reader_kwargs)
    except Exception as exc:  # datasets wraps parser errors in many exception types
        cause = exc if isinstance(exc, UnicodeDecodeError) else (exc.__cause__ or exc.__context__)
        if isinstance(cause, UnicodeDecodeError):
            raise DataError(not_utf8(text_files(fmt, all_files, reader_kwargs))
                            or f"a data file is not valid UTF-8 ({cause.reason}); re-encode it as UTF-8 "
                               f"({RECODE_HINT})") from exc
        raise DataError(f"cannot read {fmt} files {all_files}: {type(exc).__name__}: {exc}"[:1000]) from exc
    if not reader_kwargs.get("streaming"):
        check_tables(dsd, all_files, text_files(fmt, all_files, reader_kwargs))
    return dsd


def text_files(fmt: str, files: list[str], reader_kwargs: dict) -> list[str]:
    """The files that must be UTF-8: all of them, unless they are Parquet or the reader was given an encoding."""
    encoding = str(reader_kwargs.get("encoding", "utf-8")).lower().replace("_", "-")
    return files if fmt in ("text", "json", "csv") and encoding in ("utf-8", "utf8") else []


RECODE_HINT = "for example: iconv -f latin1 -t utf-8 old.csv > new.csv"
DECOMPRESS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


NULL_LINE = re.compile(rb"^(?:\xef\xbb\xbf)?[ \t\r]*null[ \t\r]*$", re.MULTILINE)  # a UTF-8 BOM may start it


def is_json_file(name: str) -> bool:
    """Whether a local file holds JSON (Lines), compressed or not: train.jsonl, shard-00.json.gz."""
    if "://" in name:
        return False
    path = Path(name)
    suffix = Path(path.stem).suffix if path.suffix.lower() in DECOMPRESS else path.suffix
    return FORMATS.get(suffix.lower()) == "json"


def refuse_null_rows(files: Sequence[str], chunk_bytes: int = 1 << 26) -> None:
    """A row that is a bare ``null`` crashes Arrow's JSON reader (a segmentation fault, no exception:
    apache/arrow#47409, pyarrow 26), so it is looked for first: a null line of a JSON Lines file, or a null element
    of a file that is one JSON array (which datasets turns into JSON Lines)."""
    for f in files:
        opener = DECOMPRESS.get(Path(f).suffix.lower(), open)
        try:
            with opener(f, "rb") as stream:
                head = stream.read(chunk_bytes)
                if head.removeprefix(codecs.BOM_UTF8).startswith(b"["):
                    _refuse_null_elements(f, head + stream.read())  # datasets reads such a file whole too
                else:
                    _refuse_null_lines(f, head, stream, chunk_bytes)
        except (OSError, EOFError, lzma.LZMAError):
            continue  # unreadable or damaged compression: the reader's own error says so


def _refuse_null_lines(f: str, chunk: bytes, stream, chunk_bytes: int) -> None:
    lines_before = 0
    while chunk:
        chunk += stream.readline()  # end on a line boundary
        found = NULL_LINE.search(chunk)
        if found:
            n = lines_before + chunk.count(b"\n", 0, found.start()) + 1
            raise DataError(f"{f}, line {n}, is null: each line of a JSON Lines file must be an object, such as "
                            '{"text": "..."}. Remove or fix the line')
        lines_before += chunk.count(b"\n")
        chunk = stream.read(chunk_bytes)


def _refuse_null_elements(f: str, content: bytes) -> None:
    try:
        rows = json.loads(content)
    except (ValueError, RecursionError):
        return  # not JSON: the reader's own error says so
    if isinstance(rows, list) and None in rows:
        raise DataError(f"{f}: element {rows.index(None)} of its JSON array is null: each element must be an "
                        'object, such as {"text": "..."}, or a string. Remove or fix it')


def not_utf8(files: Sequence[str]) -> str | None:
    """Which of ``files`` is not valid UTF-8, and on which line, as the start of an error message; None if all are
    (or none can be scanned)."""
    for f in files:
        opener = DECOMPRESS.get(Path(f).suffix.lower(), open)
        try:
            with opener(f, "rb") as stream:
                for n, line in enumerate(stream, 1):
                    try:
                        line.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        return (f"{f}, line {n}, is not valid UTF-8 ({exc.reason}); re-encode it as UTF-8 "
                                f"({RECODE_HINT})")
        except (OSError, EOFError, lzma.LZMAError):
            continue  # unreadable or damaged compression: the reader's own error says so
    return None


def check_tables(dsd: datasets.DatasetDict, files: list[str], utf8_files: list[str]) -> None:
    """Arrow's JSON reader keeps string bytes unchecked: a Latin-1 file loads, and fails only when a later step
    reads its strings. A full validation of the tables (no Python objects) finds that now."""
    import pyarrow as pa

    for ds in dsd.values():
        try:
            ds.data.table.validate(full=True)
        except pa.ArrowInvalid as exc:
            raise DataError(not_utf8(utf8_files) or f"reading {files} gave malformed data ({exc}); check the "
                            "files") from None


def load_hub(path: str, name: str | None = None, local_files: str = "data=text_files data.train_files=<files>",
             **kwargs) -> datasets.DatasetDict:
    """A data set from the Hugging Face hub (needs internet, or a filled local cache). ``local_files`` says how
    to read local files instead (the options differ between pretraining and fine-tuning)."""
    try:
        return datasets.load_dataset(path, name, **kwargs)
    except Exception as exc:
        raise DataError(f"cannot load hub data set {path!r} (name={name!r}): {type(exc).__name__}: {exc}. "
                        f"Without internet, use local files instead: {local_files}") from exc


def require_column(ds: datasets.Dataset, column: str, option: str) -> None:
    if column not in ds.column_names:
        raise DataError(f"column {column!r} not found; available columns: {', '.join(ds.column_names)}. "
                        f"Set {option}=<one of them>")


def carve_validation(dsd: datasets.DatasetDict, fraction: float, seed: int) -> datasets.DatasetDict:
    """Split a validation set off train (with a fixed seed) when the data has none."""
    if "validation" in dsd:
        return dsd
    if not 0.0 < fraction < 1.0:
        raise DataError("the data has no validation split; give validation files or a validation_fraction in (0, 1)")
    try:
        parts = dsd["train"].train_test_split(test_size=fraction, seed=seed, shuffle=True)
    except ValueError:  # one side of the split would be empty
        raise DataError(f"the training data has {len(dsd['train'])} row(s): too few to carve a validation split "
                        f"of fraction {fraction} from; give validation files or more training rows") from None
    log.info("Carved a validation split of %d rows from train (seed %d)", len(parts["test"]), seed)
    return datasets.DatasetDict({**dsd, "train": parts["train"], "validation": parts["test"]})
