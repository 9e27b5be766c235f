"""A model folder: any bertlite model, shared without pickle.

    config.json        the checkpoint's bertlite section: task, model config, label names, pooling, max length
    model.safetensors  the network's weights (safetensors: reading one runs no code)
    tokenizer.json     the tokenizer

It holds what a Lightning checkpoint's ``bertlite`` section and ``state_dict`` hold, for every architecture
(BERT, GPT, encoder-decoder, ALiBi), so ``bertlite.load``, ``pretrained=`` and ``init_from=`` read either. The
optimizer state is not in it: a folder is for inference and for starting new runs, not for resuming one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from bertlite.atomic import write_folder_atomically
from bertlite.checkpoints import model_state
from bertlite.errors import CheckpointError

FORMAT = "bertlite-model-folder"
CONFIG, WEIGHTS, TOKENIZER = "config.json", "model.safetensors", "tokenizer.json"


def is_model_folder(path: str | Path) -> bool:
    config = Path(path) / CONFIG
    if not config.is_file():
        return False
    try:
        values = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, OSError, RecursionError):
        return False
    return isinstance(values, dict) and values.get("format") == FORMAT


def _not_a_model_folder(folder: Path) -> str | None:
    """Why ``folder`` is not a model folder that ``overwrite`` may replace (None: it is one)."""
    if is_model_folder(folder):
        return None
    return f'it is not a bertlite model folder (its {CONFIG} does not say "format": "{FORMAT}")'


def untie(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """safetensors stores each tensor once: a weight shared by two names (an MLM decoder tied to the embeddings)
    is kept under its first name, and the others are recorded as {name: the name it shares}."""
    weights: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride())
        if tensor.numel() and key in seen:
            tied[name] = seen[key]
        else:
            seen[key] = name
            weights[name] = tensor.detach().contiguous().clone()  # clone: no storage shared with another tensor
    return weights, tied


def save_model_folder(checkpoint: dict[str, Any], out: str | Path, overwrite: bool = False,
                      protect: tuple[str | Path, ...] = ()) -> Path:
    """Write a checkpoint dict (as any reader returns it) as a model folder, atomically. ``overwrite``
    replaces an existing model folder only (nothing else in it), never the current directory or a folder
    holding one of ``protect`` (the checkpoint being converted)."""
    from safetensors.torch import save_file

    meta = dict(checkpoint["bertlite"])
    tokenizer = meta.pop("tokenizer")
    weights, tied = untie(model_state(checkpoint))
    try:
        config = json.dumps({"format": FORMAT, **meta, "tied_weights": tied}, indent=2) + "\n"
    except TypeError as exc:
        raise CheckpointError(f"the checkpoint's bertlite section does not fit in JSON: {exc}") from None

    def fill(folder: Path) -> None:
        (folder / CONFIG).write_text(config)
        save_file(weights, str(folder / WEIGHTS), metadata={"format": "pt"})
        (folder / TOKENIZER).write_text(tokenizer)

    return write_folder_atomically(out, fill, overwrite, not_replaceable=_not_a_model_folder, protect=protect)


def read_model_folder(folder: str | Path) -> dict[str, Any]:
    """A model folder -> a checkpoint dict (``state_dict`` with the ``model.`` prefix, and a ``bertlite`` section).
    Whatever config.json holds, a malformed one is a ``CheckpointError`` naming the file and the field."""
    from safetensors.torch import load_file

    folder = Path(folder)
    for name in (CONFIG, WEIGHTS, TOKENIZER):
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder} is not a complete bertlite model folder: {name} is missing")
    try:
        meta = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        weights = load_file(str(folder / WEIGHTS))
        tokenizer = (folder / TOKENIZER).read_text(encoding="utf-8")
    except Exception as exc:
        raise CheckpointError(f"cannot read the model folder {folder} (truncated or corrupted?): "
                              f"{type(exc).__name__}: {str(exc)[:200]}") from None
    meta = dict(_checked_config(folder / CONFIG, meta))
    meta.pop("format")
    for name, source in meta.pop("tied_weights", {}).items():
        if source not in weights:
            raise CheckpointError(f"{folder / CONFIG}: tied weight {name} refers to {source}, absent from {WEIGHTS}")
        if name in weights:
            raise CheckpointError(f"{folder / CONFIG}: tied weight {name} is also stored in {WEIGHTS}; "
                                  "the folder is damaged: write it again with save_pretrained or bertlite-convert")
        weights[name] = weights[source]
    return {"state_dict": {f"model.{k}": v for k, v in weights.items()}, "bertlite": {**meta, "tokenizer": tokenizer}}


def _checked_config(path: Path, meta: Any) -> dict[str, Any]:
    """config.json's top level: a JSON object with bertlite's ``format`` and, if any, ``tied_weights`` as a
    {name: name} object. The fields it shares with a checkpoint are checked by ``checkpoints.check_section``."""
    damaged = f"{path} is damaged or was not written by bertlite"
    if not isinstance(meta, dict):
        raise CheckpointError(f"{damaged}: it holds a JSON {type(meta).__name__}, not an object")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f'{damaged}: its "format" is {meta.get("format")!r}, not "{FORMAT}"'[:300])
    tied = meta.get("tied_weights", {})
    if not isinstance(tied, dict) or not all(isinstance(v, str) for v in tied.values()):
        raise CheckpointError(f'{damaged}: its "tied_weights" must be an object of weight names '
                              f'({{"name": "the name it shares"}}), found {tied!r}'[:300])
    return meta
