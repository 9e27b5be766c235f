"""bertlite-glue: one start fine-tuned on several GLUE tasks, each a bertlite-finetune subprocess; glue.md and
glue.json hold every task's dev metrics (x 100), its wall time and the average."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

DATA_DIR = Path(os.environ.get("BERTLITE_DATA_DIR", REPO.parent / "shared" / "data"))
GLUE = "bertlite.cli.glue"
TINY = ["data.max_train_samples=64", "trainer.max_steps=4", "trainer.max_epochs=1", "data.max_seq_len=32",
        "data.batch_size=16", "data.eval_batch_size=16", "trainer.limit_val_batches=2",
        "callbacks.progress_bar=null"]


def hydra_list(key: str, overrides: list[str]) -> str:
    """key=['a=1','b=2']: an override inside a list holds '=', so Hydra needs it quoted."""
    return f"{key}=[" + ",".join(f"'{o}'" for o in overrides) + "]"


@pytest.mark.slow
@pytest.mark.skipif(not all((DATA_DIR / f"glue_{t}").is_dir() for t in ("cola", "stsb")),
                    reason=f"the GLUE data ({DATA_DIR}) is not present")
def test_glue_fine_tunes_each_task_and_reports(pretrain_run, tmp_path):
    ckpt = pretrain_run / "checkpoints" / "last.ckpt"
    result = run_cli(GLUE, f"pretrained={ckpt}", "tasks=[cola,stsb]", hydra_list("overrides", TINY),
                     f"paths.data_dir={DATA_DIR}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    report = json.loads((tmp_path / "glue.json").read_text())
    assert list(report["tasks"]) == ["cola", "stsb"] and report["average_over"] == ["cola", "stsb"]
    assert report["pretrained"] == str(ckpt) and report["overrides"] == TINY
    cola, stsb = report["tasks"]["cola"], report["tasks"]["stsb"]
    assert set(cola["metrics"]) == {"mcc"} and set(stsb["metrics"]) == {"pearson", "spearman"}
    for task, r in report["tasks"].items():
        child = json.loads((tmp_path / task / "metrics.json").read_text())  # the task's bertlite-finetune run
        for metric, value in r["metrics"].items():
            assert value == pytest.approx(100 * child["validation"][f"val/{metric}"])
        assert r["status"] == "ok" and -100 <= r["score"] <= 100
        assert r["wall_seconds"] >= child["train_seconds"] > 0 and 0 < r["train_examples"] <= 64
        assert r["args"][-len(TINY):] == TINY  # the overrides come last, after the task's defaults
        assert "Wrote" in (tmp_path / task / "output.log").read_text()
    assert cola["score"] == pytest.approx(cola["metrics"]["mcc"])
    assert stsb["score"] == pytest.approx((stsb["metrics"]["pearson"] + stsb["metrics"]["spearman"]) / 2)
    assert report["average"] == pytest.approx((cola["score"] + stsb["score"]) / 2)
    md = (tmp_path / "glue.md").read_text()
    assert f"| CoLA | MCC {cola['metrics']['mcc']:.2f} | {cola['score']:.2f} |" in md
    assert f"| STS-B | Pearson {stsb['metrics']['pearson']:.2f}, Spearman" in md
    assert f"| **average** (2 of 2 tasks) | | **{report['average']:.2f}** |" in md and str(ckpt) in md
    assert "Validation mcc" in result.stdout  # the child's output reaches the console too


def fake_finetune(validation: dict[str, dict], failing: set[str], calls: list):
    """Stands in for the bertlite-finetune subprocess: writes metrics.json (or fails) as it would."""

    def stream(cmd: list[str], log_path: Path) -> int:
        args = {k: v.strip("'") for k, v in (a.split("=", 1) for a in cmd[3:])}
        task, task_dir = args["data"], Path(args["hydra.run.dir"])
        glue_json = task_dir.parent / "glue.json"  # as the runner had written it before this task
        calls.append((cmd, json.loads(glue_json.read_text()) if glue_json.exists() else None))
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("a fake run\n")
        if task in failing:
            return 2
        report = {"validation": {f"val/{k}": v for k, v in validation[task].items()}, "train_seconds": 1.0,
                  "train_examples": 100}
        (task_dir / "metrics.json").write_text(json.dumps(report))
        return 0

    return stream


def test_scores_average_and_a_failed_task(monkeypatch, tmp_path):
    import bertlite.cli.glue as glue

    calls = []
    validation = {"sst2": {"acc": 0.9, "f1": 0.1}, "mrpc": {"f1": 0.8, "acc": 0.7, "mcc": 0.1},
                  "stsb": {"pearson": 0.6, "spearman": 0.5}}
    monkeypatch.setattr(glue, "stream", fake_finetune(validation, {"rte"}, calls))
    start = tmp_path / "start.ckpt"
    start.write_bytes(b"")
    run_dir = tmp_path / "run"
    result = run_cli(GLUE, f"pretrained={start}", "tasks=[sst2,rte,mrpc,stsb]",
                     hydra_list("overrides", ["a.b=1"]), hydra_list("task_defaults.mrpc", ["task.lr=3e-5"]),
                     f"hydra.run.dir={run_dir}")
    # the failed task is named with its log, the others still ran, and the exit status says so
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error:") and "rte (exit 2" in error
    assert str(run_dir / "rte" / "output.log") in error
    assert "sst2" not in error and "mrpc" not in error
    assert [c[0][3] for c in calls] == ["data=sst2", "data=rte", "data=mrpc", "data=stsb"]
    mrpc_cmd = calls[2][0]
    assert f"pretrained='{start}'" in mrpc_cmd and mrpc_cmd[-2:] == ["task.lr=3e-5", "a.b=1"]
    # the reports are written after every task: the third task found the first two recorded
    assert [r["status"] for r in calls[2][1]["tasks"].values()] == ["ok", "failed", "pending", "pending"]

    report = json.loads((run_dir / "glue.json").read_text())
    tasks = report["tasks"]
    assert tasks["sst2"]["metrics"] == {"acc": pytest.approx(90)}  # only the official metrics
    assert tasks["sst2"]["score"] == pytest.approx(90)
    assert tasks["mrpc"]["metrics"] == {"f1": pytest.approx(80), "acc": pytest.approx(70)}
    assert tasks["mrpc"]["score"] == pytest.approx(75) and tasks["stsb"]["score"] == pytest.approx(55)
    assert tasks["rte"]["status"] == "failed" and "metrics" not in tasks["rte"]
    assert report["average_over"] == ["sst2", "mrpc", "stsb"]
    assert report["average"] == pytest.approx((90 + 75 + 55) / 3)
    md = (run_dir / "glue.md").read_text()
    assert "| MRPC | F1 80.00, accuracy 70.00 | 75.00 |" in md and "| RTE | failed (exit 2)" in md
    assert "| **average** (3 of 4 tasks) | | **73.33** |" in md


@pytest.mark.parametrize("args,message", [
    (["pretrained={start}", "tasks=[rte,qnli]"], "unknown task(s) ['qnli']; choose from sst2, mrpc, rte, cola"),
    (["tasks=[rte]"], "give the model to fine-tune: pretrained="),
    (["pretrained={start}.typo"], "no such file or folder"),
    (["pretrained=hf:{start}.typo"], "no such folder"),
])
def test_bad_config_is_one_error_before_any_run(args, message, tmp_path):
    start = tmp_path / "start.ckpt"
    start.write_bytes(b"")
    run_dir = tmp_path / "run"
    result = run_cli(GLUE, *[a.format(start=start) for a in args], f"hydra.run.dir={run_dir}")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (run_dir / "rte").exists() and not (run_dir / "glue.json").exists()
