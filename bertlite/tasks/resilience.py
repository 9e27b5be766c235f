"""Surviving faults: atomic checkpoint files, a checkpoint when the run is told to stop (SIGTERM, Ctrl+C) or
its data breaks, the random-number state in every checkpoint (exact resume), and a stop on a NaN/inf loss that
keeps the last good checkpoint.

How Lightning 2.6 stops on a signal: its handler only sets ``trainer.received_sigterm``; the training loop
raises ``SIGTERMException`` at the next step boundary (after the step, its logging and any validation) and
calls every callback's ``on_exception``. Lightning saves nothing itself; ``SaveOnInterrupt`` does. A step
boundary never comes while the loop waits for a batch that does not come (a stalled stream), so there
``SaveOnInterrupt`` raises ``SIGTERMException`` itself.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from bertlite.atomic import write_atomically
from bertlite.errors import BertliteError, DataError

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, but every local checkpoint file is written by ``write_atomically``
    (remote ``fsspec`` URLs keep Lightning's own path). Wired in by ``trainer.plugins`` (conf/trainer)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if "://" in str(path) and not str(path).startswith("file://"):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        write_atomically(str(path).removeprefix("file://"), lambda f: torch.save(checkpoint, f))


class RNGState(L.Callback):
    """Saves the global random-number generators (torch, CUDA, NumPy, Python) in every checkpoint and restores
    them when training resumes, so dynamic masking and dropout continue where they stopped."""

    def __init__(self):
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state = {"torch": torch.get_rng_state(), "python": random.getstate(),
                 "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                           "has_gauss": int(has_gauss), "cached": float(cached)}}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict  # applied when training starts: set-up after loading may draw numbers

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state, self._pending = self._pending, None
        if not state:
            return
        torch.set_rng_state(state["torch"])
        random.setstate(state["python"])
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


class TrainingDivergedError(BertliteError):
    """The loss became NaN or inf."""


def newest_checkpoint(trainer: L.Trainer) -> Path | None:
    """The most recently written .ckpt in the directories of the trainer's checkpoint callbacks."""
    dirs = {Path(d) for cb in trainer.checkpoint_callbacks if (d := getattr(cb, "dirpath", None))}
    files = [f for d in dirs if d.is_dir() for f in d.glob("*.ckpt")]
    return max(files, key=lambda f: f.stat().st_mtime) if files else None


