"""The equal-compute study script: every command it would run composes and builds its model, its results table
reads metrics.csv and TensorBoard's clock right, and a stopped study resumes without redoing finished runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from bertlite.cli.common import CONFIG_DIR, register_model_presets
from bertlite.models.config import config_from_dict
from bertlite.models.registry import PRETRAINING_MODELS
from scripts import recipe_study as study


def study_args(out: Path, *extra: str):
    return study.parse_args(["--out", str(out), *extra])


@pytest.fixture(scope="module")
def compose_job():
    """The config a command's overrides compose to (hydra.* overrides are the launcher's, not the job's)."""
    register_model_presets()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        def composed(run: study.Run, cmd: list[str]) -> dict:
            overrides = [o for o in cmd[3:] if not o.startswith("hydra.")]
            cfg = compose(config_name="pretrain" if run.pretraining else "finetune", overrides=overrides)
            return {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("model", "data", "tokenizer")} \
                | {"seed": cfg.seed, "pretrained": cfg.get("pretrained"), "max_steps": cfg.trainer.max_steps,
                   "val_check_interval": cfg.trainer.val_check_interval}

        yield composed
    GlobalHydra.instance().clear()


def without_seed(run: study.Run, cmd: list[str]) -> list[str]:
    return [o.replace(f"-s{run.seed}", "-s<seed>") for o in cmd if not o.startswith("seed=")]


def test_every_command_composes_and_each_pretraining_model_trains_a_step(tmp_path, compose_job):
    args = study_args(tmp_path / "study")
    planned = study.commands(study.plan(args.seeds), args)
    assert [run.name for run, _ in planned][:4] == ["classic-s0", "modern-s0", "classic-s1", "modern-s1"]
    # the other seeds' commands differ from seed 0's only in the seed (and the run's name)
    first = {(run.recipe, run.task): without_seed(run, cmd) for run, cmd in planned[1:] if run.seed == 0}
    first[("classic", "")] = without_seed(*planned[2])  # classic-s0 trains the tokenizer that the others read
    assert all(without_seed(run, cmd) == first[(run.recipe, run.task)] for run, cmd in planned[1:])
    shared = str(tmp_path / "study" / "tokenizer.json")
    composed = {}
    for run, cmd in planned:
        if run.seed != 0 or run.task and run.pretrained_from != "classic-s0":
            continue  # composes as seed 0's command does
        cfg = composed[run.name] = compose_job(run, cmd)
        assert cfg["seed"] == run.seed
        if not run.pretraining:
            assert cfg["pretrained"].endswith(f"{run.pretrained_from}/checkpoints/last.ckpt")
            continue
        assert cfg["data"]["eval_mlm_probability"] == 0.15 and cfg["data"]["eval_seed"] == 0
        assert cfg["max_steps"] % cfg["val_check_interval"] == 0  # the last step is scored
        assert cfg["tokenizer"]["path"] == (None if run.name == "classic-s0" else shared)  # one tokenizer for all
        tiny = {"d_model": 32, "n_heads": 2, "d_ff": 48, "vocab_size": 64, "pad_token_id": 0, "max_seq_len": 16}
        config = config_from_dict({**cfg["model"], **tiny})  # the run's blocks and layers, at a test's width
        model = PRETRAINING_MODELS[config.arch](config)
        ids = torch.randint(1, 64, (2, 16))
        model(ids, torch.ones_like(ids), mlm_positions=torch.tensor([3, 21]),  # flat indices of (2, 16)
              mlm_labels=torch.tensor([7, 9])).loss.backward()
    assert composed["classic+mask15"]["data"]["mlm_probability"] == 0.15
    assert composed["classic+local32"]["model"]["local_attention"] == 32
    assert composed["classic+rope"]["model"]["position"] == "rope"
    assert composed["modern-s0"]["model"]["activation"] == "geglu"


