"""The equal-compute study: the 2024 encoder recipe (experiment=modern_mini) against the classic 15-minute bert-mini
(experiment=gutenberg_mini) on this CPU, three seeds each; each modern ingredient alone on the classic recipe (one
seed); then SST-2 and CoNLL-2003 fine-tuning from every main run's final checkpoint.

    python -m scripts.recipe_study --out outputs/recipe_study             # hours on 2 cores; stop and rerun at will
    python -m scripts.recipe_study --out outputs/recipe_study --dry-run   # the commands, nothing run
    python -m scripts.recipe_study --out outputs/recipe_study --report    # results of the runs finished so far

Every run is an ordinary bertlite-pretrain / bertlite-finetune run in its own folder under --out, run in the order
of the table: classic-s0, modern-s0, the other seeds, the ingredients, then fine-tuning.
Every pretraining run is scored alike: one tokenizer (the first run trains it, the others read <out>/tokenizer.json),
the experiments' validation blocks, the same fixed 15% evaluation masks (data.eval_seed=0, whatever the run's seed)
and their wall-clock guard (trainer.max_time).
Resumable: a folder holding study.json is a finished run and is skipped; a folder without it is moved to
<out>/abandoned/ and its run starts afresh. The table, results.json and val_loss.png are written at the end, or at
any time with --report.
The clock: metrics.csv has no time column, so each validation's time is the wall-clock stamp TensorBoard's writer puts
on its val/loss, counted from the event file's first record, written as fit begins (the data already prepared, the
tokenizer trained): minutes of training and validation, as trainer.max_time counts them.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import shlex
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from bertlite.atomic import write_text_atomically
from bertlite.cli.compare import count_parameters
from bertlite.cli.runs import markdown_table, module_command, read_metrics, stream
from bertlite.precision import fast_precision
from bertlite.sources import read_checkpoint

PRETRAIN, FINETUNE = "bertlite.pretrain", "bertlite.finetune"
RECIPES = {"classic": "gutenberg_mini", "modern": "modern_mini"}  # recipe -> its experiment
# name -> (overrides on the classic recipe, what the row measures). The 64-token blocks decide two of them: a local
# window must be shorter than a block to change anything, and the classic recipe already masks 30%.
INGREDIENTS = {
    "rope": (("model.position=rope",), "rotary positions (base 10,000) instead of ALiBi"),
    "geglu": (("model.activation=geglu", "model.d_ff=683"),
              "GeGLU feed-forward; d_ff 683, 2/3 of 1,024, keeps the parameter count"),
    "prenorm": (("model.norm_first=true", "model.bias=false", "model.first_layer_attn_norm=false"),
                "pre-LN without biases, with the embedding norm and a final norm, as ModernBERT"),
    "mask15": (("data.mlm_probability=0.15",),
               "15% of the tokens predicted in training, as BERT: the classic recipe already predicts 30%, so this "
               "row measures 30% masking by taking it away"),
    "local32": (("model.local_attention=32", "model.global_attn_every_n_layers=3"),
                "local attention within 16 tokens either side in layers 1 and 2 (0 and 3 global); modern_mini's "
                "128-token window covers a whole 64-token block"),
}
FINETUNING = {  # task -> (bertlite-finetune overrides, the table's column)
    "sst2": (("data=sst2", "trainer.max_epochs=1", "task.lr=1e-4"), "SST-2 dev acc"),
    "conll": (("task=token_classification", "data=conll2003", "trainer.max_epochs=3", "task.lr=5e-4"),
              "CoNLL-2003 dev F1"),
}
# Every pretraining run: the fixed 15% evaluation masks, and a validation every 100 steps, so that the curve has 13
# points and the last comes at step 1,300, the end of the schedule (the experiments' 200 would leave the last 100
# steps, where the learning rate decays to zero, unscored).
SCORING = ("data.eval_mlm_probability=0.15", "data.eval_seed=0", "trainer.val_check_interval=100")
MARKER = "study.json"  # written in a run's folder once its command has exited 0
SHARED_TOKENIZER = "tokenizer.json"


@dataclass(frozen=True)
class Run:
    """One command of the study. Pretraining runs are named <recipe>-s<seed> or classic+<ingredient>;
    fine-tuning runs <pretraining run>-<task>."""

    name: str
    module: str
    recipe: str  # the table row: classic, modern, classic+rope, ...
    seed: int
    overrides: tuple[str, ...]
    pretrained_from: str = ""  # fine-tuning: the pretraining run whose last.ckpt it starts from
    task: str = ""

    @property
    def pretraining(self) -> bool:
        return self.module == PRETRAIN


def plan(seeds: list[int]) -> list[Run]:
    """Every run of the study, the most important first."""
    main = [Run(f"{recipe}-s{seed}", PRETRAIN, recipe, seed, (f"experiment={experiment}",))
            for seed in seeds for recipe, experiment in RECIPES.items()]
    ingredients = [Run(f"classic+{name}", PRETRAIN, f"classic+{name}", seeds[0],
                       (f"experiment={RECIPES['classic']}", *overrides))
                   for name, (overrides, _) in INGREDIENTS.items()]
    finetuning = [Run(f"{run.name}-{task}", FINETUNE, run.recipe, run.seed, overrides, run.name, task)
                  for run in main for task, (overrides, _) in FINETUNING.items()]
    return [*main, *ingredients, *finetuning]


def select(runs: list[Run], names: list[str] | None) -> list[Run]:
    if not names:
        return runs
    unknown = sorted(set(names) - {r.name for r in runs})
    if unknown:
        raise SystemExit(f"error: unknown run(s) {', '.join(unknown)}; this study's runs (--seeds decides the "
                         f"seed numbers): {', '.join(r.name for r in runs)}")
    return [r for r in runs if r.name in names]


def command(run: Run, args: argparse.Namespace, shared_tokenizer: bool) -> list[str]:
    """``python -m bertlite.<module> ...`` for ``run``; ``shared_tokenizer``: every pretraining run but the one that
    trains the study's tokenizer reads it. The user's --set / --finetune-set overrides come last, so they win."""
    folder = args.out / run.name
    common = [f"seed={run.seed}", f"hydra.run.dir={folder}", "callbacks.progress_bar=null"]
    if args.data_dir:
        common.append(f"paths.data_dir={args.data_dir}")
    if run.pretraining:
        tokenizer = [f"tokenizer.path={args.out / SHARED_TOKENIZER}"] if shared_tokenizer else []
        overrides = [*run.overrides, *SCORING, *tokenizer, *common, *args.set]
    else:
        checkpoint = args.out / run.pretrained_from / "checkpoints" / "last.ckpt"
        overrides = [*run.overrides, f"pretrained={checkpoint}", f"trainer.precision={fast_precision()}", *common,
                     *args.finetune_set]
    return module_command(run.module, overrides)


def commands(runs: list[Run], args: argparse.Namespace) -> list[tuple[Run, list[str]]]:
    """Each run with its command: the first pretraining run trains the tokenizer unless the study has one."""
    shared = (args.out / SHARED_TOKENIZER).exists()
    planned = []
    for run in runs:
        planned.append((run, command(run, args, shared)))
        shared = shared or run.pretraining
    return planned


def shown(cmd: list[str]) -> str:
    """A command as the user would type it: ``python -m ...``, not this interpreter's path."""
    return shlex.join(["python", *cmd[1:]])


