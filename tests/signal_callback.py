"""A callback for the resume tests, loaded into a CLI run by a Hydra override
(+callbacks.pause._target_=tests.signal_callback.PauseForSignal): at a chosen step it tells the test so, through
a file, and waits for the SIGTERM the test then sends, so the signal lands at a known step."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L


class PauseForSignal(L.Callback):
    def __init__(self, at_step: int, flag: str, timeout: float = 120.0):
        self.at_step, self.flag, self.timeout = at_step, Path(flag), timeout

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self.at_step:
            return
        self.flag.write_text(str(trainer.global_step))
        deadline = time.monotonic() + self.timeout
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.02)
