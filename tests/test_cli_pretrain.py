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
    # saves pass weights_only=False themselves: no log line that reads like an unsafe load
    assert "weights_only" not in result.stdout + result.stderr
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


def test_two_phase_pretraining_extends_learned_positions(tiny_corpus, tmp_path):
    """Phase 1 at 128 tokens, phase 2 (init_from) at 256: the learned position table grows, the trained rows
    are kept and the new rows start as copies, so the phase-2 model starts with phase 1's outputs at positions
    < 128 (checked on a phase-2 run at learning rate 0), and phase 2 trains."""
    import bertlite
    from bertlite.cli.pretrain import extend_positions

    one, frozen, two = tmp_path / "one", tmp_path / "frozen", tmp_path / "two"
    base = [*TINY_RUN, "data=text_files", f"data.train_files={tiny_corpus}", "model.max_seq_len=128",
            "model.dropout=0", "model.attention_dropout=0", "trainer.max_steps=5", "trainer.val_check_interval=5",
            "data.batch_size=4", "data.max_eval_blocks=4", "data.validation_fraction=0.1"]
    result = run_cli("bertlite.pretrain", *base, "data.max_seq_len=128", f"hydra.run.dir={one}")
    assert result.returncode == 0, result.stderr[-3000:]
    phase1 = one / "checkpoints" / "last.ckpt"
    for run_dir, extra in ((frozen, ["task.lr=0"]), (two, [])):
        result = run_cli("bertlite.pretrain", *base, "data.max_seq_len=256", f"init_from={phase1}",
                         f"hydra.run.dir={run_dir}", *extra)
        assert result.returncode == 0, result.stderr[-3000:]
    first, start = bertlite.load(phase1).model, bertlite.load(frozen / "checkpoints" / "last.ckpt").model
    table = start.bert.embeddings.position.weight
    assert table.shape[0] == 256 and first.config.max_seq_len == 128
    assert torch.equal(table[:128], first.bert.embeddings.position.weight)
    assert torch.equal(table[128:], table[:128])  # the new rows start as copies
    ids = torch.randint(5, first.config.vocab_size, (2, 120))
    with torch.no_grad():
        assert torch.allclose(start(ids).logits, first(ids).logits, atol=1e-6)
    trained = bertlite.load(two / "checkpoints" / "last.ckpt")
    assert trained.model.config.max_seq_len == 256 and len(logged(two, "train/loss")) == 5
    assert not torch.equal(trained.model.bert.embeddings.position.weight[128:], table[128:])
    # sinusoidal and ALiBi models have no table to extend: the weights pass through unchanged
    weights = {"model.x.position.weight": torch.ones(3, 2), "model.y.weight": torch.ones(3, 2)}
    assert extend_positions(weights, {"model.y.weight": torch.ones(3, 2)}) == weights
