"""End-to-end: pretrain -> fine-tune -> predict from the CLI -> the same predictions from Python."""

from __future__ import annotations

import csv
import json

import pytest
import torch

import bertlite
from bertlite.errors import BertliteError, CheckpointError
from bertlite.inference import Classifier, MaskedLM
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow

TINY_FINETUNE = ["data=csv", "data.text_column=review", "data.label_column=sentiment", "data.max_seq_len=32",
                 "data.batch_size=16", "trainer.max_steps=60", "trainer.max_epochs=-1", "trainer.val_check_interval=30",
                 "trainer.check_val_every_n_epoch=null", "task.lr=1e-3",
                 "callbacks.progress_bar=null", "dropout=0.0"]


@pytest.fixture(scope="session")
def finetune_run(pretrain_run, sentiment_csv, tmp_path_factory):
    train, dev = sentiment_csv
    run_dir = tmp_path_factory.mktemp("finetune_run")
    result = run_cli("bertlite.finetune", *TINY_FINETUNE, f"data.train_file={train}", f"data.validation_file={dev}",
                     f"pretrained={pretrain_run / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_finetune_writes_metrics_and_learns(finetune_run):
    report = json.loads((finetune_run / "metrics.json").read_text())
    assert report["labels"] == ["neg", "pos"] and report["metric"] == "acc"
    assert report["validation"]["val/acc"] > 0.9  # the toy task is easy once trained
    assert (finetune_run / "checkpoints" / "best.ckpt").is_file()
    meta = torch.load(finetune_run / "checkpoints" / "best.ckpt", weights_only=False)["bertlite"]
    assert meta["task"] == "classification" and meta["label_names"] == ["neg", "pos"]


def test_finetune_starts_from_the_pretrained_encoder(pretrain_run, finetune_run):
    from bertlite.tasks import ClassificationTask

    pretrained = torch.load(pretrain_run / "checkpoints" / "last.ckpt", weights_only=False)
    tuned = torch.load(finetune_run / "checkpoints" / "best.ckpt", weights_only=False)
    assert pretrained["bertlite"]["tokenizer"] == tuned["bertlite"]["tokenizer"]
    task = ClassificationTask(pretrained["bertlite"]["model_config"], num_labels=2, label_names=["a", "b"])
    task.load_encoder(pretrained["state_dict"])
    for name, value in task.model.bert.state_dict().items():
        assert torch.equal(value, pretrained["state_dict"][f"model.bert.{name}"]), name


def test_cli_and_python_predictions_agree(finetune_run, sentiment_csv, tmp_path):
    _, dev = sentiment_csv
    ckpt = finetune_run / "checkpoints" / "best.ckpt"
    out = tmp_path / "preds.jsonl"
    result = run_cli("bertlite.predict", f"checkpoint={ckpt}", f"input={dev}", "text_column=review",
                     f"output={out}", "batch_size=7")
    assert result.returncode == 0, result.stderr[-3000:]
    cli = [json.loads(line) for line in out.read_text().splitlines()]
    with open(dev) as f:
        texts = [r["review"] for r in csv.DictReader(f)]
    clf = bertlite.load(ckpt)
    assert isinstance(clf, Classifier)
    assert [r["label"] for r in cli] == clf.predict(texts)
    probs = clf.predict_proba(texts, batch_size=64)
    assert torch.allclose(probs, torch.tensor([[r["p_neg"], r["p_pos"]] for r in cli]), atol=1e-5)
    # batching and length sorting change nothing: one text at a time gives the same probabilities
    one_by_one = torch.cat([clf.predict_proba([t]) for t in texts[:10]])
    assert torch.allclose(one_by_one, probs[:10], atol=1e-5)

    csv_out = tmp_path / "preds.csv"
    result = run_cli("bertlite.predict", f"checkpoint={ckpt}", "text=the object was found, truly", f"output={csv_out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert next(csv.DictReader(csv_out.open()))["label"] in {"neg", "pos"}


def test_single_text_to_stdout_with_commas(finetune_run):
    ckpt = finetune_run / "checkpoints" / "best.ckpt"
    result = run_cli("bertlite.predict", f"checkpoint={ckpt}", "text=the value was valid, correct and true")
    assert result.returncode == 0, result.stderr[-3000:]
    row = json.loads(result.stdout.strip().splitlines()[-1])
    assert row["text"] == "the value was valid, correct and true" and row["label"] == "pos"


def test_fill_mask_from_the_pretraining_checkpoint(pretrain_run):
    mlm = bertlite.load(pretrain_run / "checkpoints" / "last.ckpt")
    assert isinstance(mlm, MaskedLM)
    options = mlm.fill_mask("the value of the [MASK] is returned.", top_k=3)
    assert len(options) == 3 and options[0]["score"] >= options[1]["score"] >= options[2]["score"]
    assert all(o["token"] in o["sequence"].replace(" ##", "") or o["token"].startswith("##") for o in options)


def test_wrong_kind_of_checkpoint(pretrain_run, tmp_path):
    mlm_ckpt = pretrain_run / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match="masked-LM"):
        Classifier(mlm_ckpt)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        bertlite.load(junk)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(mlm_ckpt.read_bytes()[:5000])
    with pytest.raises(CheckpointError):
        bertlite.load(truncated)
    result = run_cli("bertlite.predict", f"checkpoint={mlm_ckpt}", "text=hello")
    assert result.returncode == 2 and "masked-LM" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("case", ["missing_label_column", "unseen_label", "empty_file", "not_utf8"])
def test_finetune_bad_input(case, sentiment_csv, tmp_path):
    train, dev = sentiment_csv
    bad = tmp_path / "bad.csv"
    if case == "unseen_label":
        bad.write_text("review,sentiment\nthe plot was dull .,neg\nthe cast was superb .,meh\n")
    elif case == "empty_file":
        bad.write_text("")
    elif case == "not_utf8":
        bad.write_bytes("review,sentiment\ncaf\u00e9 cr\u00e8me,pos\n".encode("latin-1") * 20)
    args = {"missing_label_column": [f"data.train_file={train}", "data.label_column=stars"],
            "unseen_label": [f"data.train_file={train}", f"data.validation_file={bad}"],
            "empty_file": [f"data.train_file={bad}"],
            "not_utf8": [f"data.train_file={bad}"]}[case]
    result = run_cli("bertlite.finetune", *TINY_FINETUNE, "model=bert-tiny", "tokenizer.vocab_size=200", *args,
                     f"hydra.run.dir={tmp_path / 'run'}")
    expected = {"missing_label_column": "available columns: review, sentiment", "unseen_label": "never seen",
                "empty_file": "", "not_utf8": "UTF-8"}[case]
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and expected in result.stderr


def test_predict_empty_and_very_long_texts(finetune_run, tmp_path):
    ckpt = finetune_run / "checkpoints" / "best.ckpt"
    clf = bertlite.load(ckpt)
    long_text = "the value was valid . " * 500  # far beyond max_seq_len: truncated, as documented
    probs = clf.predict_proba([long_text, "the value was valid ."])
    assert probs.shape == (2, 2) and torch.allclose(probs.sum(-1), torch.ones(2))
    with pytest.raises(BertliteError, match="empty text"):
        clf.predict(["fine", "  "])
    result = run_cli("bertlite.predict", f"checkpoint={ckpt}", "text=")
    assert result.returncode == 2 and "empty text" in result.stderr and "Traceback" not in result.stderr
    assert torch.allclose(clf.predict_proba([long_text]), clf.predict_proba([long_text[:400]]), atol=1e-5)


def test_readme_csv_example_with_string_labels_in_a_label_column(tmp_path):
    """The commonest file (text,label with string labels) once crashed at the first batch. The README's
    command as written, with only a smaller model and fewer steps appended."""
    import random

    readme = (REPO / "README.md").read_text()
    command = "bertlite-finetune data=csv data.train_file=train.csv"
    line = next(ln for ln in readme.splitlines() if ln.startswith(command))
    args = line.split("#")[0].split()[1:]
    rng = random.Random(0)
    for name, n in (("train.csv", 120), ("dev.csv", 30)):
        with open(tmp_path / name, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            for _ in range(n):
                label = rng.choice(["positive", "negative"])
                word = rng.choice(["valid", "correct"] if label == "positive" else ["invalid", "wrong"])
                writer.writerow([f"the value was {word} .", label])
    result = run_cli("bertlite.finetune", *args, "model=bert-tiny", "model.d_model=64", "model.n_heads=2",
                     "model.d_ff=128", "tokenizer.vocab_size=200", "data.max_seq_len=32", "trainer.max_epochs=2",
                     "callbacks.progress_bar=null", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
                     subprocess_run=True)  # a real console run, as the README's reader types it
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["labels"] == ["negative", "positive"]
    assert bertlite.load(tmp_path / "run" / "checkpoints" / "best.ckpt").predict(["the value was valid ."])[0] in \
        report["labels"]


def test_positions_past_the_pretrained_length_are_one_clear_error(pretrain_run, sentiment_csv, tmp_path):
    """The checkpoint records how far pretraining trained its learned positions; fine-tuning past it
    is refused rather than run on random position vectors."""
    saved = torch.load(pretrain_run / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["bertlite"]["trained_seq_len"] == 32
    saved["bertlite"]["trained_seq_len"] = 16  # as if pretrained on 16-token blocks with 32 position rows
    short = tmp_path / "short.ckpt"
    torch.save(saved, short)
    result = run_cli("bertlite.finetune", *TINY_FINETUNE, f"data.train_file={sentiment_csv[0]}", f"pretrained={short}",
                     f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "data.max_seq_len=32 goes past the 16 positions" in result.stderr and "data.max_seq_len=16" in result.stderr


def test_class_weights_auto_from_the_training_labels(tmp_path):
    """task.class_weights=auto on 90 'common' and 30 'rare' training rows: weights 120 / (2 * n_c), logged, and the
    run trains with them; a list of the wrong length is one clear error."""
    for name, n in (("train.csv", 120), ("dev.csv", 20)):
        with open(tmp_path / name, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            for i in range(n):
                label = "rare" if i % 4 == 0 else "common"
                writer.writerow([f"row {i} is {label} .", label])
    tiny = ["data=csv", f"data.train_file={tmp_path / 'train.csv'}", f"data.validation_file={tmp_path / 'dev.csv'}",
            "model=bert-tiny", "model.d_model=64", "model.n_heads=2", "model.d_ff=128", "tokenizer.vocab_size=200",
            "data.max_seq_len=32", "trainer.max_steps=4", "trainer.max_epochs=-1", "callbacks.progress_bar=null"]
    result = run_cli("bertlite.finetune", *tiny, "task.class_weights=auto", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-3000:]
    log = (tmp_path / "run" / "finetune.log").read_text()
    weights = {"common": round(120 / (2 * 90), 4), "rare": round(120 / (2 * 30), 4)}
    assert f"Class weights (task.class_weights=auto): {weights}" in log, log[-2000:]
    bad = run_cli("bertlite.finetune", *tiny, "task.class_weights=[1.0]", f"hydra.run.dir={tmp_path / 'bad'}")
    assert bad.returncode == 2 and "task.class_weights=[1.0]" in bad.stderr and "['common', 'rare']" in bad.stderr
