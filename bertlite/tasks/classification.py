"""Sequence classification (fine-tuning) as a LightningModule, with GLUE's metric conventions."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import Accuracy, F1Score, MatthewsCorrCoef, MeanMetric, MetricCollection

from bertlite.errors import ConfigError
from bertlite.models.registry import build_classifier
from bertlite.tasks.base import BertliteTask
from bertlite.tasks.optim import parameter_groups

METRICS = ("acc", "f1", "mcc", "macro_f1")


def resolve_metric(metric: str, num_labels: int) -> str:
    """'auto': accuracy (acc) for two classes, macro-F1 for more (GLUE: F1 for MRPC, Matthews correlation for CoLA)."""
    if metric == "auto":
        return "acc" if num_labels == 2 else "macro_f1"
    metric = {"accuracy": "acc"}.get(metric, metric)
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; choose auto or one of {', '.join(METRICS)}")
    if metric == "f1" and num_labels != 2:
        raise ConfigError("metric f1 is the binary F1 of label 1; with more than two labels use macro_f1")
    return metric


def build_metrics(num_labels: int) -> MetricCollection:
    kind = "binary" if num_labels == 2 else "multiclass"
    metrics = {"acc": Accuracy(task="multiclass", num_classes=num_labels),
               "mcc": MatthewsCorrCoef(task=kind, num_classes=num_labels),
               "macro_f1": F1Score(task="multiclass", num_classes=num_labels, average="macro")}
    if num_labels == 2:
        metrics["f1"] = F1Score(task="binary")
    return MetricCollection(metrics)


def class_weights(setting, counts: dict[str, int], label_names: list[str]) -> list[float] | None:
    """``task.class_weights``: null (every class alike), ``auto`` (inverse class frequency, n / (k * n_c), as
    scikit-learn's "balanced": a class with half the average count weighs 2) or a list, one weight per label in
    label order. ``counts``: the training examples of each label."""
    if setting is None:
        return None
    if setting == "auto":
        total, k = sum(counts.values()), len(label_names)
        return [total / (k * counts[name]) for name in label_names]
    if isinstance(setting, str) or len(setting) != len(label_names) or any(float(w) <= 0 for w in setting):
        raise ConfigError(f"task.class_weights={setting!r}: give auto, or {len(label_names)} positive weights, one "
                          f"per label in this order: {label_names}")
    return [float(w) for w in setting]


def freeze_backbone(model: torch.nn.Module, freeze_embeddings: bool, freeze_layers: int) -> None:
    """Keep the embeddings and / or the lowest ``freeze_layers`` layers of the model's first stack fixed."""
    backbone = getattr(model, model.backbone)
    if freeze_embeddings:
        backbone.embeddings.requires_grad_(False)
    layers = [m for name, m in backbone.named_modules() if name.endswith("layers")][0]  # the first stack
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


class ClassificationTask(BertliteTask):
    """Fine-tune an encoder with a pooled classification head.

    layerwise_lr_decay < 1 gives lower layers smaller learning rates; freeze_embeddings and
    freeze_layers (the lowest n layers) keep those parameters fixed.
    """

    task_name = "classification"
    resolve_metric = staticmethod(resolve_metric)  # data.metric -> the metric to monitor (bertlite-finetune)

    def __init__(self, model: dict, num_labels: int, label_names: list[str], metric: str = "accuracy",
                 pooling: str = "auto", classifier_dropout: float = 0.1, layerwise_lr_decay: float = 1.0,
                 freeze_embeddings: bool = False, freeze_layers: int = 0, max_seq_len: int = 128,
                 class_weights: list[float] | None = None, **kwargs):
        if len(label_names) != num_labels:
            raise ConfigError(f"{len(label_names)} label names for {num_labels} labels")
        if class_weights is not None and (isinstance(class_weights, str) or len(class_weights) != num_labels):
            raise ConfigError(f"class_weights={class_weights!r}: give one weight per label ({num_labels})")
        super().__init__(model, **kwargs)
        # the training loss weighs each example by its class (task.class_weights); evaluation losses do not
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weights, persistent=False)
        self.label_names, self.metric = list(label_names), resolve_metric(metric, num_labels)
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_metrics = build_metrics(num_labels).clone(prefix="val/")
        self.test_metrics = build_metrics(num_labels).clone(prefix="test/")
        freeze_backbone(self.model, freeze_embeddings, freeze_layers)

    def build_model(self, config):
        hp = self.hparams
        return build_classifier(config, hp.num_labels, hp.pooling, hp.classifier_dropout)

    @property
    def monitor(self) -> str:
        return f"val/{self.metric}"

    def parameter_groups(self) -> list[dict]:
        hp = self.hparams
        depth = self.model_config.n_layers + getattr(self.model_config, "n_decoder_layers", 0)
        return parameter_groups(self.model, hp.weight_decay, hp.lr, hp.layerwise_lr_decay, depth, self.no_decay)

    def load_encoder(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Copy a pretrained backbone (``bert.*``, ``gpt.*`` or ``transformer.*`` of a pretraining checkpoint)."""
        load_backbone(self.model, state_dict)
        pooler = {k.removeprefix("model.pooler.dense."): v for k, v in state_dict.items()
                  if k.startswith("model.pooler.dense.")}
        if pooler and self.model.pooling == "cls":  # an HF BertModel's pretrained pooler starts the head, as in HF
            self.model.head.dense.load_state_dict(pooler)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy, weighted by class when class_weights are set: sum_i w[y_i] * CE_i / sum_i w[y_i]."""
        return F.cross_entropy(logits.float(), labels, weight=self.class_weights)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch), batch["labels"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _evaluate(self, batch: dict, loss_metric: MeanMetric, metrics: MetricCollection) -> None:
        logits = self(batch)
        loss_metric.update(F.cross_entropy(logits, batch["labels"]), batch["labels"].numel())
        metrics.update(logits.argmax(-1), batch["labels"])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, self.val_loss, self.val_metrics)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, self.test_loss, self.test_metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val", self.val_loss, self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test", self.test_loss, self.test_metrics)

    def _log_epoch(self, stage: str, loss: MeanMetric, metrics: MetricCollection) -> None:
        values = {f"{stage}/loss": loss.compute(), **metrics.compute()}
        self.log_dict(values, prog_bar=True)
        loss.reset()
        metrics.reset()

    def extra_checkpoint_metadata(self) -> dict[str, Any]:
        return {"label_names": self.label_names, "metric": self.metric, "pooling": self.model.pooling,
                "max_seq_len": self.hparams.max_seq_len}
