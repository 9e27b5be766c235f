"""Lightning callbacks of bertlite's own."""

from __future__ import annotations

import time

import lightning as L
import torch


class TokenThroughput(L.Callback):
    """Logs train/tokens_per_sec and train/samples_per_sec, averaged over the last ``window`` steps.

    Token counts accumulate on the device and are read once per log, so the hot path never syncs.
    """

    def __init__(self, window: int = 20):
        self.window = window
        self._start: float | None = None
        self._tokens: torch.Tensor | int = 0
        self._samples = 0
        self._steps = 0

    @staticmethod
    def count_tokens(batch: dict) -> torch.Tensor | int:
        """Real tokens of the text the batch is about (for seq2seq: the target blocks)."""
        ids = batch["input_ids"] if "input_ids" in batch else batch["tgt_ids"]
        mask = batch.get("attention_mask")
        return ids.numel() if mask is None else mask.sum()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._start is None:
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._tokens = self._tokens + self.count_tokens(batch)
        self._samples += next(iter(batch.values())).size(0)
        self._steps += 1
        if self._steps < self.window:
            return
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - self._start
        tokens = float(self._tokens) * trainer.world_size
        pl_module.log_dict({"train/tokens_per_sec": tokens / elapsed,
                            "train/samples_per_sec": self._samples * trainer.world_size / elapsed},
                           on_step=True, on_epoch=False, rank_zero_only=True)
        self._start, self._tokens, self._samples, self._steps = time.perf_counter(), 0, 0, 0

    def on_validation_start(self, trainer, pl_module) -> None:
        self._start, self._tokens, self._samples, self._steps = None, 0, 0, 0  # don't count evaluation time
