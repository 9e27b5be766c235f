"""A resume (ckpt_path=) trains the model its checkpoint saved: a changed model config or changed label names are one
error line before Lightning loads anything, task.allow_config_change=true lets a change through where the weights
still fit, and a shape change is one line whatever it says. The final evaluation of a resumed run loads only a
checkpoint of its own run directory, whatever path the resumed checkpoint names as its best."""

from __future__ import annotations

import json
import os

import pytest
import torch

from tests.conftest import TINY_RUN, run_cli

pytestmark = pytest.mark.slow  # end-to-end: a tiny fine-tuning run, then resumes of it

# a fine-tuning run from random initialisation: 2 steps, validated at the end
TINY_FROM_SCRATCH = ["data=csv", "data.text_column=review", "data.label_column=sentiment", "data.max_seq_len=32",
                     "data.batch_size=16", "model=bert-tiny", "model.d_model=32", "model.n_heads=2", "model.d_ff=64",
                     "model.n_layers=2", "model.max_seq_len=32", "tokenizer.vocab_size=200", "trainer.max_steps=2",
                     "trainer.max_epochs=-1", "trainer.val_check_interval=2", "trainer.check_val_every_n_epoch=null",
                     "callbacks.progress_bar=null", "dropout=0.0"]


@pytest.fixture(scope="session")
def finetuned(sentiment_csv, tmp_path_factory):
    """(the command line of a tiny fine-tuning run, its run directory)"""
    train, dev = sentiment_csv
    run_dir = tmp_path_factory.mktemp("finetuned")
    args = [*TINY_FROM_SCRATCH, f"data.train_file={train}", f"data.validation_file={dev}"]
    result = run_cli("bertlite.finetune", *args, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return [*args, f"tokenizer.path={run_dir / 'tokenizer.json'}"], run_dir


def resume(args: list[str], checkpoint, run_dir, *changes: str):
    return run_cli("bertlite.finetune", *args, *changes, f"ckpt_path={checkpoint}", f"hydra.run.dir={run_dir}")


def one_error_line(result) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "Error(s) in loading state_dict" not in result.stderr
    return lines[0]


def test_a_changed_activation_is_one_error_listing_it(finetuned, tmp_path):
    args, run_dir = finetuned
    line = one_error_line(resume(args, run_dir / "checkpoints" / "last.ckpt", tmp_path, "model.activation=relu"))
    assert "activation: 'gelu' in the checkpoint, 'relu' now" in line and "task.allow_config_change=true" in line
    assert not (tmp_path / "checkpoints").exists()  # refused before any training


def test_allow_config_change_goes_on_with_the_new_settings(finetuned, tmp_path):
    args, run_dir = finetuned
    result = resume(args, run_dir / "checkpoints" / "last.ckpt", tmp_path, "model.activation=relu",
                    "task.allow_config_change=true")
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "with a changed configuration (task.allow_config_change=true): activation" in log
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["bertlite"]["model_config"]
    assert saved["activation"] == "relu"


def test_permuted_label_names_are_one_error(finetuned, tmp_path):
    args, run_dir = finetuned
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["bertlite"]["label_names"] == ["neg", "pos"]
    checkpoint["bertlite"]["label_names"] = ["pos", "neg"]  # the same labels, the head's rows the other way round
    torch.save(checkpoint, tmp_path / "permuted.ckpt")
    line = one_error_line(resume(args, tmp_path / "permuted.ckpt", tmp_path / "run", "task.allow_config_change=true"))
    assert "label_names: ['pos', 'neg'] in the checkpoint, ['neg', 'pos'] now" in line


@pytest.mark.parametrize("change, listed", [("model.d_ff=128", "d_ff: 64 in the checkpoint, 128 now"),
                                            ("model.norm_first=true", "norm_first: False in the checkpoint, True now")])
def test_a_shape_change_is_one_error_even_when_changes_are_allowed(change, listed, finetuned, tmp_path):
    args, run_dir = finetuned
    line = one_error_line(resume(args, run_dir / "checkpoints" / "last.ckpt", tmp_path, change,
                                 "task.allow_config_change=true"))
    assert "its weights have other shapes" in line and listed in line


def test_a_pretraining_resume_with_a_changed_config_is_one_error(pretrain_run, tiny_corpus, tmp_path):
    args = [*TINY_RUN, "data=text_files", f"data.train_files={tiny_corpus}", f"hydra.run.dir={tmp_path}",
            f"ckpt_path={pretrain_run / 'checkpoints' / 'last.ckpt'}"]
    line = one_error_line(run_cli("bertlite.pretrain", *args, "model.activation=relu"))
    assert "activation: 'gelu' in the checkpoint, 'relu' now" in line
    line = one_error_line(run_cli("bertlite.pretrain", *args, "model.d_ff=256", "task.allow_config_change=true"))
    assert "its weights have other shapes" in line and "d_ff: 128 in the checkpoint, 256 now" in line


class RunsCommand:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):  # what unpickling calls: os.system(command)
        return os.system, (self.command,)


def test_the_final_evaluation_ignores_a_best_path_outside_the_run(finetuned, tmp_path):
    """A last.ckpt whose ModelCheckpoint state names a file elsewhere as the best: the resumed run never opens that
    file, says so, and evaluates its own last checkpoint."""
    args, run_dir = finetuned
    marker = tmp_path / "ran"
    outside = tmp_path / "elsewhere" / "best.ckpt"
    outside.parent.mkdir()
    torch.save({"state_dict": {}, "bertlite": RunsCommand(f"touch {marker}")}, outside)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    monitored = [key for key in checkpoint["callbacks"] if "'monitor': 'val/acc'" in key]
    assert len(monitored) == 1, list(checkpoint["callbacks"])
    checkpoint["callbacks"][monitored[0]]["best_model_path"] = str(outside)
    torch.save(checkpoint, tmp_path / "pointing-elsewhere.ckpt")

    result = resume(args, tmp_path / "pointing-elsewhere.ckpt", tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not marker.exists()
    assert (f"Ignoring best_model_path={outside} restored from the checkpoint: it is not a file in this run's "
            "checkpoint folder") in result.stdout + result.stderr
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["best_checkpoint"] == str(tmp_path / "run" / "checkpoints" / "last.ckpt")
