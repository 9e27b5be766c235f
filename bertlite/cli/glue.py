"""bertlite-glue: fine-tune one pretrained model on each GLUE task; report the dev scores and their average.

    bertlite-glue pretrained=outputs/pretrain/<run>/checkpoints/last.ckpt
    bertlite-glue pretrained=hf:/path/to/hf_bert_folder tasks=[sst2,mrpc]
    bertlite-glue pretrained=my-model/ "overrides=['trainer=gpu']"          # every task on a GPU
    bertlite-glue pretrained=... "task_defaults.rte=['trainer.max_epochs=10','task.lr=5e-5']"

Each task is an ordinary bertlite-finetune run in <run dir>/<task>/, started as a subprocess (its own memory,
seed and Lightning program, DDP included), with its output on the console and in <run dir>/<task>/output.log.
After every task, glue.md and glue.json in the run directory hold the results so far: dev metrics x 100, each
task's wall time, and the average (a task with two metrics scores their mean; the average is over the finished
tasks). A failed task is recorded and the others still run; the exit status is then 1 (2 for a bad config).
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from bertlite.atomic import write_text_atomically
from bertlite.cli.common import CONFIG_DIR, exit_on_user_error, quote_free_text
from bertlite.cli.runs import markdown_table, module_command, read_metrics, stream
from bertlite.errors import ConfigError

log = logging.getLogger("bertlite.glue")

# each task's official metrics (the keys of val/<metric> in its metrics.json), as GLUE reports them
METRICS = {"sst2": ("acc",), "mrpc": ("f1", "acc"), "rte": ("acc",), "cola": ("mcc",),
           "stsb": ("pearson", "spearman")}
NAMES = {"sst2": "SST-2", "mrpc": "MRPC", "rte": "RTE", "cola": "CoLA", "stsb": "STS-B"}
LABELS = {"acc": "accuracy", "f1": "F1", "mcc": "MCC", "pearson": "Pearson", "spearman": "Spearman"}


def check_config(cfg: DictConfig) -> list[str]:
    """The tasks to run; a ConfigError before anything runs for a missing start or an unknown task."""
    if OmegaConf.is_missing(cfg, "pretrained"):
        raise ConfigError("give the model to fine-tune: pretrained=<checkpoint | bertlite model folder | "
                          "hf:<HF BERT folder>> (pretrained=null: random initialisation)")
    tasks = [str(t) for t in ([cfg.tasks] if isinstance(cfg.tasks, str) else cfg.tasks or [])]
    unknown = [t for t in tasks if t not in METRICS]
    if unknown or not tasks:
        raise ConfigError(f"tasks={tasks}: unknown task(s) {unknown}; choose from {', '.join(METRICS)}")
    if cfg.pretrained is not None:
        start = str(cfg.pretrained)
        hf = start.startswith("hf:")
        if not Path(start[3:] if hf else start).exists():
            raise ConfigError(f"pretrained={start}: no such {'folder' if hf else 'file or folder'}")
    return list(dict.fromkeys(tasks))


def quoted(key: str, value) -> str:
    """key='value': a path quoted for Hydra's grammar (it may hold a comma or a space)."""
    return quote_free_text([f"{key}={value}"], (key,))[0]


def run_task(cfg: DictConfig, task: str, run_dir: Path) -> dict:
    """One bertlite-finetune run; its record for glue.json."""
    task_dir = run_dir / task
    defaults = list(cfg.task_defaults.get(task) or [])
    start = "pretrained=null" if cfg.pretrained is None else quoted("pretrained", cfg.pretrained)
    args = [f"data={task}", start, f"seed={cfg.seed}", quoted("paths.data_dir", cfg.paths.data_dir),
            quoted("hydra.run.dir", task_dir), *defaults, *cfg.overrides]
    record = {"status": "failed", "run_dir": str(task_dir), "log": str(task_dir / "output.log"),
              "task_defaults": defaults, "args": args}
    log.info("GLUE task %s: python -m bertlite.cli.finetune %s", task, " ".join(args))
    started = time.perf_counter()
    code = stream(module_command("bertlite.cli.finetune", args), task_dir / "output.log")
    record["wall_seconds"] = round(time.perf_counter() - started, 1)
    if code != 0:
        return {**record, "error": f"exit {code}"}
    if not (task_dir / "metrics.json").is_file():
        return {**record, "error": "no metrics.json"}
    report = read_metrics(task_dir)
    missing = [m for m in METRICS[task] if f"val/{m}" not in report["validation"]]
    if missing:
        return {**record, "error": f"metrics.json has no {', '.join('val/' + m for m in missing)}"}
    metrics = {m: 100 * report["validation"][f"val/{m}"] for m in METRICS[task]}
    return {**record, "status": "ok", "metrics": metrics, "score": statistics.fmean(metrics.values()),
            "train_seconds": report.get("train_seconds"), "train_examples": report.get("train_examples")}


