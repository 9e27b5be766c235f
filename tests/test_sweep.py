"""Hyperparameter search: hparams_search=finetune_optuna runs an Optuna sweep of tiny fine-tunes, each trial in its
own folder with its metrics.json, and the sweeper's optimization_results.yaml names the best of them."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import REPO, run_cli

# A tiny fine-tune from random initialisation: 64 training rows, a 2-layer d_model 64 model, a 200-word tokenizer.
# The searched values (conf/hparams_search/finetune_optuna.yaml) stay as they are: at most 4 epochs of 4 steps.
TINY_SWEEP = ["data=csv", "data.text_column=review", "data.label_column=sentiment", "data.max_seq_len=32",
              "data.max_train_samples=64", "data.eval_batch_size=64", "pretrained=null", "model=bert-tiny",
              "model.d_model=64", "model.n_heads=2", "model.d_ff=128", "model.max_seq_len=32",
              "tokenizer.vocab_size=200", "callbacks.progress_bar=null", "logger=csv", "hydra.sweeper.n_trials=3"]


@pytest.mark.slow
def test_optuna_sweep_of_tiny_finetunes(sentiment_csv, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    train, dev = sentiment_csv
    sweep_dir = tmp_path / "sweep"
    result = run_cli("bertlite.finetune", "--multirun", "hparams_search=finetune_optuna", *TINY_SWEEP,
                     f"data.train_file={train}", f"data.validation_file={dev}", f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 0, result.stderr[-3000:]

    searched = set(yaml.safe_load((REPO / "conf" / "hparams_search" / "finetune_optuna.yaml").read_text())
                   ["hydra"]["sweeper"]["params"])
    assert searched == {"task.lr", "data.batch_size", "trainer.max_epochs", "task.warmup_ratio", "dropout"}
    trials = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in trials] == ["0", "1", "2"]
    values, chosen = [], []
    for trial in trials:
        report = json.loads((trial / "metrics.json").read_text())
        assert report["metric"] == "acc"  # two labels: accuracy, as data.metric=auto resolves it
        values.append(report["validation"]["val/acc"])
        overrides = yaml.safe_load((trial / ".hydra" / "overrides.yaml").read_text())
        chosen.append({k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in overrides) if k in searched})
        assert set(chosen[-1]) == searched  # every searched value reached the trial's command line
        assert 1e-5 <= chosen[-1]["task.lr"] <= 1e-3

    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna" and set(results["best_params"]) == searched
    assert results["best_value"] == pytest.approx(max(values), abs=1e-9)  # maximised: the best trial's val/acc
    assert results["best_params"] in chosen
    assert values[chosen.index(results["best_params"])] == pytest.approx(max(values), abs=1e-9)


def test_a_sweep_without_the_optuna_extra_is_one_clear_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "hydra_plugins.hydra_optuna_sweeper" else real(name, *a))
    result = run_cli("bertlite.finetune", "--multirun", "hparams_search=finetune_optuna")
    assert result.returncode == 2
    assert result.stderr.strip() == ('error: hparams_search=finetune_optuna needs Hydra\'s Optuna sweeper: '
                                     'pip install -e ".[optuna]" (or pip install hydra-optuna-sweeper)')
