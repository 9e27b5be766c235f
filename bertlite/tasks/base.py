"""What every bertlite LightningModule shares: building the network from plain config data,
AdamW with a warm-up/decay schedule, throughput counting, and self-contained checkpoints."""

from __future__ import annotations

import dataclasses
from typing import Any

import lightning as L
import torch
from torch.optim.lr_scheduler import LambdaLR

from bertlite.errors import ConfigError
from bertlite.models.config import config_from_dict
from bertlite.tasks.optim import SCHEDULES, build_adamw, parameter_groups, warmup_decay

CHECKPOINT_KEY = "bertlite"  # the section of a checkpoint that makes it self-contained
FORMAT_VERSION = 1


class BertliteTask(L.LightningModule):
    """Subclasses set ``task_name`` and build ``self.model`` in ``build_model``."""

    task_name = "base"

    def __init__(
        self,
        model: dict,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        warmup_steps: int | None = None,
        warmup_ratio: float = 0.06,
        schedule: str = "linear",
        min_lr_ratio: float = 0.0,
        compile: bool = False,
    ):
        super().__init__()
        if schedule not in SCHEDULES:
            raise ConfigError(f"unknown task.schedule={schedule!r}; choose one of {', '.join(SCHEDULES)}")
        self.save_hyperparameters()
        self.model_config = config_from_dict(model)
        self.model = self.build_model(self.model_config)
        if compile:
            self.model.compile()
        self.tokenizer_json: str | None = None  # set before training; saved in every checkpoint

    def build_model(self, config) -> torch.nn.Module:
        raise NotImplementedError

    # --- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        optimizer = build_adamw(self.parameter_groups(), hp.lr, hp.betas, hp.eps)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = hp.warmup_steps if hp.warmup_steps is not None else int(hp.warmup_ratio * total)
        warmup = max(1, warmup)
        scheduler = LambdaLR(optimizer, lambda step: warmup_decay(step, warmup, total, hp.schedule, hp.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "train/lr"}}

    def parameter_groups(self) -> list[dict]:
        return parameter_groups(self.model, self.hparams.weight_decay, self.hparams.lr)

    # --- self-contained checkpoints -----------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "format_version": FORMAT_VERSION,
            "task": self.task_name,
            "model_config": dataclasses.asdict(self.model_config),
            "tokenizer": self.tokenizer_json,
            **self.extra_checkpoint_metadata(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get(CHECKPOINT_KEY, {})
        self.tokenizer_json = meta.get("tokenizer")

    def extra_checkpoint_metadata(self) -> dict[str, Any]:
        return {}