def summary(cfg: DictConfig, records: dict[str, dict]) -> dict:
    done = [t for t, r in records.items() if r["status"] == "ok"]
    average = statistics.fmean(records[t]["score"] for t in done) if done else None
    return {"pretrained": cfg.pretrained, "overrides": list(cfg.overrides), "split": "validation",
            "scale": "metrics and scores x 100", "tasks": records, "average": average, "average_over": done}


def duration(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def table_rows(report: dict) -> list[list[str]]:
    """A row per task (its metrics and score, or why it has none) and the average's row."""
    rows = []
    for task, r in report["tasks"].items():
        if r["status"] == "ok":
            shown = ", ".join(f"{LABELS[m]} {v:.2f}" for m, v in r["metrics"].items())
            rows.append([NAMES[task], shown, f"{r['score']:.2f}", duration(r["wall_seconds"])])
        else:
            note = r["status"] if r["status"] != "failed" else f"failed ({r['error']}): see `{r['log']}`"
            rows.append([NAMES[task], note, "", duration(r.get("wall_seconds"))])
    total = sum(r.get("wall_seconds", 0) for r in report["tasks"].values())
    average = "" if report["average"] is None else f"**{report['average']:.2f}**"
    finished = f"{len(report['average_over'])} of {len(report['tasks'])} tasks"
    rows.append([f"**average** ({finished})", "", average, duration(total)])
    return rows


def markdown(report: dict) -> str:
    lines = ["# GLUE dev scores", "", f"Pretrained: `{report['pretrained']}`  ",
             f"Overrides for every task: `{report['overrides']}`  ",
             "Dev-set metrics x 100. A task with two metrics scores their mean; the average is over the "
             "tasks that finished.", "",
             *markdown_table(["task", "metric(s)", "score", "wall time"], table_rows(report), "llrr"), "",
             "Each task's own defaults (`task_defaults`, before the overrides above):", ""]
    lines += [f"- {NAMES[t]}: `{' '.join(r['task_defaults'])}`" for t, r in report["tasks"].items()
              if "task_defaults" in r]
    return "\n".join(lines) + "\n"


def write_reports(run_dir: Path, report: dict) -> None:
    write_text_atomically(run_dir / "glue.json", json.dumps(report, indent=2) + "\n")
    write_text_atomically(run_dir / "glue.md", markdown(report))


def glue(cfg: DictConfig) -> dict:
    from hydra.core.hydra_config import HydraConfig

    tasks = check_config(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    records = {task: {"status": "pending"} for task in tasks}
    for task in tasks:
        records[task] = run_task(cfg, task, run_dir)
        write_reports(run_dir, summary(cfg, records))  # partial results survive an interruption
    report = summary(cfg, records)
    log.info("\n%s", markdown(report))
    log.info("Wrote %s and %s", run_dir / "glue.md", run_dir / "glue.json")
    failed = [f"{t} ({r['error']}; log: {r['log']})" for t, r in records.items() if r["status"] != "ok"]
    if failed:
        print(f"error: GLUE task(s) failed: {'; '.join(failed)}; the other results are in "
              f"{run_dir / 'glue.md'}", file=sys.stderr)
        sys.exit(1)
    return report


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="glue")
@exit_on_user_error
def _main(cfg: DictConfig) -> None:
    glue(cfg)


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
