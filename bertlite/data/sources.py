"""Load raw data sets with Hugging Face ``datasets``: local files (text, JSON Lines, CSV, TSV, Parquet)
or a hub data set. Every failure becomes one ``DataError`` that says what to fix."""

from __future__ import annotations

import glob
import logging
import os
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
    try:
        return datasets.load_dataset(fmt, data_files=splits, **reader_kwargs)
    except UnicodeDecodeError as exc:
        raise DataError(f"a data file is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
                        "re-encode it as UTF-8 (for example: iconv -f latin1 -t utf-8)") from exc
    except Exception as exc:  # datasets wraps parser errors in many exception types
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, UnicodeDecodeError):
            raise DataError(f"a data file is not valid UTF-8 ({cause.reason}); re-encode it as UTF-8") from exc
        raise DataError(f"cannot read {fmt} files {all_files}: {type(exc).__name__}: {exc}") from exc


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
    parts = dsd["train"].train_test_split(test_size=fraction, seed=seed, shuffle=True)
    log.info("Carved a validation split of %d rows from train (seed %d)", len(parts["test"]), seed)
    return datasets.DatasetDict({**dsd, "train": parts["train"], "validation": parts["test"]})
