"""LightningModules: one per training objective."""

from bertlite.tasks.classification import ClassificationTask
from bertlite.tasks.pretraining import MaskedLMTask

__all__ = ["ClassificationTask", "MaskedLMTask"]
