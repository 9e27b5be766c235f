"""Reading and writing bertlite checkpoint files, and the one check that a checkpoint of any format
is sound and of the expected task. Telling the formats apart (a file, a model folder, ``hf:<folder>``)
is ``bertlite.sources``'s job.

Checkpoints come from strangers, and unpickling can run code. Every file is opened with
``torch.load(weights_only=True)``: tensors and plain data (dicts, lists, strings, numbers) only. A file that holds
anything else is refused before any of it runs; ``trust=True`` (``trust_checkpoint=true`` on the command line)
opens it with the full unpickler, for the user's own files written by older code.
"""

from __future__ import annotations

import io
import json
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from bertlite.atomic import write_atomically
from bertlite.data.special_tokens import SpecialTokens
from bertlite.errors import CheckpointError, ConfigError
from bertlite.models.config import config_from_dict, value_type_problem

TASK_HINTS = {
    "mlm": "a masked-LM pretraining checkpoint: fine-tune it with bertlite-finetune pretrained=<it>, "
           "or use bertlite.load(<it>).fill_mask(...)",
    "clm": "a causal-LM (GPT) pretraining checkpoint: generate with bertlite-generate or fine-tune it",
    "seq2seq": "a seq2seq (encoder-decoder) pretraining checkpoint: generate with bertlite-generate or fine-tune it",
    "encoder": "an encoder-only checkpoint (no head): fine-tune it with bertlite-finetune pretrained=<it>, "
               "or embed texts with bertlite.load(<it>).encode(...)",
    "classification": "a classification checkpoint: use bertlite.load(<it>).predict(...) or bertlite-predict",
    "token_classification": "a token classification (NER) checkpoint: use bertlite.load(<it>).predict(...) "
                            "or bertlite-predict",
}
LABELLED_TASKS = ("classification", "token_classification")  # checkpoints that carry their label names


TRUST_HINT = ("if the file is your own (written by an older bertlite or your own code), open it with "
              "trust_checkpoint=true (Python: bertlite.load(path, trust=True)); never for a file from elsewhere")


def load_torch_file(path: str | Path, trust: bool = False) -> Any:
    """torch.load on the CPU, with ``weights_only=True`` unless ``trust``. A refused or unreadable file is one
    ``CheckpointError`` that names the file and, for a refused one, what it refers to beyond plain data."""
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as exc:
        foreign = None if trust else _foreign_global(Path(path), str(exc))
        if foreign:
            raise CheckpointError(f"{path} holds a reference to {foreign}, beyond the tensors and plain data a "
                                  f"checkpoint needs: unpickling it could run code from the file, so it was not "
                                  f"opened; {TRUST_HINT}") from None
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupted?): "
                              f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}") from None


SAFE_MODULES = ("torch", "collections", "builtins", "_codecs", "numpy")  # what torch's safe loader may refer to


