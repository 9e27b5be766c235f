"""End-to-end: bertlite-pretrain through a subprocess, as a user runs it."""

from __future__ import annotations

import csv
import dataclasses

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bertlite.data.tokenizer import tokenizer_from_json
from bertlite.models import BertForMaskedLM, config_from_dict
from bertlite.tasks import MaskedLMTask
from tests.conftest import TINY_RUN, run_cli

pytestmark = pytest.mark.slow


def logged(run_dir, key):
    with open(run_dir / "logs" / "metrics.csv") as f:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key)]


def test_run_directory_holds_everything(pretrain_run):
    for name in ["config.yaml", "tokenizer.json", "checkpoints/last.ckpt", "checkpoints/best.ckpt",
                 "logs/metrics.csv", ".hydra/config.yaml", ".hydra/overrides.yaml"]:
        assert (pretrain_run / name).is_file(), name
    cfg = OmegaConf.load(pretrain_run / "config.yaml")
    assert cfg.model.d_model == 64 and "${" not in OmegaConf.to_yaml(cfg)  # resolved
    for key in ["train/loss", "val/loss", "val/mlm_acc", "val/ppl", "train/lr/decay", "train/tokens_per_sec"]:
        assert logged(pretrain_run, key), f"{key} was not logged"


def test_checkpoint_is_self_contained_and_reloads_with_identical_outputs(pretrain_run):
    ckpt = pretrain_run / "checkpoints" / "last.ckpt"
    raw = torch.load(ckpt, map_location="cpu", weights_only=False)
    meta = raw["bertlite"]
    assert meta["task"] == "mlm" and meta["model_config"]["d_model"] == 64
    tokenizer = tokenizer_from_json(meta["tokenizer"])
    assert tokenizer.get_vocab_size() == meta["model_config"]["vocab_size"]

    # Path 1: Lightning's loader. Path 2: plain PyTorch from the checkpoint's own config, no Hydra, no Lightning.
    task = MaskedLMTask.load_from_checkpoint(ckpt, map_location="cpu").eval()
    model = BertForMaskedLM(config_from_dict(meta["model_config"])).eval()
    model.load_state_dict({k.removeprefix("model."): v for k, v in raw["state_dict"].items()})
    ids = torch.tensor([tokenizer.encode("The interpreter evaluates the expression and returns a value.").ids])
    with torch.no_grad():
        a, b = task.model(ids).logits, model(ids).logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)

    # Re-evaluated on the run's own validation masks, the reloaded model reproduces the logged val/loss.
    cfg = OmegaConf.load(pretrain_run / "config.yaml")
    datamodule = instantiate(cfg.data)
    datamodule.set_tokenizer(tokenizer)
    datamodule.setup("fit")
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            out = task(batch)
            total += float(out.loss) * batch["mlm_labels"].numel()
            count += batch["mlm_labels"].numel()
    last_step, last_val = logged(pretrain_run, "val/loss")[-1]
    assert last_step == raw["global_step"] - 1 or last_step == raw["global_step"]
    assert total / count == pytest.approx(last_val, abs=1e-4)
    assert dataclasses.asdict(task.model_config) == meta["model_config"]


def test_init_from_starts_a_new_run_from_the_checkpoints_weights(pretrain_run, tiny_corpus, tmp_path):
    """Continued (domain-adaptive) pretraining: the weights, architecture and tokenizer come from the checkpoint;
    the step count, optimizer and schedule start afresh. With lr 0 the weights must come out unchanged."""
    source = pretrain_run / "checkpoints" / "last.ckpt"
    # model.d_model=32 is ignored: the architecture is the checkpoint's
    result = run_cli("bertlite.pretrain", *TINY_RUN, "data=text_files", f"data.train_files={tiny_corpus}",
                     "model.d_model=32", "trainer.max_steps=3", "task.lr=0", f"init_from={source}",
                     f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    before = torch.load(source, weights_only=False)
    after = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert after["global_step"] == 3
    assert after["bertlite"]["model_config"] == before["bertlite"]["model_config"]
    assert after["bertlite"]["tokenizer"] == before["bertlite"]["tokenizer"]
    for name, weight in before["state_dict"].items():
        torch.testing.assert_close(after["state_dict"][name], weight, rtol=0, atol=0, msg=name)

    both = run_cli("bertlite.pretrain", *TINY_RUN, "data=text_files", f"data.train_files={tiny_corpus}",
                   f"init_from={source}", f"ckpt_path={source}", f"hydra.run.dir={tmp_path / 'both'}")
    assert both.returncode != 0 and "not both" in both.stderr


def test_loss_falls(pretrain_run):
    losses = [v for _, v in logged(pretrain_run, "train/loss")]
    assert sum(losses[-5:]) / 5 < losses[0] - 0.3, losses


def test_resume_from_checkpoint_continues_the_step_count(pretrain_run, tiny_corpus, tmp_path):
    result = run_cli("bertlite.pretrain", *TINY_RUN, "data=text_files", f"data.train_files={tiny_corpus}",
                     "trainer.max_steps=34", "task.extend_schedule=true",
                     f"ckpt_path={pretrain_run / 'checkpoints' / 'last.ckpt'}",
                     f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 34
    # the vocabulary came from the checkpoint, not from a new training of the tokenizer
    assert (tmp_path / "tokenizer.json").read_text() == (pretrain_run / "tokenizer.json").read_text()


@pytest.mark.parametrize("case", ["missing_file", "empty_corpus", "unknown_preset", "bad_override"])
def test_bad_input_gives_one_clear_error(case, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n")
    args = {
        "missing_file": ["data=text_files", f"data.train_files={tmp_path}/nope/*.txt"],
        "empty_corpus": ["data=text_files", f"data.train_files={empty}"],
        "unknown_preset": ["model=bert-colossal"],
        "bad_override": ["trainer.max_stepz=3"],
    }[case]
    result = run_cli("bertlite.pretrain", *args, f"hydra.run.dir={tmp_path}/run")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    expected = {"missing_file": "not found", "empty_corpus": "empty", "unknown_preset": "bert-colossal",
                "bad_override": "max_stepz"}[case]
    assert expected in result.stderr


def test_val_check_interval_counts_optimizer_steps_under_accumulation(tiny_corpus, tmp_path):
    """global_batch_size=16 with data.batch_size=8 accumulates 2 batches per step. Lightning counts
    val_check_interval in batches: validation came every 1.5 optimizer steps, mid-accumulation. Now every 3 steps."""
    result = run_cli("bertlite.pretrain", *TINY_RUN, "data=text_files", f"data.train_files={tiny_corpus}",
                     "global_batch_size=16", "trainer.max_steps=6", "trainer.val_check_interval=3",
                     f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [step for step, _ in logged(tmp_path, "val/loss")] == [2, 5]  # after optimizer steps 3 and 6
