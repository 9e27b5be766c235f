"""Interoperability with the Hugging Face ecosystem: import released BERT folders, export bertlite models."""

from bertlite.interop.hf_export import EXPORTABLE_TASKS, export_hf_bert
from bertlite.interop.hf_import import ImportReport, import_hf_bert

__all__ = ["EXPORTABLE_TASKS", "export_hf_bert", "import_hf_bert", "ImportReport"]
