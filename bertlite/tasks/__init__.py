"""LightningModules: one per training objective."""

from bertlite.tasks.classification import ClassificationTask
from bertlite.tasks.pretraining import CausalLMTask, MaskedLMTask, Seq2SeqTask
from bertlite.tasks.token_classification import TokenClassificationTask

PRETRAINING_TASKS = {t.task_name: t for t in (MaskedLMTask, CausalLMTask, Seq2SeqTask)}

__all__ = ["PRETRAINING_TASKS", "CausalLMTask", "ClassificationTask", "MaskedLMTask", "Seq2SeqTask",
           "TokenClassificationTask"]
