"""bertlite-compare: BERT, GPT and the encoder-decoder Transformer on equal footing.

Each architecture of the chosen size is pretrained with its own objective (MLM, causal LM, text infilling)
on the same corpus for the same number of steps of the same blocks, then fine-tuned on the same
classification set. Every run is an ordinary bertlite-pretrain / bertlite-finetune run in a subfolder.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import statistics
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from bertlite.atomic import write_text_atomically
from bertlite.cli.common import CONFIG_DIR, exit_on_user_error
from bertlite.cli.runs import markdown_table, module_command, read_metrics, run_command
from bertlite.errors import BertliteError

log = logging.getLogger("bertlite.compare")
OBJECTIVE = {"bert": "mlm", "gpt": "clm", "transformer": "seq2seq"}


def run(module: str, args: list[str]) -> float:
    """One bertlite command to its end, its output on the console; its wall time in seconds."""
    log.info("python -m %s %s", module, " ".join(args))
    finished = run_command(module_command(module, args))
    if finished.returncode != 0:
        raise BertliteError(f"{module} failed (exit {finished.returncode}) with: {' '.join(args)}")
    return finished.seconds


def read_log(run_dir: Path) -> list[dict]:
    with (run_dir / "logs" / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def column(rows: list[dict], key: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]


def count_parameters(checkpoint: Path) -> int:
    """Every parameter of the pretraining network once: tied embeddings once, embeddings included."""
    import torch

    from bertlite.models.config import config_from_dict
    from bertlite.models.registry import PRETRAINING_MODELS
    from bertlite.sources import read_checkpoint

    config = config_from_dict(read_checkpoint(checkpoint)["bertlite"]["model_config"])
    with torch.device("meta"):
        return sum(p.numel() for p in PRETRAINING_MODELS[config.arch](config).parameters())


def compare(cfg: DictConfig) -> Path:
    from hydra.core.hydra_config import HydraConfig

    out = Path(HydraConfig.get().runtime.output_dir)
    p, f = cfg.pretrain, cfg.finetune
    results = {}
    for arch in cfg.architectures:
        pre_dir, ft_dir = out / arch / "pretrain", out / arch / "finetune"
        pre_args = [f"model={arch}-{cfg.size}", f"task={OBJECTIVE[arch]}", f"data={p.data}",
                    f"data.batch_size={p.batch_size}", f"data.max_seq_len={p.max_seq_len}",
                    f"trainer.max_steps={p.steps}", f"trainer.val_check_interval={p.val_check_interval}",
                    f"paths.data_dir={cfg.paths.data_dir}", f"hydra.run.dir={pre_dir}", *p.overrides]
        pre_seconds = run("bertlite.pretrain", pre_args)
        ckpt = pre_dir / "checkpoints" / "last.ckpt"
        ft_args = [f"data={f.data}", f"pretrained={ckpt}", f"paths.data_dir={cfg.paths.data_dir}",
                   f"hydra.run.dir={ft_dir}", *f.overrides]
        run("bertlite.finetune", ft_args)
        report = read_metrics(ft_dir)
        rows = read_log(pre_dir)
        results[arch] = {
            "objective": OBJECTIVE[arch], "params": count_parameters(ckpt), "pretrain_seconds": pre_seconds,
            "tokens_per_sec": statistics.median([v for _, v in column(rows, "train/tokens_per_sec")] or [math.nan]),
            "train_loss": column(rows, "train/loss"), "val_loss": column(rows, "val/loss"),
            "finetune_metric": report["metric"],
            "finetune_score": report["validation"][f"val/{report['metric']}"],
            "finetune_seconds": report["train_seconds"],
        }
    write_text_atomically(out / "comparison.json", json.dumps(results, indent=2))
    write_text_atomically(out / "comparison.md", report_markdown(cfg, results))
    plot_curves(results, out / "learning_curves.png")
    log.info("Wrote %s", out / "comparison.md")
    return out / "comparison.md"


def report_markdown(cfg: DictConfig, results: dict) -> str:
    p, f = cfg.pretrain, cfg.finetune
    tokens = p.steps * p.batch_size * p.max_seq_len
    lines = [f"# bertlite comparison: {cfg.size} size, {p.data}, {tokens / 1e6:.1f} M pretraining tokens each",
             "", f"Pretraining: {p.steps} steps of {p.batch_size} x {p.max_seq_len}-token blocks, "
             f"overrides {list(p.overrides)}. Fine-tuning: {f.data}, overrides {list(f.overrides)}.",
             "Parameters: every weight once (tied input/output embeddings counted once), embeddings included.",
             "The validation losses are per objective (masked tokens, next tokens, reconstructed tokens) and are "
             "not comparable across rows.", ""]
    header = ["model", "objective", "parameters", "pretrain tokens/s", "pretrain time", "final val loss",
              "fine-tune dev metric", "fine-tune time"]
    rows = [[f"{arch}-{cfg.size}", r["objective"], f"{r['params'] / 1e6:.2f} M", f"{r['tokens_per_sec']:.0f}",
             f"{r['pretrain_seconds'] / 60:.1f} min", f"{r['val_loss'][-1][1]:.3f}",
             f"{r['finetune_metric']} {r['finetune_score']:.3f}", f"{r['finetune_seconds'] / 60:.1f} min"]
            for arch, r in results.items()]
    lines += markdown_table(header, rows, "llrrrrrr")
    return "\n".join(lines) + "\n"


def plot_curves(results: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no learning_curves.png (pip install 'bertlite[plot]')")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arch, r in results.items():
        color = None
        if r["train_loss"]:
            steps, losses = zip(*r["train_loss"])
            color = ax.plot(steps, losses, alpha=0.5, label=f"{arch} ({r['objective']}) train")[0].get_color()
        if r["val_loss"]:
            vsteps, vlosses = zip(*r["val_loss"])
            ax.plot(vsteps, vlosses, "o-", color=color, label=f"{arch} val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nat per predicted token)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="compare")
@exit_on_user_error
def _main(cfg: DictConfig) -> None:
    log.info("\n%s", OmegaConf.to_yaml(cfg))
    compare(cfg)


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
