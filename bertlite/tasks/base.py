"""What every bertlite LightningModule shares: building the network from plain config data,
AdamW with a warm-up/decay schedule, throughput counting, and self-contained checkpoints."""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from typing import Any

import lightning as L
import torch
import torchmetrics
from torch.optim.lr_scheduler import LambdaLR

from bertlite.errors import ConfigError
from bertlite.precision import check_compile, compile_model, resolve_compile
from bertlite.models.config import ModelConfig, config_from_dict
from bertlite.tasks.optim import SCHEDULES, WarmupDecay, build_adamw, no_decay_names, parameter_groups

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "bertlite"  # the section of a checkpoint that makes it self-contained
FORMAT_VERSION = 1
# model config fields of how the network runs, not of what it computes: a resume may change them freely
RUNTIME_FIELDS = ("gradient_checkpointing", "unpad")


class BertliteTask(L.LightningModule):
    """Subclasses set ``task_name`` and build ``self.model`` in ``build_model``."""

    task_name = "base"

    def __init__(
        self,
        model: ModelConfig | dict,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        warmup_steps: int | None = None,
        warmup_ratio: float = 0.06,
        schedule: str = "linear",
        min_lr_ratio: float = 0.0,
        compile: bool | str = "auto",
        extend_schedule: bool = False,
        allow_config_change: bool = False,
    ):
        super().__init__()
        if schedule not in SCHEDULES:
            raise ConfigError(f"unknown task.schedule={schedule!r}; choose one of {', '.join(SCHEDULES)}")
        check_compile(compile, "task.compile")
        self.save_hyperparameters(ignore=["model"])
        # the architecture as plain data in the hyperparameters, so that load_from_checkpoint rebuilds it
        self.save_hyperparameters({"model": dataclasses.asdict(model) if isinstance(model, ModelConfig) else model})
        self.model_config = model if isinstance(model, ModelConfig) else config_from_dict(model)
        self.model = self.build_model(self.model_config)
        self.no_decay = no_decay_names(self.model)  # by name, before FSDP flattens the parameters
        self.compiled: bool | None = None  # decided in configure_model, once the device is known
        self.tokenizer_json: str | None = None  # set before training; saved in every checkpoint
        self.special_tokens: dict[str, str] | None = None  # the roles of its special tokens, saved beside it
        # the furthest position training has reached (bertlite.positions): recorded in every checkpoint
        self.trained_seq_len: int | None = None

    def build_model(self, config) -> torch.nn.Module:
        raise NotImplementedError

    def configure_model(self) -> None:
        """torch.compile (task.compile: auto, true or false) for the trainer's device. Lightning calls this hook
        before moving the model there, at every fit, validate and test: decide once."""
        if self.compiled is not None:
            return
        device = self.trainer.strategy.root_device if self._trainer is not None else self.device
        self.compiled = resolve_compile(self.hparams.compile, device, "task.compile")
        if self.compiled:
            compile_model(self.model)
        log.info("torch.compile %s (task.compile=%s, %s)", "on" if self.compiled else "off", self.hparams.compile,
                 device.type)

    # --- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        optimizer = build_adamw(self.parameter_groups(), hp.lr, hp.betas, hp.eps)
        scheduler = LambdaLR(optimizer, self.schedule(start_step=0))
        schedule = {"scheduler": scheduler, "interval": "step", "name": "train/lr"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def total_steps(self) -> int:
        """Optimizer steps in this run, which the learning-rate schedule decays over."""
        total = self.trainer.estimated_stepping_batches
        if math.isinf(total):
            if self.hparams.schedule == "constant" and self.hparams.warmup_steps is not None:
                return sys.maxsize  # a constant rate after a fixed warm-up needs no end
            raise ConfigError("the run has no end (trainer.max_steps=-1 and trainer.max_epochs=-1) but the "
                              "learning-rate schedule decays to the end of the run: set trainer.max_steps=N "
                              "or trainer.max_epochs=N")
        return int(total)

    def schedule(self, start_step: int) -> WarmupDecay:
        """Warm-up then decay from ``start_step`` to the end of this run."""
        hp, total = self.hparams, self.total_steps()
        warmup = hp.warmup_steps if hp.warmup_steps is not None else int(hp.warmup_ratio * (total - start_step))
        return WarmupDecay(warmup, total, hp.schedule, hp.min_lr_ratio, start_step)

    def on_train_start(self) -> None:
        """A resumed run continues its checkpoint's schedule (restored with the scheduler's state). When this run
        ends elsewhere (trainer.max_steps raised to train longer, say), that schedule would end early or late:
        refuse, unless ``extend_schedule`` asks for a new warm-up to the peak rate and a decay to the new end."""
        scheduler = self.lr_schedulers()
        if not isinstance(scheduler, LambdaLR) or not isinstance(scheduler.lr_lambdas[0], WarmupDecay):
            return
        restored, total, step = scheduler.lr_lambdas[0], self.total_steps(), self.trainer.global_step
        if restored.total_steps == total:
            return
        if not self.hparams.extend_schedule:
            raise ConfigError(
                f"the checkpoint's learning-rate schedule ends at step {restored.total_steps} but this run ends at "
                f"step {total} (trainer.max_steps, max_epochs or the batch size changed). A resume continues the "
                "checkpoint's schedule: restore the original setting, or add task.extend_schedule=true to warm up "
                f"again to task.lr from step {step} and decay to step {total}")
        extension = self.schedule(start_step=step)
        scheduler.lr_lambdas = [extension] * len(scheduler.lr_lambdas)
        for group, base_lr in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base_lr * extension(scheduler.last_epoch)
        log.info("Extending the schedule: %r (was %r)", extension, restored)

    def parameter_groups(self) -> list[dict]:
        return parameter_groups(self.model, self.hparams.weight_decay, self.hparams.lr, no_decay=self.no_decay)

    # --- evaluation metrics start empty on every process -----------------------------------------
    def reset_metrics(self, stage: str) -> None:
        """``ddp_spawn`` hands the module to its processes through shared memory, so the metric states created in
        ``__init__`` are one tensor for all ranks and each rank would add into the others' counts. A reset gives
        every process states of its own before it evaluates. ``stage``: the prefix of the metrics' attribute
        names, "val" or "test"."""
        for name, module in self.named_modules():
            if name.startswith(stage) and isinstance(module, torchmetrics.Metric):
                module.reset()

    def on_validation_epoch_start(self) -> None:
        self.reset_metrics("val")

    def on_test_epoch_start(self) -> None:
        self.reset_metrics("test")

    # --- self-contained checkpoints -----------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "format_version": FORMAT_VERSION,
            "task": self.task_name,
            "model_config": dataclasses.asdict(self.model_config),
            "tokenizer": self.tokenizer_json,
            "special_tokens": self.special_tokens,
            "trained_seq_len": self.trained_seq_len,
            **self.extra_checkpoint_metadata(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get(CHECKPOINT_KEY, {})
        self.tokenizer_json = meta.get("tokenizer")
        self.special_tokens = meta.get("special_tokens")
        self.trained_seq_len = meta.get("trained_seq_len") or self.trained_seq_len

    def extra_checkpoint_metadata(self) -> dict[str, Any]:
        return {}

    # --- resuming ------------------------------------------------------------------------------
    def check_resume(self, checkpoint: dict[str, Any], source) -> None:
        """Before a resume from ``checkpoint`` (as read_checkpoint returns it): the model must be the one it saved.
        Differing weight shapes are one ``ConfigError``, whatever ``allow_config_change``; so are differing label
        names (each row of the head means one label). Other model settings (activation, dropout, ...) may differ
        with ``allow_config_change``, with a warning."""
        section = checkpoint[CHECKPOINT_KEY]
        saved = dataclasses.asdict(config_from_dict(section["model_config"], source=str(source)))
        now = dataclasses.asdict(self.model_config)
        changed = [f"{name}: {saved[name]!r} in the checkpoint, {now[name]!r} now" for name in now
                   if name not in RUNTIME_FIELDS and saved.get(name) != now[name]]
        labels = getattr(self, "label_names", None)
        relabelled = labels is not None and section.get("label_names") != labels
        if relabelled:
            changed.append(f"label_names: {section.get('label_names')!r:.200} in the checkpoint, {labels!r:.200} now")
        shapes = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items()}
        wanted = {k: tuple(v.shape) for k, v in self.state_dict().items()}
        misfits = sorted(k for k in shapes.keys() | wanted.keys() if shapes.get(k) != wanted.get(k))
        if misfits:
            raise ConfigError(f"{source} cannot be resumed with this configuration: its weights have other shapes "
                              f"({'; '.join(changed) or ', '.join(misfits[:5])}), and task.allow_config_change does "
                              "not apply to shapes. Resume with the checkpoint's settings, or start a new run")
        if relabelled:
            raise ConfigError(f"{source} was trained with other label names ({'; '.join(changed)}): each row of its "
                              "head means one label. Resume with the data it was trained on")
        if changed and not self.hparams.get("allow_config_change"):
            raise ConfigError(f"{source} was trained with another configuration ({'; '.join(changed)}). Resume with "
                              "the checkpoint's settings, or add task.allow_config_change=true to go on with the new "
                              "ones")
        if changed:
            log.warning("Resuming %s with a changed configuration (task.allow_config_change=true): %s", source,
                        "; ".join(changed))
