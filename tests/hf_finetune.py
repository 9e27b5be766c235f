"""The end-to-end check every imported Hugging Face architecture passes: fine-tune from its folder, predict, export,
and get the same probabilities back from transformers."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.conftest import run_cli
from tests.test_cli_finetune import TINY_FINETUNE

TEXTS = ["the value was valid and correct .", "the name was wrong and lost ."]


def hf_probabilities(hf, tokenizer, texts: list[str], pad_id: int) -> torch.Tensor:
    """transformers' class probabilities for ``texts``, encoded by bertlite's tokenizer and right-padded."""
    ids = [tokenizer.encode(text).ids for text in texts]
    width = max(map(len, ids))
    input_ids = torch.tensor([row + [pad_id] * (width - len(row)) for row in ids])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])
    with torch.no_grad():
        return hf(input_ids=input_ids, attention_mask=mask).logits.softmax(-1)


def finetune_from_hf_then_export(hf_folder: Path, sentiment_csv, tmp_path: Path, hf_class: str, pad_id: int) -> None:
    """bertlite-finetune pretrained=hf:<hf_folder> trains and predicts; bertlite-convert to-hf of the result is an
    ``hf_class`` folder that gives the same probabilities in transformers (within 1e-5)."""
    import transformers

    import bertlite

    train, dev = sentiment_csv
    run_dir = tmp_path / "run"
    # random weights, not a pretrained model: they need a higher learning rate to learn the task in 60 steps
    args = [arg for arg in TINY_FINETUNE if not arg.startswith("task.lr=")] + ["task.lr=5e-3"]
    result = run_cli("bertlite.finetune", *args, f"data.train_file={train}", f"data.validation_file={dev}",
                     f"pretrained=hf:{hf_folder}", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["validation"]["val/acc"] > 0.8
    classifier = bertlite.load(run_dir / "checkpoints" / "best.ckpt")
    assert classifier.predict(TEXTS) == ["pos", "neg"]

    out = tmp_path / "exported"
    result = run_cli("bertlite.cli.convert", "to-hf", str(run_dir / "checkpoints" / "best.ckpt"), f"out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(hf).__name__ == hf_class
    theirs = hf_probabilities(hf, classifier.tokenizer, TEXTS, pad_id)
    torch.testing.assert_close(classifier.predict_proba(TEXTS), theirs, atol=1e-5, rtol=0)
