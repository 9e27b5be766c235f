"""A callback for the streaming tests (loaded by a Hydra override, +callbacks.record._target_=...): it appends
every training block this rank sees, as a line of token ids, to ``<out>/rank<r>.txt``."""

from __future__ import annotations

from pathlib import Path

import lightning as L


class RecordBlocks(L.Callback):
    def __init__(self, out: str):
        self.out = Path(out)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / f"rank{trainer.global_rank}.txt", "a") as f:
            for row in batch["input_ids"].tolist():
                f.write(" ".join(map(str, row)) + "\n")
