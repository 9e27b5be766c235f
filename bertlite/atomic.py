"""Atomic file and folder writes: a temporary file (or folder) beside the target, flushed to disk, then renamed
into place. A crash at any moment leaves either the old file or the new one, never a part of one.

A folder replaces an existing one only if that holds nothing but what bertlite writes there: ``overwrite`` never
deletes the current directory, the source being converted, or anyone's other files."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import IO, Callable, Collection, Iterable

from bertlite.errors import ConfigError

log = logging.getLogger(__name__)


def write_atomically(path: str | Path, write: Callable[[IO[bytes]], object]) -> None:
    """``write(file)`` into a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # make the rename itself durable


def write_text_atomically(path: str | Path, text: str) -> None:
    write_atomically(path, lambda f: f.write(text.encode("utf-8")))


REPLACES_ONLY = ("overwrite=true replaces only an empty folder or one that holds nothing but what bertlite writes "
                 "there; choose another folder, or move its contents away yourself")


def check_destination(out: str | Path, protect: Iterable[str | Path] = ()) -> None:
    """Refuse a destination folder that must never be replaced, whatever ``overwrite`` says: a file, a symbolic
    link, the current directory or a folder above it, and a folder that holds one of ``protect`` (the source
    being converted)."""
    out = Path(os.path.abspath(out))
    if os.path.islink(out):
        raise ConfigError(f"refusing to write the folder {out}: it is a symbolic link; give the folder it points to "
                          "or a new one")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"refusing to write the folder {out}: a file of that name exists; choose another path")
    real = Path(os.path.realpath(out))
    cwd = Path(os.path.realpath(os.getcwd()))
    if real == cwd or real in cwd.parents:
        raise ConfigError(f"refusing to write the folder {out}: it is the current directory or holds it; "
                          "give a new folder, e.g. out=exported/")
    for path in protect:
        source = Path(os.path.realpath(path))
        if real == source or real in source.parents:
            raise ConfigError(f"refusing to write the folder {out}: it holds {path}, the source being converted; "
                              "choose another folder")


def check_replaceable(out: Path, written: Collection[str], reason: Callable[[Path], str | None] | None) -> None:
    """``out`` may be replaced: it is empty, or holds only plain files named as the new folder's (``written``)
    and ``reason(out)`` finds nothing against it (say, a model folder whose config.json is not bertlite's)."""
    entries = list(out.iterdir())
    if not entries:
        return
    others = sorted(p.name for p in entries if p.name not in written or p.is_symlink() or not p.is_file())
    if others:
        listed = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise ConfigError(f"refusing to replace {out}: it holds {listed}, which bertlite does not write there; "
                          f"{REPLACES_ONLY}")
    against = reason(out) if reason else None
    if against:
        raise ConfigError(f"refusing to replace {out}: {against}; {REPLACES_ONLY}")


def write_folder_atomically(out: str | Path, fill: Callable[[Path], object], overwrite: bool = False, *,
                            not_replaceable: Callable[[Path], str | None] | None = None,
                            protect: Iterable[str | Path] = ()) -> Path:
    """``fill(folder)`` writes a folder's files into a staging folder beside ``out``, which then replaces ``out``.

    A failure at any point leaves ``out`` as it was. An existing non-empty ``out`` is replaced only with
    ``overwrite``, and only when it holds nothing but files of the names ``fill`` writes and
    ``not_replaceable(out)`` gives no reason against it; ``check_destination`` refuses the rest (the current
    directory, a folder holding a ``protect`` path). The swap: the old folder is renamed aside, the new one
    renamed in, and only then is the old one deleted."""
    out = Path(os.path.abspath(out))
    protect = list(protect)
    check_destination(out, protect)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out} exists and is not empty; choose another folder or pass overwrite")
        against = not_replaceable(out) if not_replaceable else None  # early, before fill does the work
        if against:
            raise ConfigError(f"refusing to replace {out}: {against}; {REPLACES_ONLY}")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.new.", dir=out.parent))
    try:
        fill(staging)
        _fsync_tree(staging)
        check_destination(out, protect)  # again: the folder may have changed while fill ran
        if out.exists():
            if not overwrite and any(out.iterdir()):
                raise ConfigError(f"{out} exists and is not empty; choose another folder or pass overwrite")
            check_replaceable(out, {p.name for p in staging.iterdir()}, not_replaceable)
        _swap_in(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out


def _swap_in(staging: Path, out: Path) -> None:
    """Rename ``staging`` to ``out``; an existing ``out`` is renamed aside first and deleted last, so that at
    every moment one whole folder (old or new) is there or, between the two renames, the old one is aside."""
    if not out.exists():
        os.rename(staging, out)
    else:
        aside = out.with_name(f".{out.name}.old.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        os.rename(out, aside)
        try:
            os.rename(staging, out)
        except BaseException:
            os.rename(aside, out)
            raise
        shutil.rmtree(aside, ignore_errors=True)
        if aside.exists():
            log.warning("Replaced %s, but could not delete the old folder, now %s: delete it yourself", out, aside)
    _fsync_dir(out.parent)


def _fsync_tree(folder: Path) -> None:
    """Flush the staged files to disk before they are renamed into place."""
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # not every platform or file system can sync a directory
        pass
