"""A callback for scripts/benchmark_streaming.py: writes a flag file when the first training step begins."""

from pathlib import Path

import lightning as L


class FirstStep(L.Callback):
    def __init__(self, flag: str):
        self.flag = Path(flag)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self.flag.exists():
            self.flag.write_text(str(trainer.global_step))
