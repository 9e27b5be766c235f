"""Lightning callbacks of bertlite's own."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

from bertlite.models.flops import training_flops

log = logging.getLogger(__name__)

# Dense (no sparsity) bf16/fp16 tensor-core peaks, FLOP/s, by a substring of torch.cuda.get_device_name().
# Checked in order: the first match wins, so the more specific names come first. Others: Lightning's table.
GPU_PEAK_BF16 = (("h100 pcie", 756e12), ("h100 nvl", 835e12), ("h100", 989e12), ("h200", 989e12),
                 ("gh200", 989e12), ("b200", 2250e12), ("a100", 312e12), ("l40s", 362e12), ("l4", 121e12),
                 ("a10g", 125e12), ("a10", 125e12))
PRECISION_DTYPES = {"bf16": torch.bfloat16, "16": torch.float16}


def precision_dtype(precision: str | int | None) -> torch.dtype:
    """A trainer precision ("bf16-mixed", "16-true", "32-true", ...) -> the dtype matrices are multiplied in."""
    return PRECISION_DTYPES.get(str(precision).split("-")[0], torch.float32)


def device_peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """The device's peak dense FLOP/s in ``dtype``, or None when unknown (CPUs, unlisted cards)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).lower()
    if dtype in (torch.bfloat16, torch.float16):
        for key, flops in GPU_PEAK_BF16:
            if key in name:
                return flops
    from lightning.fabric.utilities.throughput import get_available_flops

    return get_available_flops(device, dtype)


def batch_flops(task_name: str, config, batch: dict) -> float:
    """Training FLOPs of one batch (bertlite.models.flops), from tensor shapes only: no host-device sync."""
    if "src_ids" in batch:  # encoder-decoder: the source through the encoder, the target through the decoder
        b, s = batch["src_ids"].shape
        return training_flops(config, b, s, target_len=batch["tgt_ids"].size(1))
    b, t = batch["input_ids"].shape
    if "mlm_positions" in batch:
        return training_flops(config, b, t, predicted=batch["mlm_positions"].numel())
    return training_flops(config, b, t, predicted=0 if task_name == "classification" else None)


class TokenThroughput(L.Callback):
    """Logs train/tokens_per_sec, train/samples_per_sec and train/tflops_per_sec (achieved model FLOP/s per
    device, counted by bertlite.models.flops), averaged over the last ``window`` steps, and train/mfu
    (model FLOPs utilisation: achieved / peak) when the peak is known: ``peak_flops`` (FLOP/s of one device)
    if given, else the table of GPU peaks for the trainer's precision. On a CPU without ``peak_flops`` no MFU.

    Token counts accumulate on the device and FLOPs on the host (from shapes); both are read once per log,
    so the hot path never syncs.
    """

    def __init__(self, window: int = 20, peak_flops: float | None = None):
        self.window = window
        self.peak_flops = peak_flops
        self._peak: float | None = None
        self._start: float | None = None
        self._tokens: torch.Tensor | int = 0
        self._samples = 0
        self._steps = 0
        self._flops = 0.0

    @staticmethod
    def count_tokens(batch: dict) -> torch.Tensor | int:
        """Real tokens of the text the batch is about (for seq2seq: the target blocks)."""
        ids = batch["input_ids"] if "input_ids" in batch else batch["tgt_ids"]
        mask = batch.get("attention_mask")
        return ids.numel() if mask is None else mask.sum()

    def on_fit_start(self, trainer, pl_module) -> None:
        self._peak = self.peak_flops or device_peak_flops(pl_module.device, precision_dtype(trainer.precision))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._start is None:
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._tokens = self._tokens + self.count_tokens(batch)
        self._samples += next(iter(batch.values())).size(0)
        config = getattr(pl_module, "model_config", None)
        self._flops += batch_flops(pl_module.task_name, config, batch) if config is not None else 0.0
        self._steps += 1
        if self._steps < self.window:
            return
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - self._start
        tokens = float(self._tokens) * trainer.world_size
        flops_per_sec = self._flops / elapsed  # this device's
        values = {"train/tokens_per_sec": tokens / elapsed,
                  "train/samples_per_sec": self._samples * trainer.world_size / elapsed,
                  "train/tflops_per_sec": flops_per_sec / 1e12}
        if self._peak:
            values["train/mfu"] = flops_per_sec / self._peak
        pl_module.log_dict(values, on_step=True, on_epoch=False, rank_zero_only=True)
        self._restart_window(time.perf_counter())

    def _restart_window(self, start: float | None) -> None:
        """Counts begin again from zero, timed from ``start`` (None: from the next training batch)."""
        self._start = start
        self._tokens = 0
        self._samples = 0
        self._steps = 0
        self._flops = 0.0

    def on_validation_start(self, trainer, pl_module) -> None:
        self._restart_window(None)  # don't count evaluation time: the next training batch starts the clock


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint that keeps only the paths of its own folder from a resumed checkpoint.

    On resume Lightning restores the best, k-th best, last and top-k paths stored in the file, later opens the best
    one and deletes the top-k ones it replaces. A checkpoint from elsewhere could name any file there (a path on
    another disk, an ``s3://`` URL), so each restored path that is not a file directly in ``dirpath`` is dropped,
    with a warning: the run then keeps and deletes only what it wrote."""

    @property
    def state_key(self) -> str:
        # Lightning's own key ("ModelCheckpoint{...}"): checkpoints written before this class and after it resume
        # with their callback state either way
        return "ModelCheckpoint" + super().state_key.removeprefix(type(self).__qualname__)

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        for attribute in ("best_model_path", "kth_best_model_path", "last_model_path"):
            path = getattr(self, attribute)
            if path and not self.is_own_file(path):
                log.warning("Ignoring %s=%s restored from the checkpoint: it is not a file in this run's "
                            "checkpoint folder %s", attribute, path, self.dirpath)
                setattr(self, attribute, "")
        foreign = [p for p in self.best_k_models if not self.is_own_file(p)]
        for path in foreign:
            log.warning("Ignoring the top-k checkpoint %s restored from the checkpoint: it is not a file in this "
                        "run's checkpoint folder %s", path, self.dirpath)
            del self.best_k_models[path]
        if not self.best_model_path:
            self.best_model_score = None

    def is_own_file(self, path: str) -> bool:
        """Whether ``path`` is a local file directly in this callback's folder (symbolic links resolved)."""
        if not self.dirpath or "://" in str(path):
            return False
        return Path(path).resolve().parent == Path(self.dirpath).resolve()


class StepsProgressBar(RichProgressBar):
    """Lightning's rich progress bar without an epoch total when the run is counted in steps: Lightning sets
    max_epochs=-1 then, and its bar would read "Epoch 3/-2"."""

    def _get_train_description(self, current_epoch: int) -> str:
        if self.trainer.max_epochs is not None and self.trainer.max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        description = f"Epoch {current_epoch}"
        return f"{description:{len(self.validation_description)}}"  # padded as Lightning's, so the bar does not jump
