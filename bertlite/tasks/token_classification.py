"""Token classification (named-entity recognition) as a LightningModule: a tag for every word, scored per entity."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from bertlite.data.token_classification import IGNORE
from bertlite.errors import ConfigError
from bertlite.models.encoder import BertForTokenClassification
from bertlite.tasks.base import BertliteTask
from bertlite.tasks.classification import freeze_backbone, load_backbone
from bertlite.tasks.entity_metrics import EntityScores
from bertlite.tasks.optim import parameter_groups

METRICS = ("entity_f1", "entity_precision", "entity_recall")


def resolve_metric(metric: str, num_labels: int | None = None, **task_options) -> str:
    """'auto' and 'f1' mean entity-level micro F1 (conlleval's measure); precision and recall may be chosen too."""
    metric = {"auto": "entity_f1", "f1": "entity_f1", "precision": "entity_precision",
              "recall": "entity_recall"}.get(metric, metric)
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r} for token classification; choose auto or one of "
                          f"{', '.join(METRICS)}")
    return metric


class TokenClassificationTask(BertliteTask):
    """Fine-tune a BERT encoder with a per-token head: dropout and a linear layer on every hidden state, trained
    with cross-entropy on the labelled pieces (-100 elsewhere). Validation and test report entity-level precision,
    recall and F1 (micro over all entities, and per type), read at the first piece of each word; windows of long
    sentences are put back together first, and words without pieces count as tagged O."""

    task_name = "token_classification"
    resolve_metric = staticmethod(resolve_metric)  # data.metric -> the metric to monitor (bertlite-finetune)

    def __init__(self, model: dict, num_labels: int, label_names: list[str], metric: str = "entity_f1",
                 classifier_dropout: float = 0.1, layerwise_lr_decay: float = 1.0, freeze_embeddings: bool = False,
                 freeze_layers: int = 0, max_seq_len: int = 128, **kwargs):
        if len(label_names) != num_labels:
            raise ConfigError(f"{len(label_names)} label names for {num_labels} labels")
        if model.get("arch") != "bert":
            raise ConfigError(f"task=token_classification tags tokens with a BERT encoder; model.arch="
                              f"{model.get('arch')!r} is not one (choose model=bert-mini, say, or a BERT checkpoint)")
        super().__init__(model, **kwargs)
        self.label_names, self.metric = list(label_names), resolve_metric(metric)
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_scores, self.test_scores = EntityScores(self.label_names), EntityScores(self.label_names)
        freeze_backbone(self.model, freeze_embeddings, freeze_layers)

    def build_model(self, config):
        return BertForTokenClassification(config, self.hparams.num_labels, self.hparams.classifier_dropout)

    @property
    def monitor(self) -> str:
        return f"val/{self.metric}"

    def parameter_groups(self) -> list[dict]:
        hp = self.hparams
        return parameter_groups(self.model, hp.weight_decay, hp.lr, hp.layerwise_lr_decay, self.model_config.n_layers,
                                self.no_decay)

    def load_encoder(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Copy a pretrained encoder (``bert.*``); a head in the checkpoint is not used."""
        load_backbone(self.model, state_dict)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch), batch["labels"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _evaluate(self, batch: dict, loss_metric: MeanMetric, scores: EntityScores) -> None:
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

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, self.val_loss, self.val_scores)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, self.test_loss, self.test_scores)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val", self.val_loss, self.val_scores)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test", self.test_loss, self.test_scores)

    def _log_epoch(self, stage: str, loss: MeanMetric, scores: EntityScores) -> None:
        values = {f"{stage}/loss": loss.compute(), **{f"{stage}/{k}": v for k, v in scores.compute().items()}}
        self.log(f"{stage}/{self.metric}", values.pop(f"{stage}/{self.metric}"), prog_bar=True)
        self.log_dict(values)
        loss.reset()
        scores.reset()

    def extra_checkpoint_metadata(self) -> dict[str, Any]:
        return {"label_names": self.label_names, "metric": self.metric, "max_seq_len": self.hparams.max_seq_len}
