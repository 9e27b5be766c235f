"""LightningModules: one per training objective."""

from bertlite.tasks.pretraining import MaskedLMTask

__all__ = ["MaskedLMTask"]
