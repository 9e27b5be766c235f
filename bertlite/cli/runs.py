"""Runs of bertlite commands one after another, each in its own process, and the markdown table of their results:
what bertlite-glue, bertlite-compare and scripts/finetune_table.py share.

A run is ``python -m <module> <overrides>``, a fresh interpreter with its own memory, seed and Lightning program
(DDP included); it leaves its figures in ``<run dir>/metrics.json``, which the caller reads into a table row.
"""

from __future__ import annotations

import codecs
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


def module_command(module: str, args: Sequence[str]) -> list[str]:
    """``python -m module args`` with this interpreter, so that the run uses the same environment."""
    return [sys.executable, "-m", module, *args]


def stream(cmd: list[str], log_path: Path) -> int:
    """Run ``cmd`` with its stdout and stderr both on the console and in ``log_path``; its exit status."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the child's prints arrive as they happen, not at its exit
    with open(log_path, "wb") as f, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                     env=env) as proc:
        while chunk := proc.stdout.read1(65536):
            f.write(chunk)
            sys.stdout.write(decoder.decode(chunk))
            sys.stdout.flush()
    return proc.returncode


@dataclass(frozen=True)
class Finished:
    """How a run ended: its exit status and its wall time (start-up, data, training and evaluation)."""

    returncode: int
    seconds: float


def run_command(cmd: list[str], quiet: bool = False) -> Finished:
    """Run ``cmd`` to its end, its output on this process's console (``quiet``: its stdout discarded, its
    errors still shown)."""
    started = time.perf_counter()
    result = subprocess.run(cmd, stdout=subprocess.DEVNULL if quiet else None)
    return Finished(result.returncode, time.perf_counter() - started)


def read_metrics(run_dir: Path) -> dict:
    """The metrics.json that a bertlite-finetune run writes in its run directory."""
    return json.loads((run_dir / "metrics.json").read_text())


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str) -> list[str]:
    """The lines of a markdown table. ``align``: one letter per column, ``l`` for text, ``r`` for figures
    (right-aligned). An empty cell is written ``| |``."""
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align={align!r}: give one letter, l or r, for each of the {len(header)} columns")

    def line(cells: Sequence[object]) -> str:
        return "|" + "|".join(f" {cell} " if str(cell) else " " for cell in cells) + "|"

    return [line(header), "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|", *map(line, rows)]