def _foreign_global(path: Path, message: str) -> str | None:
    """The first ``module.name`` a refused pickle refers to outside torch's plain types. From torch's message
    when it names one, else from the pickle's opcodes: ``pickletools`` reads them without executing any."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return found.group(1)
    try:
        with zipfile.ZipFile(path) as archive:  # torch's format: the pickle is <name>/data.pkl
            data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    except (zipfile.BadZipFile, StopIteration, OSError):
        data = path.read_bytes()  # the legacy format: pickles one after another
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            if isinstance(arg, str):
                strings = [*strings[-1:], arg]
            name = arg.replace(" ", ".") if op.name == "GLOBAL" else (
                ".".join(strings) if op.name == "STACK_GLOBAL" and len(strings) == 2 else None)
            if name and not name.startswith(SAFE_MODULES):
                return name
    except Exception:  # not a pickle at all: garbage, or a truncated file
        return None
    return None


def read_checkpoint_file(path: str | Path, expect_task: str | tuple[str, ...] | None = None,
                         trust: bool = False) -> dict[str, Any]:
    """A bertlite checkpoint file, loaded safely and checked by ``check_checkpoint``; errors say what
    the file is. Model folders and ``hf:<folder>`` are opened by ``bertlite.sources.read_checkpoint``."""
    path = Path(path)
    if path.is_dir():  # only a direct caller gets here: bertlite.sources opens folders itself
        raise CheckpointError(f"{path} is a folder, not a checkpoint file; read a model folder (or "
                              "hf:<folder>) with bertlite.sources.read_checkpoint and pass the dict it returns")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    checkpoint = load_torch_file(path, trust)
    if not isinstance(checkpoint, dict) or "bertlite" not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a bertlite checkpoint (no model config and tokenizer inside)")
    check_checkpoint(path, checkpoint, expect_task)
    return checkpoint


def check_checkpoint(path: str | Path, checkpoint: dict[str, Any],
                     expect_task: str | tuple[str, ...] | None = None) -> None:
    """What every reader checks, whatever the format: a sound ``bertlite`` section, of the expected
    task. ``path`` names the source in the errors."""
    check_section(path, checkpoint)
    check_task(path, checkpoint["bertlite"]["task"], expect_task)


SECTION_FIELDS = {"task": str, "model_config": dict, "tokenizer": str}  # what every bertlite section holds
# what some sections hold, and the loaders read as numbers or names (null: not recorded)
OPTIONAL_FIELDS = {"trained_seq_len": int, "max_seq_len": int, "pooling": str, "metric": str, "problem_type": str,
                   "threshold": float}


def check_section(path, checkpoint: dict[str, Any]) -> None:
    """Every field the loaders read is present and of the right kind: a ``CheckpointError`` naming the field
    otherwise, never a KeyError deep inside."""
    section = checkpoint["bertlite"]
    damaged = f"{path} is damaged or was not written by bertlite"
    if not isinstance(section, dict):
        raise CheckpointError(f"{damaged}: its bertlite section is a {type(section).__name__}, not a dict")
    for field, kind in SECTION_FIELDS.items():
        if field not in section:
            raise CheckpointError(f"{damaged}: its bertlite section has no {field!r} field")
        if not isinstance(section[field], kind):
            raise CheckpointError(f"{damaged}: bertlite.{field} is a {type(section[field]).__name__}, "
                                  f"not a {kind.__name__}")
    for field, kind in OPTIONAL_FIELDS.items():
        problem = section.get(field) is not None and value_type_problem(section[field], kind)
        if problem:
            raise CheckpointError(f"{damaged}: bertlite.{field}={section[field]!r:.80} {problem}")
    if section["task"] not in TASK_HINTS:
        raise CheckpointError(f"{damaged}: bertlite.task is {section['task']!r}; known: {', '.join(TASK_HINTS)}")
    # the values are checked against their types here, once for every reader: they are data, never config code
    source = Path(path) / "config.json" if Path(path).is_dir() else path  # a model folder's values are in config.json
    config_from_dict(section["model_config"], source=str(source))
    try:
        json.loads(section["tokenizer"])
    except ValueError:
        raise CheckpointError(f"{damaged}: bertlite.tokenizer is not a tokenizer's JSON") from None
    if section.get("special_tokens") is not None:  # the roles of its special tokens; absent in older checkpoints
        try:
            SpecialTokens.from_dict(section["special_tokens"], f"{damaged}: bertlite.special_tokens")
        except ConfigError as exc:
            raise CheckpointError(str(exc)[:300]) from None
    labels = section.get("label_names")
    if section["task"] in LABELLED_TASKS and (
            not isinstance(labels, (list, tuple)) or not labels or not all(isinstance(x, str) for x in labels)):
        raise CheckpointError(f"{damaged}: bertlite.label_names must be a non-empty list of strings in a "
                              f"{section['task']} checkpoint, found {labels!r}"[:300])
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{damaged}: its state_dict is not a dict of tensors")


def check_task(path, task: str | None, expect_task: str | tuple[str, ...] | None) -> None:
    expected = (expect_task,) if isinstance(expect_task, str) else expect_task
    if expected and task not in expected:
        raise CheckpointError(f"{path} is {TASK_HINTS.get(task, f'a {task!r} checkpoint')}; "
                              f"this needs a {' or '.join(expected)} checkpoint")


def model_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The network's own weights (the LightningModule's ``model.`` prefix removed)."""
    return {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """torch.save, atomically: a crash mid-write leaves the previous file whole."""
    write_atomically(path, lambda f: torch.save(checkpoint, f))
