"""Exact resume: a CLI run stopped by SIGTERM mid-epoch saves last.ckpt, and ``ckpt_path=last`` continues it
with the same optimizer, schedule, random numbers and position in the data, so its per-step losses are those
of a run never interrupted."""

from __future__ import annotations

import collections
import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import REPO, TINY_RUN, jsonl_shards, run_cli

pytestmark = pytest.mark.slow

RUN = [*TINY_RUN, "trainer.deterministic=true", "trainer.max_steps=30", "trainer.val_check_interval=15"]


def losses(run_dir, key="train/loss") -> dict[int, float]:
    with open(run_dir / "logs" / "metrics.csv") as f:
        rows = [(int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key)]
    steps = [s for s, _ in rows]
    assert len(steps) == len(set(steps)), f"a step was logged twice: {steps}"
    return dict(rows)


def assert_same_losses(whole, cut, what: str) -> None:
    """Every step of both runs logged once, and their training losses equal (1e-6)."""
    expected, got = losses(whole), losses(cut)
    assert sorted(got) == sorted(expected) == list(range(30))
    diff = max(abs(expected[s] - got[s]) for s in expected)
    print(f"{what}: max |train/loss difference| over 30 steps: {diff:.3g}")
    assert diff <= 1e-6, {s: (expected[s], got[s]) for s in expected if abs(expected[s] - got[s]) > 1e-6}


def interrupt(signum: int, args: list[str], at_step: int, flag, module: str = "bertlite.pretrain") -> str:
    """Run the CLI, send it ``signum`` from outside once it has finished step ``at_step``; its stderr."""
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", module, *args,
                             "+callbacks.pause._target_=tests.signal_callback.PauseForSignal",
                             f"+callbacks.pause.at_step={at_step}", f"+callbacks.pause.flag={flag}"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert flag.exists(), proc.communicate()[1][-3000:]
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]  # 128 + SIGTERM: interrupted, not failed
    return stderr


