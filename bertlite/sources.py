"""Opening a model from wherever it is: the one place that tells bertlite's sources apart.

    read_checkpoint("runs/sst2/checkpoints/best.ckpt")  # a checkpoint file (bertlite.checkpoints)
    read_checkpoint("my-model/")                        # a model folder (bertlite.model_folder)
    read_checkpoint("hf:/path/to/hf_folder")            # a Hugging Face BERT, RoBERTa or ModernBERT folder

Each comes back as the same checkpoint dict (a ``bertlite`` section and a ``state_dict``), checked
the same way by ``checkpoints.check_checkpoint``. ``bertlite.load``, ``pretrained=``, ``init_from=``,
``ckpt_path=`` and ``bertlite-convert`` open their input here. The reader of each format sits a
layer below and knows nothing of the others; a new format (ONNX) is one more branch here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bertlite.checkpoints import check_checkpoint, read_checkpoint_file
from bertlite.errors import CheckpointError
from bertlite.interop import import_hf
from bertlite.model_folder import CONFIG, is_model_folder, read_model_folder

HF_PREFIX = "hf:"  # hf:<folder> names a Hugging Face folder (BERT, RoBERTa, ModernBERT), imported on the fly


def read_checkpoint(source: str | Path, expect_task: str | tuple[str, ...] | None = None,
                    trust: bool = False) -> dict[str, Any]:
    """The checkpoint dict of ``source``: a checkpoint file, a model folder or ``hf:<folder>``.

    A ``CheckpointError`` says what the source is when it is not a bertlite model of ``expect_task``
    (a task name or a tuple of them; None: any task). ``trust`` unpickles a checkpoint file fully,
    for the user's own files only."""
    if str(source).startswith(HF_PREFIX):
        checkpoint, report = import_hf(str(source)[len(HF_PREFIX):])
        report.log()
    elif Path(source).is_dir():
        checkpoint = _read_folder(source)
    else:
        return read_checkpoint_file(source, expect_task, trust)
    check_checkpoint(source, checkpoint, expect_task)
    return checkpoint


def _read_folder(folder: str | Path) -> dict[str, Any]:
    """A bertlite model folder; errors name it as the user spelt it (a trailing slash kept)."""
    if not is_model_folder(folder):
        has_config = (Path(folder) / CONFIG).is_file()
        hint = f"; for a Hugging Face folder give {HF_PREFIX}{folder}" if has_config else ""
        raise CheckpointError(f"{folder} is a folder but not a bertlite model folder (its config.json "
                              f"must have format: bertlite-model-folder){hint}")
    return read_model_folder(folder)
