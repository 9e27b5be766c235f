"""Sequence classification and regression (fine-tuning) as a LightningModule, with GLUE's metric conventions.

One head, three losses (``problem_type``, as in Hugging Face's BertForSequenceClassification):
- single_label: softmax over the classes, cross-entropy;
- multi_label: one sigmoid per class, binary cross-entropy; a class is predicted when its probability reaches
  ``threshold``;
- regression: one output, mean squared error; Pearson and Spearman correlation (GLUE's STS-B).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import (Accuracy, F1Score, MatthewsCorrCoef, MeanMetric, MeanSquaredError, MetricCollection,
                          PearsonCorrCoef, SpearmanCorrCoef)
from torchmetrics.classification import MultilabelExactMatch, MultilabelF1Score

from bertlite.errors import ConfigError
from bertlite.models.config import ModelConfig
from bertlite.models.registry import build_classifier
from bertlite.tasks.finetuning import FineTuningTask

# the metrics each problem type can monitor (the callbacks keep the checkpoint where it is highest)
METRICS = {"single_label": ("acc", "f1", "mcc", "macro_f1"), "multi_label": ("micro_f1", "macro_f1", "exact_match"),
           "regression": ("pearson", "spearman")}
AUTO_METRIC = {"multi_label": "micro_f1", "regression": "pearson"}


def resolve_metric(metric: str, num_labels: int, problem_type: str = "single_label") -> str:
    """'auto': accuracy (acc) for two classes, macro-F1 for more (GLUE: F1 for MRPC, Matthews correlation for
    CoLA); micro-F1 for multi-label; Pearson correlation for regression."""
    if metric == "auto":
        return AUTO_METRIC.get(problem_type) or ("acc" if num_labels == 2 else "macro_f1")
    metric = {"accuracy": "acc"}.get(metric, metric)
    if metric not in METRICS[problem_type]:
        raise ConfigError(f"metric {metric!r} does not apply to {problem_type} data; choose auto or one of "
                          f"{', '.join(METRICS[problem_type])}")
    if metric == "f1" and num_labels != 2:
        raise ConfigError("metric f1 is the binary F1 of label 1; with more than two labels use macro_f1")
    return metric


def build_metrics(num_labels: int, problem_type: str = "single_label", threshold: float = 0.5) -> MetricCollection:
    if problem_type == "regression":
        return MetricCollection({"pearson": PearsonCorrCoef(), "spearman": SpearmanCorrCoef(),
                                 "mse": MeanSquaredError()})
    if problem_type == "multi_label":  # predictions are probabilities, a class counts from ``threshold``
        return MetricCollection({
            "micro_f1": MultilabelF1Score(num_labels, threshold=threshold, average="micro"),
            "macro_f1": MultilabelF1Score(num_labels, threshold=threshold, average="macro"),
            "exact_match": MultilabelExactMatch(num_labels, threshold=threshold)})  # the whole set right
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


class ClassificationTask(FineTuningTask):
    """Fine-tune a backbone with a pooled classification head (one class, a set of classes or a number per text;
    the options shared with every fine-tuning task are FineTuningTask's)."""

    task_name = "classification"
    resolve_metric = staticmethod(resolve_metric)  # data.metric -> the metric to monitor (bertlite-finetune)

    def __init__(self, model: ModelConfig | dict, num_labels: int, label_names: list[str], metric: str = "auto",
                 pooling: str = "auto", classifier_dropout: float = 0.1,
                 class_weights: list[float] | None = None, problem_type: str = "single_label",
                 threshold: float = 0.5, **kwargs):
        if problem_type not in METRICS:
            raise ConfigError(f"problem_type={problem_type!r}: choose one of {', '.join(METRICS)}")
        if class_weights is not None and problem_type != "single_label":
            raise ConfigError(f"task.class_weights weigh the classes of single-label data; this is {problem_type}")
        if not 0 < threshold < 1:
            raise ConfigError(f"task.threshold={threshold}: a probability between 0 and 1")
        if class_weights is not None and (isinstance(class_weights, str) or len(class_weights) != num_labels):
            raise ConfigError(f"class_weights={class_weights!r}: give one weight per label ({num_labels})")
        super().__init__(model, num_labels, label_names, **kwargs)
        # the training loss weighs each example by its class (task.class_weights); evaluation losses do not
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weights, persistent=False)
        self.problem_type = problem_type
        self.metric = resolve_metric(metric, num_labels, problem_type)
        self.val_metrics = build_metrics(num_labels, problem_type, threshold).clone(prefix="val/")
        self.test_metrics = build_metrics(num_labels, problem_type, threshold).clone(prefix="test/")

    def build_model(self, config):
        hp = self.hparams
        return build_classifier(config, hp.num_labels, hp.pooling, hp.classifier_dropout)

    def load_encoder(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Copy a pretrained backbone (``bert.*``, ``gpt.*`` or ``transformer.*`` of a pretraining checkpoint)."""
        super().load_encoder(state_dict)
        pooler = {k.removeprefix("model.pooler.dense."): v for k, v in state_dict.items()
                  if k.startswith("model.pooler.dense.")}
        if pooler and self.model.pooling == "cls":  # an HF BertModel's pretrained pooler starts the head, as in HF
            self.model.head.dense.load_state_dict(pooler)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, weighted: bool = True) -> torch.Tensor:
        """Single-label: cross-entropy, weighted by class when class_weights are set (sum_i w[y_i] * CE_i /
        sum_i w[y_i]); multi-label: binary cross-entropy of each (row, label); regression: squared error."""
        logits = logits.float()
        if self.problem_type == "regression":
            return F.mse_loss(logits.squeeze(-1), labels.float())
        if self.problem_type == "multi_label":
            return F.binary_cross_entropy_with_logits(logits, labels.float())
        return F.cross_entropy(logits, labels, weight=self.class_weights if weighted else None)

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        """What the metrics compare with the labels: class indices, per-label probabilities or numbers."""
        logits = logits.float()
        if self.problem_type == "regression":
            return logits.squeeze(-1)
        if self.problem_type == "multi_label":
            return logits.sigmoid()
        return logits.argmax(-1)

    def scores(self, stage: str) -> MetricCollection:
        return self.val_metrics if stage == "val" else self.test_metrics

    def evaluate(self, batch: dict, loss_metric: MeanMetric, scores: MetricCollection) -> None:
        logits, labels = self(batch), batch["labels"]
        loss_metric.update(self.loss(logits, labels, weighted=False), labels.shape[0])
        scores.update(self.predictions(logits), labels.long() if self.problem_type == "multi_label" else labels)

    def log_scores(self, stage: str, loss: torch.Tensor, scores: MetricCollection) -> None:
        self.log_dict({f"{stage}/loss": loss, **scores.compute()}, prog_bar=True)

    def extra_checkpoint_metadata(self) -> dict[str, Any]:
        return {**super().extra_checkpoint_metadata(), "pooling": self.model.pooling,
                "problem_type": self.problem_type, "threshold": self.hparams.threshold}
