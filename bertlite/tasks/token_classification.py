"""Token classification (named-entity recognition) as a LightningModule: a tag for every word, scored per entity."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from bertlite.data.token_classification import IGNORE
from bertlite.errors import ConfigError
from bertlite.models.config import ModelConfig
from bertlite.models.encoder import BertForTokenClassification
from bertlite.tasks.entity_metrics import EntityScores
from bertlite.tasks.finetuning import FineTuningTask

METRICS = ("entity_f1", "entity_precision", "entity_recall")


def resolve_metric(metric: str, num_labels: int | None = None, **task_options) -> str:
    """'auto' and 'f1' mean entity-level micro F1 (conlleval's measure); precision and recall may be chosen too."""
    metric = {"auto": "entity_f1", "f1": "entity_f1", "precision": "entity_precision",
              "recall": "entity_recall"}.get(metric, metric)
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r} for token classification; choose auto or one of "
                          f"{', '.join(METRICS)}")
    return metric


class TokenClassificationTask(FineTuningTask):
    """Fine-tune a BERT encoder with a per-token head: dropout and a linear layer on every hidden state, trained
    with cross-entropy on the labelled pieces (-100 elsewhere). Validation and test report entity-level precision,
    recall and F1 (micro over all entities, and per type), read at the first piece of each word; windows of long
    sentences are put back together first, and words without pieces count as tagged O. The options shared with
    every fine-tuning task are FineTuningTask's."""

    task_name = "token_classification"
    resolve_metric = staticmethod(resolve_metric)  # data.metric -> the metric to monitor (bertlite-finetune)

    def __init__(self, model: ModelConfig | dict, num_labels: int, label_names: list[str],
                 metric: str = "entity_f1", classifier_dropout: float = 0.1, **kwargs):
        super().__init__(model, num_labels, label_names, **kwargs)
        self.metric = resolve_metric(metric)
        self.val_scores = EntityScores(self.label_names)
        self.test_scores = EntityScores(self.label_names)

    def build_model(self, config):
        if config.arch != "bert":
            raise ConfigError(f"task=token_classification tags tokens with a BERT encoder; model.arch="
                              f"{config.arch!r} is not one (choose model=bert-mini, say, or a BERT checkpoint)")
        return BertForTokenClassification(config, self.hparams.num_labels, self.hparams.classifier_dropout)

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)

    def scores(self, stage: str) -> EntityScores:
        return self.val_scores if stage == "val" else self.test_scores

    def evaluate(self, batch: dict, loss_metric: MeanMetric, scores: EntityScores) -> None:
        logits = self(batch)
        labels = batch["labels"]
        labelled = (labels != IGNORE).sum()
        if labelled:  # a batch of windows that label no word (only words without pieces) has no loss
            loss_metric.update(self.loss(logits, labels), labelled)
        words = batch["word_starts"].bool() & (labels != IGNORE)
        if "sentence" not in batch:  # rows that are whole sentences
            scores.update(logits.argmax(-1), labels, words)
            return
        # windows of long sentences: kept per word and put back together when the metric is computed
        scores.update(logits.argmax(-1), labels, words, batch["sentence"], batch["word_index"])
        scores.add_unseen(batch["sentence"], batch["unseen_words"], batch["unseen_tags"])

    def log_scores(self, stage: str, loss: torch.Tensor, scores: EntityScores) -> None:
        """The monitored metric on the progress bar; the loss and the per-type scores in the logs only."""
        values = {f"{stage}/loss": loss, **{f"{stage}/{k}": v for k, v in scores.compute().items()}}
        self.log(f"{stage}/{self.metric}", values.pop(f"{stage}/{self.metric}"), prog_bar=True)
        self.log_dict(values)