class NonFiniteLossGuard(L.Callback):
    """Stops training when the loss is NaN or inf, before any checkpoint of the diverged state is written.

    No host sync per step: each step ORs ``~isfinite(loss)`` into a flag that stays on the device; the flag is
    read every ``check_every_n_steps`` steps (default: the trainer's ``log_every_n_steps``, where logging syncs
    anyway), before every validation, and before every checkpoint is written (``on_save_checkpoint``). So no
    checkpoint ever holds a diverged state; the price is up to ``check_every_n_steps`` wasted steps."""

    def __init__(self, check_every_n_steps: int | None = None):
        self.check_every_n_steps = check_every_n_steps
        self._bad: torch.Tensor | None = None
        self._checked_step = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        bad = ~torch.isfinite(loss.detach()).all()
        self._bad = bad if self._bad is None else self._bad | bad
        every = self.check_every_n_steps or trainer.log_every_n_steps or 1
        if trainer.global_step % every == 0 and trainer.global_step != self._checked_step:
            self.check(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module) -> None:
        self.check(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        self.check(trainer)

    def check(self, trainer: L.Trainer) -> None:
        if self._bad is None:
            return
        bad = trainer.strategy.reduce_boolean_decision(bool(self._bad), all=False)  # any rank
        first, self._checked_step, self._bad = self._checked_step, trainer.global_step, None
        if not bad:
            return
        last = newest_checkpoint(trainer)
        kept = (f"the last good checkpoint is {last}; resume from it with ckpt_path={last}" if last
                else "no checkpoint was saved before it")
        raise TrainingDivergedError(
            f"the training loss became NaN or inf between steps {first + 1} and {trainer.global_step}; stopped "
            f"without saving that state ({kept}). Lower task.lr, lengthen the warm-up, keep "
            "trainer.gradient_clip_val, or use trainer.precision=32-true")


def waiting_for_data(trainer: L.Trainer) -> bool:
    """Whether the training loop is waiting for its next batch (a loader with ``waiting_for_data``, such as
    the stream's ``TrainedPositionLoader``): no step is under way."""
    loaders = trainer.train_dataloader
    loaders = loaders.values() if isinstance(loaders, dict) else \
        loaders if isinstance(loaders, (list, tuple)) else [loaders]
    return any(getattr(loader, "waiting_for_data", False) for loader in loaders)


class SaveOnInterrupt(L.Callback):
    """SIGTERM (a scheduler's pre-emption, ``kill``) or a first Ctrl+C: finish the current step, save
    ``dirpath/filename.ckpt`` and exit; ``ckpt_path=last`` resumes from it. A second Ctrl+C stops at once,
    without saving (a half-done step is not a state to resume from).

    While the loop waits for data, the signal stops it at once (single-process runs; with several processes
    it waits for the step boundary, where they stop together). A ``DataError`` mid-training (an unreadable
    shard with data.on_bad_shard=error) saves the checkpoint too, and its message says where."""

    def __init__(self, dirpath: str, filename: str = "last"):
        self.dirpath = dirpath
        self.filename = filename
        self._previous_sigint: Any = None
        self._previous_sigterm: Any = None

    @property
    def path(self) -> Path:
        return Path(self.dirpath) / f"{self.filename}.ckpt"

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        # Lightning's SIGTERM handler is in place now; Ctrl+C takes the same graceful path
        if threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)
            if callable(signal.getsignal(signal.SIGTERM)):  # Lightning's (none on Windows: keep the default)
                self._previous_sigterm = signal.signal(signal.SIGTERM, lambda signum, frame: self._on_sigterm(
                    trainer, signum, frame))

    def _on_sigterm(self, trainer: L.Trainer, signum, frame) -> None:
        self._previous_sigterm(signum, frame)  # Lightning's: sets trainer.received_sigterm
        # the other processes of a distributed run may be mid-step, inside a collective: leaving alone would
        # leave them waiting, so they all stop at the step boundary as before
        if trainer.world_size == 1 and waiting_for_data(trainer):
            rank_zero_info("SIGTERM while waiting for training data: stopping now")
            raise SIGTERMException()

    def _on_sigint(self, signum, frame) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the next Ctrl+C raises KeyboardInterrupt
        rank_zero_info("Interrupted: stopping after this step and saving a checkpoint (Ctrl+C again: stop now)")
        os.kill(os.getpid(), signal.SIGTERM)

    def _restore_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, previous in ((signal.SIGINT, self._previous_sigint), (signal.SIGTERM, self._previous_sigterm)):
            if previous is not None:
                signal.signal(signum, previous)
        self._previous_sigint = self._previous_sigterm = None

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        self._restore_signals()

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        self._restore_signals()
        if isinstance(exception, DataError):
            self.save_on_data_error(trainer, exception)
        if not isinstance(exception, SIGTERMException) or trainer.global_step == 0:
            return
        try:
            trainer.save_checkpoint(self.path, weights_only=False)
        except TrainingDivergedError as exc:
            log.error("Not saving a checkpoint on interrupt: %s", exc)
            return
        rank_zero_info(f"Interrupted at step {trainer.global_step}: saved {self.path}; resume with ckpt_path=last "
                       f"hydra.run.dir={Path(self.dirpath).parent}")

    def save_on_data_error(self, trainer: L.Trainer, exception: DataError) -> None:
        """Save the trained steps, and add to the error's one line where they are. Data errors come while a
        batch is fetched, between steps, so the state is whole; one process alone cannot save for all."""
        if trainer.global_step == 0:
            return
        if trainer.world_size > 1:
            last = newest_checkpoint(trainer)
            note = f"the newest checkpoint is {last}: resume with ckpt_path={last}" if last else \
                "no checkpoint was saved before it"
        else:
            try:
                trainer.save_checkpoint(self.path, weights_only=False)
            except TrainingDivergedError as exc:
                log.error("Not saving a checkpoint on the data error: %s", exc)
                return
            note = (f"saved {self.path} at step {trainer.global_step}; resume with ckpt_path=last "
                    f"hydra.run.dir={Path(self.dirpath).parent}")
        exception.args = (f"{exception}; {note}", *exception.args[1:])
