"""What every fine-tuning task shares: a pretrained backbone under a new head, trained on labelled batches.

A subclass (sequence classification, token classification) builds the network with its head (``build_model``),
resolves ``self.metric`` (the validation metric the callbacks monitor) and gives what differs: the loss, how an
evaluation batch updates the scores, and how the epoch's scores are logged. This class holds the rest: the
label-count check, freezing, layer-wise learning rates, copying a pretrained backbone, the training and evaluation
loops, and the checkpoint's label metadata.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MeanMetric, Metric

from bertlite.errors import ConfigError
from bertlite.models.config import ModelConfig
from bertlite.tasks.base import BertliteTask
from bertlite.tasks.optim import parameter_groups


def freeze_backbone(model: torch.nn.Module, freeze_embeddings: bool, freeze_layers: int) -> None:
    """Keep the embeddings and / or the lowest ``freeze_layers`` layers of the model's first stack fixed."""
    backbone = getattr(model, model.backbone)
    if freeze_embeddings:
        backbone.embeddings.requires_grad_(False)
    layers = next(m for name, m in backbone.named_modules() if name.endswith("layers"))  # the first stack
    if freeze_layers > len(layers):
        raise ConfigError(f"freeze_layers={freeze_layers} but the model's first stack has {len(layers)} layers")
    for layer in layers[:freeze_layers]:
        layer.requires_grad_(False)


def load_backbone(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Copy a pretrained backbone (``model.bert.*``, ``model.gpt.*`` or ``model.transformer.*`` of a checkpoint)."""
    prefix = f"model.{model.backbone}."
    weights = {k.removeprefix(prefix): v for k, v in state_dict.items() if k.startswith(prefix)}
    if not weights:
        raise ConfigError(f"the pretrained checkpoint holds no {model.backbone} weights ({prefix}*)")
    missing, unexpected = getattr(model, model.backbone).load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ConfigError(f"pretrained weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")


class FineTuningTask(BertliteTask):
    """A backbone with a head, fine-tuned on ``num_labels`` labels named ``label_names``.

    ``layerwise_lr_decay`` < 1 gives lower layers smaller learning rates; ``freeze_embeddings`` and
    ``freeze_layers`` (the lowest n layers) keep those parameters fixed. ``max_seq_len`` is the data's length,
    recorded in checkpoints for inference. Subclasses set ``self.metric`` and the evaluation metric objects
    ``scores("val")`` and ``scores("test")`` return.
    """

    metric: str  # the validation metric without its "val/" prefix, set by the subclass

    def __init__(self, model: ModelConfig | dict, num_labels: int, label_names: list[str],
                 layerwise_lr_decay: float = 1.0, freeze_embeddings: bool = False, freeze_layers: int = 0,
                 max_seq_len: int = 128, **kwargs):
        if len(label_names) != num_labels:
            raise ConfigError(f"{len(label_names)} label names for {num_labels} labels")
        super().__init__(model, **kwargs)
        self.label_names = list(label_names)
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        freeze_backbone(self.model, freeze_embeddings, freeze_layers)

    @property
    def monitor(self) -> str:
        return f"val/{self.metric}"

    def parameter_groups(self) -> list[dict]:
        hp = self.hparams
        depth = self.model_config.n_layers + getattr(self.model_config, "n_decoder_layers", 0)
        return parameter_groups(self.model, hp.weight_decay, hp.lr, hp.layerwise_lr_decay, depth, self.no_decay)

    def load_encoder(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Copy a pretrained backbone (``bert.*``, ``gpt.*`` or ``transformer.*`` of a pretraining checkpoint); a
        head in the checkpoint is not used."""
        load_backbone(self.model, state_dict)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))

    # --- what a subclass gives ----------------------------------------------------------------
    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def scores(self, stage: str) -> Metric:
        """The metric object that scores ``stage`` ("val" or "test")."""
        raise NotImplementedError

    def evaluate(self, batch: dict, loss_metric: MeanMetric, scores: Metric) -> None:
        """Add one evaluation batch to the stage's mean loss and scores."""
        raise NotImplementedError

    def log_scores(self, stage: str, loss: torch.Tensor, scores: Metric) -> None:
        """Log the epoch's mean ``loss`` and computed ``scores`` under ``stage/``."""
        raise NotImplementedError

    # --- training and evaluation loops --------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch), batch["labels"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.evaluate(batch, self.val_loss, self.scores("val"))

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.evaluate(batch, self.test_loss, self.scores("test"))

    def on_validation_epoch_end(self) -> None:
        self._end_epoch("val", self.val_loss)

    def on_test_epoch_end(self) -> None:
        self._end_epoch("test", self.test_loss)

    def _end_epoch(self, stage: str, loss: MeanMetric) -> None:
        scores = self.scores(stage)
        self.log_scores(stage, loss.compute(), scores)
        loss.reset()
        scores.reset()

    def extra_checkpoint_metadata(self) -> dict[str, Any]:
        return {"label_names": self.label_names, "metric": self.metric, "max_seq_len": self.hparams.max_seq_len}
