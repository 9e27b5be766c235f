"""Reading bertlite checkpoints: one place that checks a file is a checkpoint, of the expected task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bertlite.atomic import write_atomically
from bertlite.errors import CheckpointError

TASK_HINTS = {
    "mlm": "a masked-LM pretraining checkpoint: fine-tune it with bertlite-finetune pretrained=<it>, "
           "or use bertlite.load(<it>).fill_mask(...)",
    "clm": "a causal-LM (GPT) pretraining checkpoint: generate with bertlite-generate or fine-tune it",
    "seq2seq": "a seq2seq (encoder-decoder) pretraining checkpoint: generate with bertlite-generate or fine-tune it",
    "encoder": "an encoder-only checkpoint (no head): fine-tune it with bertlite-finetune pretrained=<it>, "
               "or embed texts with bertlite.load(<it>).encode(...)",
    "classification": "a classification checkpoint: use bertlite.load(<it>).predict(...) or bertlite-predict",
}


def read_checkpoint(path: str | Path, expect_task: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """torch.load a Lightning checkpoint and check its ``bertlite`` section; errors say what the file is.
    ``hf:<folder>`` imports a Hugging Face BERT folder instead (bertlite/interop), checked the same way."""
    if str(path).startswith("hf:"):
        from bertlite.interop import import_hf_bert

        checkpoint, report = import_hf_bert(str(path)[3:])
        report.log()
        _check_task(path, checkpoint["bertlite"]["task"], expect_task)
        return checkpoint
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupted?): "
                              f"{type(exc).__name__}: {str(exc)[:200]}") from exc
    if not isinstance(checkpoint, dict) or "bertlite" not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a bertlite checkpoint (no model config and tokenizer inside)")
    _check_task(path, checkpoint["bertlite"].get("task"), expect_task)
    return checkpoint


def _check_task(path, task: str | None, expect_task: str | tuple[str, ...] | None) -> None:
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