def test_sigterm_mid_epoch_then_resume_matches_an_uninterrupted_run(tiny_corpus, tmp_path):
    data = ["data=text_files", f"data.train_files={tiny_corpus}"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    result = run_cli("bertlite.pretrain", *RUN, *data, f"hydra.run.dir={whole}")
    assert result.returncode == 0, result.stderr[-3000:]

    # the same run, told to stop (SIGTERM from outside) after step 20 of an epoch of 100+ batches. It reuses
    # the first run's tokenizer: HF tokenizers' WordPiece training numbers its alphabet differently from one
    # process to the next, and this test is about resuming, not about tokenizer training.
    data.append(f"tokenizer.path={whole / 'tokenizer.json'}")
    interrupt(signal.SIGTERM, [*RUN, *data, f"hydra.run.dir={cut}"], at_step=20, flag=tmp_path / "at_step")
    saved = torch.load(cut / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == 20
    position = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert position["epoch"] == 0 and position["samples_done"] == 20 * 8 < position["dataset_size"]  # mid-epoch

    resumed = run_cli("bertlite.pretrain", *RUN, *data, f"hydra.run.dir={cut}", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(cut / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 30

    assert_same_losses(whole, cut, "pretraining, resumed at step 20")
    assert losses(cut, "val/loss") == pytest.approx(losses(whole, "val/loss"), abs=1e-6)


def test_finetune_sigterm_mid_epoch_then_resume_matches(pretrain_run, sentiment_csv, tmp_path):
    """Fine-tuning too: stopped in its second epoch (length-grouped batches, dropout on), resumed, the same
    per-step losses as a run never interrupted."""
    from tests.test_cli_finetune import TINY_FINETUNE

    train, dev = sentiment_csv  # 240 rows: 15 batches of 16 per epoch
    run = [*TINY_FINETUNE, "trainer.max_steps=30", "trainer.val_check_interval=10", "trainer.log_every_n_steps=1",
           "trainer.deterministic=true", "dropout=0.1", f"data.train_file={train}", f"data.validation_file={dev}",
           f"pretrained={pretrain_run / 'checkpoints' / 'last.ckpt'}"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    result = run_cli("bertlite.finetune", *run, f"hydra.run.dir={whole}")
    assert result.returncode == 0, result.stderr[-3000:]
    interrupt(signal.SIGTERM, [*run, f"hydra.run.dir={cut}"], at_step=17, flag=tmp_path / "at_step",
              module="bertlite.finetune")
    saved = torch.load(cut / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == 17
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"][0] == {"epoch": 1, "batches_done": 2}
    resumed = run_cli("bertlite.finetune", *run, f"hydra.run.dir={cut}", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_losses(whole, cut, "fine-tuning, resumed at step 17")


def test_ckpt_path_last_without_a_previous_run_is_one_clear_error(tmp_path):
    result = run_cli("bertlite.pretrain", "ckpt_path=last", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "ckpt_path=last" in result.stderr and "hydra.run.dir" in result.stderr


def test_ctrl_c_finishes_the_step_and_saves(tiny_corpus, tmp_path):
    stderr = interrupt(signal.SIGINT, [*RUN, "data=text_files", f"data.train_files={tiny_corpus}",
                                       f"hydra.run.dir={tmp_path / 'run'}"], at_step=7, flag=tmp_path / "at_step")
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 7
    assert "Traceback" not in stderr and "resume with ckpt_path=last" in stderr


@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_sigterm_mid_stream_then_resume_matches(tiny_corpus, tmp_path, workers):
    """data.streaming=true, read by 0 or 2 DataLoader workers: stopped at step 20 and resumed, the per-step
    losses are those of a run never interrupted (the stream position travels in last.ckpt)."""
    shards = jsonl_shards(tiny_corpus, tmp_path / "shards")
    data = ["data=text_files", f"data.train_files={shards}", "data.streaming=true", "data.shuffle_buffer=24",
            "data.validation_blocks=16", f"data.num_workers={workers}"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    result = run_cli("bertlite.pretrain", *RUN, *data, f"hydra.run.dir={whole}")
    assert result.returncode == 0, result.stderr[-3000:]
    data.append(f"tokenizer.path={whole / 'tokenizer.json'}")
    interrupt(signal.SIGTERM, [*RUN, *data, f"hydra.run.dir={cut}"], at_step=20, flag=tmp_path / "at_step")
    resumed = run_cli("bertlite.pretrain", *RUN, *data, f"hydra.run.dir={cut}", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_losses(whole, cut, f"streaming, {workers} workers, resumed at step 20")


@pytest.mark.xdist_group("distributed")
def test_resume_on_two_processes_trains_the_rest_of_the_epoch_once(tiny_corpus, tmp_path):
    """global_batch_size=16 on 1 process (2 batches of 8 accumulated), stopped at step 3, resumed on 2 DDP processes
    (8 each, no accumulation): the blocks trained before and after, counted, are the epoch's blocks exactly once,
    and the epoch ends where the permutation does (on the old code it ended early and the next epoch repeated
    blocks)."""
    from bertlite.data.pretraining import PretrainingDataModule
    from bertlite.data.tokenizer import train_wordpiece
    from tests.conftest import tiny_corpus_paragraphs

    tokenizer = train_wordpiece(tiny_corpus_paragraphs(), vocab_size=300)
    (tmp_path / "tokenizer.json").write_text(tokenizer.to_str())
    data = PretrainingDataModule(tokenizer, objective="clm", train_files=str(tiny_corpus), max_seq_len=32, seed=42)
    data.setup("fit")
    steps = len(data.train_dataset) // 16  # one epoch
    run = [*RUN, "model=gpt-tiny", "task=clm", "data=text_files", f"data.train_files={tiny_corpus}",
           f"tokenizer.path={tmp_path / 'tokenizer.json'}", "global_batch_size=16", "data.batch_size=8",
           f"trainer.max_steps={steps}", "trainer.val_check_interval=1000", f"hydra.run.dir={tmp_path / 'run'}",
           "+callbacks.record._target_=tests.stream_recorder.RecordBlocks"]
    interrupt(signal.SIGTERM, [*run, f"+callbacks.record.out={tmp_path / 'first'}"], at_step=3,
              flag=tmp_path / "at_step")
    result = run_cli("bertlite.pretrain", *run, f"+callbacks.record.out={tmp_path / 'second'}", "ckpt_path=last",
                     "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp_spawn",
                     timeout=300, subprocess_run=True)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = [line for f in [tmp_path / "first" / "rank0.txt", *(tmp_path / "second").glob("rank*.txt")]
            for line in f.read_text().splitlines()]
    counts = collections.Counter(seen)
    assert len((tmp_path / "first" / "rank0.txt").read_text().splitlines()) == 3 * 16
    assert max(counts.values()) == 1, "a block was trained twice"
    assert len(seen) == steps * 16, f"{steps * 16 - len(seen)} blocks of the epoch were skipped"
