"""Pretraining objectives as LightningModules: masked LM (BERT), causal LM (GPT), text infilling (seq2seq).

Each computes (loss, logits at the predicted positions, targets) for a batch; the shared code logs
train/loss, and val/loss, val/ppl and the accuracy of the predicted tokens over the fixed validation set.

The training loss is a mean over predicted tokens, and an optimizer step is weighted by token too: with masked
LM the number of masked tokens varies from micro-batch to micro-batch and from rank to rank, and a mean of
per-micro-batch means would weight a token in a sparsely masked batch more than one in a dense batch. Each
micro-batch back-propagates its *sum*; before the step the gradients are divided by the masked-token count of
the whole step (summed over the accumulated micro-batches and all-reduced over the ranks), so the step is
exactly that of one big batch. With one micro-batch on one device that is the mean loss itself, and the extra
pass over the gradients (a few percent of a bert-base step on a CPU) is skipped.
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
        self.step_tokens: Tensor | None = None  # predicted tokens in the optimizer step so far, on this rank
        self.val_loss = MeanMetric()
        self.val_acc = MeanMetric()

    def compute(self, batch: dict) -> tuple[Tensor, Tensor, Tensor]:
        """-> (mean loss, logits (N, V) of the predicted positions, their targets (N,) with -100 to ignore)."""
        raise NotImplementedError

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, _, targets = self.compute(batch)
        self.log("train/loss", loss, prog_bar=True)
        trainer = self._trainer
        if trainer is None or (trainer.accumulate_grad_batches == 1 and trainer.world_size == 1):
            return loss  # one micro-batch on one device: its mean is already the step's per-token mean
        n = (targets != -100).sum()
        self.step_tokens = self.step_tokens + n if self.step_tokens is not None else n
        return loss * n  # the sum over this micro-batch's tokens; on_before_optimizer_step divides by the step's

    def on_before_optimizer_step(self, optimizer) -> None:
        """Lightning divided each micro-batch's loss by accumulate_grad_batches and DDP/FSDP averaged the
        gradients over the ranks: undo both, and divide by the predicted tokens of the whole step instead."""
        if self.step_tokens is None:
            return
        trainer = self.trainer
        total = trainer.strategy.reduce(self.step_tokens.float(), reduce_op="sum").clamp(min=1)
        scale = trainer.accumulate_grad_batches * trainer.world_size / total
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, scale)
        self.step_tokens = None

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
