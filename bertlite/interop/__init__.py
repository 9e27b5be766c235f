"""Interoperability with the Hugging Face ecosystem: import released BERT, RoBERTa and ModernBERT folders, export
bertlite models (``architectures.py`` lists what is read and written)."""

from bertlite.interop.hf_export import EXPORTABLE_TASKS, export_hf, export_hf_bert
from bertlite.interop.hf_import import ImportReport, import_hf, import_hf_bert

__all__ = ["EXPORTABLE_TASKS", "export_hf", "export_hf_bert", "import_hf", "import_hf_bert", "ImportReport"]