def write_events(folder: Path, began: float, stamps: dict[int, float]) -> None:
    """A TensorBoard event file: opened at ``began``, val/loss written at each step's stamp (seconds)."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    folder.mkdir(parents=True)
    with open(folder / "events.out.tfevents.1.host", "wb") as f:
        writer = RecordWriter(f)
        writer.write(event_pb2.Event(wall_time=began, file_version="brain.Event:2").SerializeToString())
        for step, seconds in stamps.items():
            value = summary_pb2.Summary.Value(tag="val/loss", simple_value=1.0)
            event = event_pb2.Event(wall_time=began + seconds, step=step, summary=summary_pb2.Summary(value=[value]))
            writer.write(event.SerializeToString())


def fake_pretraining(out: Path, name: str, losses: list[float], params: int = 5_000_000) -> None:
    """A finished pretraining run: validations 60 s apart, the throughput rows of metrics.csv, and study.json."""
    folder = out / name
    steps = [200 * (i + 1) - 1 for i in range(len(losses))]
    write_events(folder / "tensorboard", 1.0e9, {step: 60.0 * (i + 1) for i, step in enumerate(steps)})
    rows = ["epoch,step,train/loss,train/tokens_per_sec,val/loss", "0,9,7.0,3000,", "0,19,6.9,3400,"]
    rows += [f"0,{step},,,{loss}" for step, loss in zip(steps, losses)]
    (folder / "logs").mkdir()
    (folder / "logs" / "metrics.csv").write_text("\n".join(rows) + "\n")
    (folder / study.MARKER).write_text(json.dumps({"params": params, "steps": 1300}))


def fake_finetuning(out: Path, name: str, metric: str, score: float) -> None:
    (out / name).mkdir()
    (out / name / "metrics.json").write_text(json.dumps({"metric": metric, "validation": {f"val/{metric}": score}}))
    (out / name / study.MARKER).write_text("{}")


def test_results_give_the_table_and_the_time_to_reach_the_classic_final_loss(tmp_path):
    out = tmp_path / "study"
    fake_pretraining(out, "classic-s0", [6.0, 5.0])
    fake_pretraining(out, "modern-s0", [5.5, 4.5], params=4_400_000)  # reaches 5.0 at 1.5 min of classic's 2.0
    fake_pretraining(out, "classic-s1", [6.2, 5.2])
    fake_pretraining(out, "modern-s1", [5.3, 4.3], params=4_400_000)  # reaches 5.2 at 1.1 min
    fake_pretraining(out, "classic+rope", [6.1, 5.1])  # never reaches 5.0
    for name, acc in [("classic-s0-sst2", 0.80), ("classic-s1-sst2", 0.82), ("modern-s0-sst2", 0.83)]:
        fake_finetuning(out, name, "acc", acc)
    fake_finetuning(out, "modern-s0-conll", "entity_f1", 0.7)

    results = study.collect(out, study.plan([0, 1]))
    assert results["modern-s0"]["time_to_classic_final"] == pytest.approx(0.75)
    assert results["modern-s1"]["time_to_classic_final"] == pytest.approx(0.55)
    assert results["classic-s0"]["time_to_classic_final"] == pytest.approx(1.0)
    assert results["classic+rope"]["time_to_classic_final"] is None
    assert results["modern-s0"]["points"] == [(199, 1.0, 5.5), (399, 2.0, 4.5)]
    rows = {row[0]: row for row in study.table_rows(results)}
    assert rows["classic"][2:10] == ["0, 1", "5.00 M", "1,300", "3,200", "5.100 ± 0.141", "2.0 ± 0.0", "1.00 ± 0.00",
                                     "0.810 ± 0.014"]
    assert rows["modern"][6:11] == ["4.400 ± 0.141", "2.0 ± 0.0", "0.65 ± 0.14", "0.830", "0.700"]
    assert rows["classic+rope"][1] == "`model.position=rope`"
    assert rows["classic+rope"][8] == "not reached"

    study.write_report(out, study.plan([0, 1]))
    assert "| modern | `experiment=modern_mini` |" in (out / "results.md").read_text()
    assert json.loads((out / "results.json").read_text())["modern-s1"]["finetuning"] == {}


def test_a_stopped_study_skips_finished_runs_and_restarts_unfinished_ones_afresh(tmp_path, monkeypatch):
    out = tmp_path / "study"
    (out / "classic-s0").mkdir(parents=True)
    (out / "classic-s0" / "tokenizer.json").write_text('{"the": "first run\'s tokenizer"}')
    (out / "classic-s0" / study.MARKER).write_text("{}")
    (out / "modern-s0" / "checkpoints").mkdir(parents=True)
    (out / "modern-s0" / "checkpoints" / "last.ckpt").write_text("half-way")
    ran = []

    def fake_stream(cmd, log_path):
        ran.append(cmd)
        return 0

    monkeypatch.setattr(study, "stream", fake_stream)
    monkeypatch.setattr(study, "pretraining_facts", lambda folder: {"params": 1, "steps": 2})
    args = study_args(out, "--seeds", "0", "--runs", "classic-s0", "modern-s0", "classic+rope")
    study.run_study(study.select(study.plan(args.seeds), args.runs), args)

    assert [cmd[cmd.index("-m") + 2] for cmd in ran] == ["experiment=modern_mini", "experiment=gutenberg_mini"]
    assert all(f"tokenizer.path={out / 'tokenizer.json'}" in cmd for cmd in ran)
    assert (out / "tokenizer.json").read_text() == (out / "classic-s0" / "tokenizer.json").read_text()
    (moved,) = (out / "abandoned").iterdir()
    assert moved.name.startswith("modern-s0-") and (moved / "checkpoints" / "last.ckpt").read_text() == "half-way"
    assert json.loads((out / "modern-s0" / study.MARKER).read_text())["steps"] == 2

    monkeypatch.setattr(study, "stream", lambda cmd, log_path: 1)
    with pytest.raises(SystemExit, match="classic-s1 failed .exit 1.*again starts this one afresh"):
        study.run_study(study.plan([0, 1])[:3], args)
    assert not (out / "classic-s1" / study.MARKER).exists()


def test_unknown_run_names_are_refused_with_the_list(tmp_path):
    with pytest.raises(SystemExit, match="unknown run.* classic-s7; .*classic-s0, modern-s0"):
        study.select(study.plan([0]), ["classic-s7"])


def test_dry_run_prints_every_command_and_runs_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(study, "stream", lambda cmd, log_path: pytest.fail("a dry run ran a command"))
    study.main(["--out", str(tmp_path / "study"), "--dry-run"])
    printed = capsys.readouterr().out.splitlines()
    commands = [line for line in printed if line.startswith("python -m bertlite.")]
    assert len(commands) == len(study.plan([0, 1, 2])) == 6 + len(study.INGREDIENTS) + 6 * len(study.FINETUNING)
    assert printed[0] == "# classic-s0 (to run)" and not (tmp_path / "study").exists()
