"""Checkpoints from strangers: opening one never runs code from it, and a damaged one is one clear error.

The malicious file is a real exploit: its pickle calls os.system to create a marker file when unpickled with
torch.load(weights_only=False). Every entry point must refuse it before that can happen."""

from __future__ import annotations

import os
import pathlib
import sys

import pytest
import torch

import bertlite
from bertlite.checkpoints import save_checkpoint
from bertlite.data.tokenizer import train_wordpiece
from bertlite.errors import CheckpointError
from bertlite.models import preset
from bertlite.models.encoder import BertForSequenceClassification
from bertlite.sources import read_checkpoint
from tests.conftest import TINY_RUN, predictor_checkpoint, synthetic_sentences


class RunsCommand:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):  # what unpickling calls: os.system(command)
        return os.system, (self.command,)


@pytest.fixture
def malicious(tmp_path) -> tuple[pathlib.Path, pathlib.Path]:
    """A checkpoint that looks like bertlite's and would create ``marker`` when opened unsafely."""
    marker = tmp_path / "ran"
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {}, "bertlite": RunsCommand(f"touch {marker}")}, path)
    return path, marker


def _classifier_checkpoint(**extra) -> dict:
    tokenizer = train_wordpiece(synthetic_sentences(100), vocab_size=90)
    config = preset("bert-tiny", vocab_size=tokenizer.get_vocab_size(), d_model=32, n_heads=2, d_ff=64,
                    n_layers=1, max_seq_len=32)
    model = BertForSequenceClassification(config, 2)
    return predictor_checkpoint(model, tokenizer, "classification", label_names=["neg", "pos"], **extra)


def test_the_malicious_file_is_real(malicious):
    path, marker = malicious
    torch.load(path, weights_only=False)  # what bertlite used to do
    assert marker.exists()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_load_refuses_a_pickle_that_runs_code(malicious, legacy):
    path, marker = malicious
    if legacy:  # the pre-1.6 format torch.load also reads: a bare pickle stream
        import pickle

        path.write_bytes(pickle.dumps({"state_dict": {}, "bertlite": RunsCommand(f"touch {marker}")}))
    with pytest.raises(CheckpointError, match=rf"{path.name} holds a reference to posix.system"
                                              r".*not opened.*trust_checkpoint=true"):
        bertlite.load(path)
    assert not marker.exists()


def test_trust_opens_the_users_own_file_with_other_types(tmp_path):
    """An older file holding a pathlib.Path: refused by default (named), opened with trust=True."""
    path = tmp_path / "old.ckpt"
    save_checkpoint(_classifier_checkpoint(source=pathlib.PurePosixPath("/data/train.csv")), path)
    with pytest.raises(CheckpointError, match=r"holds a reference to pathlib.PurePosixPath"):
        bertlite.load(path)
    assert bertlite.load(path, trust=True).predict(["a b c"])[0] in ("neg", "pos")


def test_a_plain_checkpoint_needs_no_trust(tmp_path):
    path = tmp_path / "good.ckpt"
    save_checkpoint(_classifier_checkpoint(), path)
    assert bertlite.load(path).labels == ["neg", "pos"]


@pytest.mark.parametrize("field, damage, message", [
    ("model_config", None, "has no 'model_config' field"),
    ("tokenizer", None, "has no 'tokenizer' field"),
    ("task", None, "has no 'task' field"),
    ("label_names", None, "label_names must be a non-empty list of strings"),
    ("model_config", {"arch": "bert", "d_model": "wide"}, "model_config is malformed"),
    ("model_config", {"arch": "bert", "init_std": {"_target_": "os.getcwd"}},
     r"damaged.ckpt: model_config is malformed: init_std=.* is a dict with _target_, not a float.*plain data"),
    ("model_config", {"arch": "bert", "activation": "${oc.env:HOME}"}, r"activation='\$\{oc.env:HOME\}' is an interp"),
    ("model_config", [1, 2], "model_config is a list, not a dict"),
    ("tokenizer", "{not json", "tokenizer is not a tokenizer's JSON"),
    ("task", "translation", "task is 'translation'; known"),
    ("label_names", [0, 1], "label_names must be a non-empty list of strings"),
])
def test_a_damaged_bertlite_section_names_the_field(tmp_path, field, damage, message):
    checkpoint = _classifier_checkpoint()
    if damage is None:
        del checkpoint["bertlite"][field]
    else:
        checkpoint["bertlite"][field] = damage
    path = tmp_path / "damaged.ckpt"
    save_checkpoint(checkpoint, path)
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match=message):
        bertlite.load(path)


def _run_cli(monkeypatch, capsys, main, *args: str) -> tuple[int, str]:
    """An entry point in this process, as its console script runs it: (exit status, stderr)."""
    monkeypatch.setattr(sys, "argv", ["bertlite", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def _entry_points(malicious, corpus, sentiment, run_dir):
    from bertlite.cli import convert, finetune, predict, pretrain

    path = str(malicious)
    train, dev = sentiment
    finetune_data = ["data=csv", f"data.train_file={train}", f"data.validation_file={dev}",
                     "data.text_column=review", "data.label_column=sentiment"]
    pretrain_data = [*TINY_RUN, "data=text_files", f"data.train_files={corpus}"]
    return {
        "bertlite-predict": (predict.main, [f"checkpoint={path}", "text=hello"]),
        "bertlite-finetune pretrained=": (finetune.main, [*finetune_data, f"pretrained={path}"]),
        "bertlite-pretrain init_from=": (pretrain.main, [*pretrain_data, f"init_from={path}"]),
        "bertlite-pretrain ckpt_path=": (pretrain.main, [*pretrain_data, f"ckpt_path={path}"]),
        "bertlite-convert to-hf": (convert.main, ["to-hf", path, f"out={run_dir / 'hf'}"]),
    }


@pytest.mark.parametrize("entry", ["bertlite-predict", "bertlite-finetune pretrained=", "bertlite-pretrain init_from=",
                                   "bertlite-pretrain ckpt_path=", "bertlite-convert to-hf"])
def test_every_entry_point_refuses_the_malicious_file(entry, malicious, tiny_corpus, sentiment_csv, tmp_path,
                                                      monkeypatch, capsys):
    path, marker = malicious
    main, args = _entry_points(path, tiny_corpus, sentiment_csv, tmp_path)[entry]
    hydra_dir = [] if entry.startswith("bertlite-convert") else [f"hydra.run.dir={tmp_path / 'run'}"]
    code, err = _run_cli(monkeypatch, capsys, main, *args, *hydra_dir)
    assert not marker.exists(), f"{entry} ran code from the checkpoint"
    assert code == 2, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert str(path) in lines[0] and "posix.system" in lines[0] and "trust_checkpoint=true" in lines[0]
