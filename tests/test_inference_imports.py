"""Inference loads without the training stack: ``bertlite.load(...).predict`` from a model folder or a .ckpt
imports neither Lightning, Hydra nor ``datasets`` (each costs seconds to import and is not needed to predict)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bertlite
from bertlite.checkpoints import save_checkpoint
from bertlite.data.tokenizer import train_wordpiece
from bertlite.model_folder import save_model_folder
from bertlite.models import preset
from bertlite.models.encoder import BertForTokenClassification
from bertlite.models.registry import build_classifier
from tests.conftest import predictor_checkpoint, synthetic_sentences

TINY = dict(d_model=32, n_heads=2, d_ff=64, n_layers=2, max_seq_len=32, dropout=0.0, attention_dropout=0.0)
TRAINING_PACKAGES = ("lightning", "hydra", "datasets")

# Runs in a fresh interpreter: this test's own process has imported whatever other tests needed.
PREDICT_AND_LIST_TRAINING_IMPORTS = """
import json, sys
import bertlite
sentiment = bertlite.load(sys.argv[1], device="cpu").predict(["a fine day", "x"])
entities = bertlite.load(sys.argv[2], device="cpu").predict(["Ada met Alan in London ."])
print(json.dumps({"sentiment": sentiment, "entities": entities,
                  "loaded": sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[3:]))}))
"""


@pytest.mark.slow
def test_predicting_from_a_model_folder_and_a_ckpt_imports_no_training_package(tmp_path):
    tokenizer = train_wordpiece(synthetic_sentences(100), vocab_size=100)
    config = preset("bert-tiny", vocab_size=tokenizer.get_vocab_size(), **TINY)
    torch.manual_seed(0)
    folder = save_model_folder(predictor_checkpoint(build_classifier(config, 2), tokenizer, "classification",
                                                    label_names=["neg", "pos"], max_seq_len=32), tmp_path / "folder")
    ckpt = tmp_path / "ner.ckpt"
    save_checkpoint(predictor_checkpoint(BertForTokenClassification(config, 3), tokenizer, "token_classification",
                                         label_names=["O", "B-PER", "I-PER"]), ckpt)
    source = Path(bertlite.__file__).parents[1]  # the bertlite under test, wherever it is installed
    env = {**os.environ, "PYTHONPATH": str(source), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", PREDICT_AND_LIST_TRAINING_IMPORTS, str(folder), str(ckpt),
                             *TRAINING_PACKAGES], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(report["sentiment"]) == 2 and set(report["sentiment"]) <= {"neg", "pos"}
    assert len(report["entities"]) == 1  # one text, its (possibly no) entities
    assert report["loaded"] == [], f"inference imported {report['loaded']}"
