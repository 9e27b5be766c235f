"""End-to-end: GPT and the encoder-decoder under the same commands as BERT, generation, attention maps,
and the comparison report."""

from __future__ import annotations

import json

import pytest

import bertlite
from tests.conftest import TINY_RUN, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session", params=["gpt", "transformer"])
def model_run(request, tiny_corpus, tmp_path_factory):
    arch = request.param
    task = {"gpt": "clm", "transformer": "seq2seq"}[arch]
    run_dir = tmp_path_factory.mktemp(f"{arch}_run")
    result = run_cli("bertlite.pretrain", *TINY_RUN, f"model={arch}-tiny", f"task={task}", "data=text_files",
                     f"data.train_files={tiny_corpus}", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return arch, run_dir


def test_pretraining_logs_its_objective(model_run):
    arch, run_dir = model_run
    header = (run_dir / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert "val/loss" in header and "val/acc" in header and "val/ppl" in header


def test_generate_cli_and_python_agree(model_run):
    arch, run_dir = model_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    result = run_cli("bertlite.generate", f"checkpoint={ckpt}", "prompt=The value, of the", "max_new_tokens=8",
                     "greedy=true")
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout.strip().splitlines()[-1]
    generator = bertlite.load(ckpt)
    assert generator.generate("The value, of the", max_new_tokens=8, greedy=True) == text
    assert generator.generate("The value", 8, greedy=True) == generator.generate("The value", 8, greedy=True,
                                                                                  use_cache=False)
    sampled = run_cli("bertlite.generate", f"checkpoint={ckpt}", "prompt=It was a dark and", "max_new_tokens=6",
                      "temperature=0.8", "top_k=50", "top_p=0.95", "seed=1")
    assert sampled.returncode == 0, sampled.stderr[-3000:]


def test_finetune_from_a_pretrained_decoder_or_encoder_decoder(model_run, sentiment_csv, tmp_path):
    arch, run_dir = model_run
    train, dev = sentiment_csv
    result = run_cli("bertlite.finetune", "data=csv", f"data.train_file={train}", f"data.validation_file={dev}",
                     "data.text_column=review", "data.label_column=sentiment", "data.max_seq_len=32",
                     "trainer.max_steps=20", "trainer.max_epochs=-1", "trainer.val_check_interval=10",
                     "trainer.check_val_every_n_epoch=null", "callbacks.progress_bar=null",
                     f"pretrained={run_dir / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["labels"] == ["neg", "pos"] and "val/acc" in report["validation"]
    clf = bertlite.load(tmp_path / "checkpoints" / "best.ckpt")
    assert clf.predict(["the value was valid ."])[0] in {"neg", "pos"}


def test_attention_png(model_run, tmp_path):
    arch, run_dir = model_run
    out = tmp_path / "attention.png"
    result = run_cli("bertlite.cli.attention", f"checkpoint={run_dir / 'checkpoints' / 'last.ckpt'}",
                     "text=The animal didn't cross the street because it was too tired", f"output={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.stat().st_size > 5000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_attention_png_for_bert_goes_to_the_run_directory(pretrain_run, tmp_path):
    """By default the picture is in the run directory, not the working directory."""
    result = run_cli("bertlite.cli.attention", f"checkpoint={pretrain_run / 'checkpoints' / 'last.ckpt'}",
                     "text=The animal didn't cross the street", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "attention.png").exists()


def test_model_and_task_must_match(tmp_path):
    result = run_cli("bertlite.pretrain", "model=gpt-tiny", "task=mlm", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2 and "use task=clm" in result.stderr and "Traceback" not in result.stderr


def test_compare_writes_report_and_curves(tiny_corpus, sentiment_csv, tmp_path):
    train, dev = sentiment_csv
    pre = ",".join(f"'{o}'" for o in [f"data.train_files={tiny_corpus}", "tokenizer.vocab_size=300",
                                       "model.d_model=64", "model.n_heads=2", "model.d_ff=128",
                                       "model.max_seq_len=32", "data.max_eval_blocks=16",
                                       "callbacks.progress_bar=null", "callbacks.throughput.window=2",
                                       "trainer.log_every_n_steps=1"])
    ft = ",".join(f"'{o}'" for o in [f"data.train_file={train}", f"data.validation_file={dev}",
                                      "data.text_column=review", "data.label_column=sentiment",
                                      "trainer.max_steps=5", "trainer.max_epochs=-1", "trainer.val_check_interval=5",
                                      "trainer.check_val_every_n_epoch=null", "data.max_seq_len=32",
                                      "callbacks.progress_bar=null"])
    # two of the three architectures: each adds a pretraining and a fine-tuning process (~10 s) and nothing the
    # report does differently (every architecture's own run is tested in this file)
    result = run_cli("bertlite.cli.compare", "size=tiny", "architectures=[bert,transformer]",
                     "pretrain.data=text_files", "pretrain.steps=6", "pretrain.batch_size=8", "pretrain.max_seq_len=32",
                     "pretrain.val_check_interval=3",
                     f"pretrain.overrides=[{pre}]", "finetune.data=csv", f"finetune.overrides=[{ft}]",
                     f"hydra.run.dir={tmp_path}", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "comparison.md").read_text()
    for arch in ("bert-tiny", "transformer-tiny"):
        assert f"| {arch} |" in report
    assert "gpt-tiny" not in report
    assert "nan" not in report
    assert (tmp_path / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
