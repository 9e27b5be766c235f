"""Masked-language-model pretraining as a LightningModule."""

from __future__ import annotations

import torch
from torchmetrics import MeanMetric

from bertlite.models.encoder import BertForMaskedLM
from bertlite.tasks.base import BertliteTask


class MaskedLMTask(BertliteTask):
    """Predict the masked tokens. Loss and logits exist only at the masked positions."""

    task_name = "mlm"

    def __init__(self, model: dict, **kwargs):
        super().__init__(model, **kwargs)
        self.val_loss = MeanMetric()
        self.val_acc = MeanMetric()

    def build_model(self, config) -> BertForMaskedLM:
        return BertForMaskedLM(config)

    def forward(self, batch: dict):
        return self.model(
            batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"),
            batch["mlm_positions"], batch["mlm_labels"],
        )

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self(batch).loss
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self(batch)
        n = batch["mlm_labels"].numel()
        correct = (out.logits.argmax(-1) == batch["mlm_labels"]).float().mean()
        # weight by the number of masked tokens so the epoch value is a per-token mean
        self.val_loss.update(out.loss, n)
        self.val_acc.update(correct, n)

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()
        self.log_dict({"val/loss": loss, "val/mlm_acc": self.val_acc.compute(), "val/ppl": torch.exp(loss)},
                      prog_bar=True, sync_dist=False)
        self.val_loss.reset()
        self.val_acc.reset()
