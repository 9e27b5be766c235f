"""Pretraining objectives as LightningModules: masked LM (BERT), causal LM (GPT), text infilling (seq2seq).

Each computes (loss, logits at the predicted positions, targets) for a batch; the shared code logs
train/loss, and val/loss, val/ppl and the accuracy of the predicted tokens over the fixed validation set.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import MeanMetric

from bertlite.models.decoder import GPTForCausalLM
from bertlite.models.encoder import BertForMaskedLM
from bertlite.models.seq2seq import TransformerForSeq2Seq
from bertlite.tasks.base import BertliteTask


class PretrainingTask(BertliteTask):
    accuracy_name = "val/acc"

    def __init__(self, model: dict, **kwargs):
        super().__init__(model, **kwargs)
        self.val_loss = MeanMetric()
        self.val_acc = MeanMetric()

    def compute(self, batch: dict) -> tuple[Tensor, Tensor, Tensor]:
        """-> (mean loss, logits (N, V) of the predicted positions, their targets (N,) with -100 to ignore)."""
        raise NotImplementedError

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self.compute(batch)[0]
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, logits, targets = self.compute(batch)
        valid = targets != -100
        n = valid.sum()
        correct = ((logits.argmax(-1) == targets) & valid).sum() / n.clamp(min=1)
        # weighted by the number of predicted tokens, so the epoch value is a per-token mean
        self.val_loss.update(loss, n)
        self.val_acc.update(correct, n)

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()
        self.log_dict({"val/loss": loss, self.accuracy_name: self.val_acc.compute(), "val/ppl": torch.exp(loss)},
                      prog_bar=True)
        self.val_loss.reset()
        self.val_acc.reset()


class MaskedLMTask(PretrainingTask):
    """Predict the masked tokens. Loss and logits exist only at the masked positions."""

    task_name, arch, accuracy_name = "mlm", "bert", "val/mlm_acc"

    def build_model(self, config) -> BertForMaskedLM:
        return BertForMaskedLM(config)

    def forward(self, batch: dict):
        return self.model(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"),
                          batch["mlm_positions"], batch["mlm_labels"])

    def compute(self, batch: dict) -> tuple[Tensor, Tensor, Tensor]:
        out = self(batch)
        return out.loss, out.logits, batch["mlm_labels"]


class CausalLMTask(PretrainingTask):
    """Predict every next token of the packed blocks."""

    task_name, arch = "clm", "gpt"

    def build_model(self, config) -> GPTForCausalLM:
        return GPTForCausalLM(config)

    def compute(self, batch: dict) -> tuple[Tensor, Tensor, Tensor]:
        loss, logits = self.model.loss(batch["input_ids"], batch.get("attention_mask"))
        return loss, logits[:, :-1].flatten(0, 1), batch["input_ids"][:, 1:].flatten()


class Seq2SeqTask(PretrainingTask):
    """Text infilling (BART): rebuild the original block from its span-masked copy."""

    task_name, arch = "seq2seq", "transformer"

    def build_model(self, config) -> TransformerForSeq2Seq:
        return TransformerForSeq2Seq(config)

    def compute(self, batch: dict) -> tuple[Tensor, Tensor, Tensor]:
        loss, logits = self.model.loss(batch["src_ids"], batch["tgt_ids"], batch["labels"], batch["src_mask"])
        return loss, logits.flatten(0, 1), batch["labels"].flatten()