def finished(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def set_aside(folder: Path, out: Path) -> None:
    """An unfinished run's folder goes to <out>/abandoned/, kept, so that its run starts in a fresh one."""
    if not folder.exists():
        return
    target = out / "abandoned" / f"{folder.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    target.parent.mkdir(parents=True, exist_ok=True)
    folder.rename(target)
    print(f"{folder.name}: an unfinished run, moved to {target}; it starts again from scratch", flush=True)


def pretraining_facts(folder: Path) -> dict:
    """Parameters (every weight once, embeddings included) and optimizer steps of a finished pretraining run."""
    checkpoint = folder / "checkpoints" / "last.ckpt"
    return {"params": count_parameters(checkpoint), "steps": int(read_checkpoint(checkpoint)["global_step"])}


def execute(run: Run, cmd: list[str], folder: Path) -> None:
    """Run ``cmd`` to its end (output on the console and in <folder>/study.log), then mark the run finished."""
    print(f"\n== {run.name}\n$ {shown(cmd)}", flush=True)
    started = time.perf_counter()
    code = stream(cmd, folder / "study.log")
    if code != 0:
        raise SystemExit(f"error: {run.name} failed (exit {code}); its output is in {folder / 'study.log'}. "
                         "Finished runs are kept: the same command again starts this one afresh")
    record = {"name": run.name, "command": cmd[1:], "seconds": round(time.perf_counter() - started, 1)}
    if run.pretraining:
        record.update(pretraining_facts(folder))
    write_text_atomically(folder / MARKER, json.dumps(record, indent=2) + "\n")


def run_study(runs: list[Run], args: argparse.Namespace) -> None:
    """Each run not finished yet, in order; the first finished pretraining run's tokenizer becomes the study's."""
    shared = args.out / SHARED_TOKENIZER
    for run, cmd in commands(runs, args):
        folder = args.out / run.name
        if finished(folder):
            print(f"{run.name}: finished, skipped", flush=True)
        else:
            if run.pretrained_from and not finished(args.out / run.pretrained_from):
                raise SystemExit(f"error: {run.name} fine-tunes {run.pretrained_from}, which has not finished: "
                                 f"add --runs {run.pretrained_from} (or run the whole study)")
            set_aside(folder, args.out)
            execute(run, cmd, folder)
        if run.pretraining and not shared.exists():
            write_text_atomically(shared, (folder / "tokenizer.json").read_text())


# ---- results -------------------------------------------------------------------------------------------------------

def validation_clock(folder: Path) -> tuple[float, dict[int, float]]:
    """The TensorBoard events of a run: when its first record was written (fit began), and the wall-clock time
    (seconds since the epoch) of each step's val/loss."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    files = sorted(folder.glob("events.out.tfevents.*"))
    if not files:
        raise SystemExit(f"error: {folder} holds no TensorBoard event file, which times the validations: "
                         "pip install 'bertlite[tensorboard]' and run the study again")
    events = [event for f in files for event in EventFileLoader(str(f)).Load()]
    stamps = {e.step: e.wall_time for e in events if any(v.tag == "val/loss" for v in e.summary.value)}
    return min(e.wall_time for e in events), stamps


def read_curve(folder: Path) -> tuple[list[tuple[int, float, float]], float]:
    """(step, minutes since fit began, validation loss) at each validation, and the median train/tokens_per_sec."""
    with (folder / "logs" / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    losses = {int(r["step"]): float(r["val/loss"]) for r in rows if r.get("val/loss")}
    speeds = [float(r["train/tokens_per_sec"]) for r in rows if r.get("train/tokens_per_sec")]
    began, stamps = validation_clock(folder / "tensorboard")
    points = [(step, (stamps[step] - began) / 60, loss) for step, loss in sorted(losses.items()) if step in stamps]
    return points, statistics.median(speeds) if speeds else math.nan


def minutes_to_reach(points: list[tuple[int, float, float]], target: float) -> float | None:
    """When the validation loss first reaches ``target``, interpolated linearly in time between the two validations
    around the crossing; None if it never does."""
    previous = None
    for _, minutes, loss in points:
        if loss <= target:
            if previous is None:
                return minutes
            before_minutes, before_loss = previous
            return before_minutes + (minutes - before_minutes) * (before_loss - target) / (before_loss - loss)
        previous = (minutes, loss)
    return None


def finetuning_score(folder: Path) -> float:
    report = read_metrics(folder)
    return report["validation"][f"val/{report['metric']}"]


def collect(out: Path, runs: list[Run]) -> dict[str, dict]:
    """Every finished pretraining run: its curve, speed, size and fine-tuning scores, and the time it took to reach
    the final validation loss of the classic run of its seed, as a fraction of that run's time."""
    results = {}
    for run in runs:
        folder = out / run.name
        if run.pretraining and finished(folder):
            points, tokens_per_sec = read_curve(folder)
            record = json.loads((folder / MARKER).read_text())
            results[run.name] = {"recipe": run.recipe, "seed": run.seed, "overrides": list(run.overrides),
                                 "points": points, "final_val_loss": points[-1][2] if points else math.nan,
                                 "minutes": points[-1][1] if points else math.nan,
                                 "tokens_per_sec": tokens_per_sec, "params": record["params"],
                                 "steps": record["steps"], "finetuning": {}}
        elif not run.pretraining and finished(folder) and run.pretrained_from in results:
            results[run.pretrained_from]["finetuning"][run.task] = finetuning_score(folder)
    for result in results.values():
        classic = results.get(f"classic-s{result['seed']}")
        reached = minutes_to_reach(result["points"], classic["final_val_loss"]) if classic else None
        result["time_to_classic_final"] = None if reached is None else reached / classic["minutes"]
    return results


def spread(values: list[float], digits: int) -> str:
    """mean ± standard deviation over seeds (the value alone for one seed; empty for none)."""
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def fraction_cell(fractions: list[float | None]) -> str:
    reached = [f for f in fractions if f is not None]
    if not reached:
        return "not reached"
    return spread(reached, 2) + ("" if len(reached) == len(fractions) else f" ({len(reached)} of {len(fractions)})")


def table_rows(results: dict[str, dict]) -> list[list[str]]:
    """One row per recipe (its seeds pooled), in the order of the study."""
    rows = []
    for recipe in dict.fromkeys(r["recipe"] for r in results.values()):
        mine = [r for r in results.values() if r["recipe"] == recipe]
        # a recipe's experiment, or an ingredient's overrides of the classic one
        changes = " ".join(mine[0]["overrides"] if recipe in RECIPES else mine[0]["overrides"][1:])
        scores = [spread([r["finetuning"][t] for r in mine if t in r["finetuning"]], 3) for t in FINETUNING]
        rows.append([recipe, f"`{changes}`", ", ".join(str(r["seed"]) for r in mine),
                     f"{statistics.mean(r['params'] for r in mine) / 1e6:.2f} M",
                     f"{statistics.mean(r['steps'] for r in mine):,.0f}",
                     f"{statistics.mean(r['tokens_per_sec'] for r in mine):,.0f}",
                     spread([r["final_val_loss"] for r in mine], 3), spread([r["minutes"] for r in mine], 1),
                     fraction_cell([r["time_to_classic_final"] for r in mine]), *scores])
    return rows


def report_markdown(results: dict[str, dict]) -> str:
    header = ["recipe", "changes", "seeds", "parameters", "steps", "tokens/s", "final val loss", "minutes",
              "time to classic's final loss", *(column for _, column in FINETUNING.values())]
    lines = ["Final val loss: the last validation's MLM loss on the fixed 15% masks, mean ± sd over seeds. Minutes: "
             "wall-clock from the start of fit to that validation (TensorBoard's stamps). Time to classic's final "
             "loss: when the run's validation loss first reaches the final loss of the classic run of the same "
             "seed (interpolated between validations), as a fraction of that classic run's minutes.", "",
             *markdown_table(header, table_rows(results), "lllrrrrrr" + "r" * len(FINETUNING)), ""]
    lines += [f"- classic+{name}: {note}" for name, (_, note) in INGREDIENTS.items()
              if f"classic+{name}" in results]
    return "\n".join(lines) + "\n"


def plot_curves(results: dict[str, dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'bertlite[plot]')")
        return
    colors = {recipe: f"C{i}" for i, recipe in enumerate(dict.fromkeys(r["recipe"] for r in results.values()))}
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, r in results.items():
        if r["points"]:
            _, minutes, losses = zip(*r["points"])
            ax.plot(minutes, losses, "o-" if r["recipe"] in RECIPES else "o:", ms=3, color=colors[r["recipe"]],
                    label=name)
    ax.set_xlabel("wall-clock minutes since training began")
    ax.set_ylabel("validation MLM loss (fixed 15% masks, nat)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out: Path, runs: list[Run]) -> None:
    results = collect(out, runs)
    if not results:
        print(f"No finished pretraining run in {out} yet")
        return
    write_text_atomically(out / "results.json", json.dumps(results, indent=2) + "\n")
    write_text_atomically(out / "results.md", report_markdown(results))
    plot_curves(results, out / "val_loss.png")
    print("\n" + (out / "results.md").read_text() + f"\nWrote {out / 'results.md'}, results.json and val_loss.png")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="the study's folder: one folder per run inside")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                        help="seeds of the main runs; the ingredient runs use the first")
    parser.add_argument("--runs", nargs="*", default=None, help="only these runs, by name (default: all)")
    parser.add_argument("--data-dir", default=None, help="paths.data_dir (default: the config's)")
    parser.add_argument("--set", nargs="*", default=[], help="overrides for every pretraining run, after the study's")
    parser.add_argument("--finetune-set", nargs="*", default=[], help="overrides for every fine-tuning run")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--report", action="store_true", help="only write the results of the finished runs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    everything = plan(args.seeds)
    runs = select(everything, args.runs)
    if args.dry_run:
        for run, cmd in commands(runs, args):
            state = "finished: skipped" if finished(args.out / run.name) else "to run"
            print(f"# {run.name} ({state})\n{shown(cmd)}")
        return
    if not args.report:
        if importlib.util.find_spec("tensorboard") is None:
            raise SystemExit("error: the study times each validation by TensorBoard's event files: "
                             "pip install 'bertlite[tensorboard]'")
        run_study(runs, args)
    write_report(args.out, everything)


if __name__ == "__main__":
    main()
