"""The unigram baseline of a pretraining run, beside the run's own validation loss.

The baseline predicts every masked token from the training corpus's token frequencies, ignoring the
context; its cross-entropy is measured on the run's own (fixed) validation masks. A model that learned
anything from context ends below it.

    python -m scripts.unigram_baseline outputs/pretrain_gutenberg_mini/<run>
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bertlite.data.tokenizer import load_tokenizer


def unigram_cross_entropy(train_ids: torch.Tensor, val_labels: torch.Tensor, vocab_size: int,
                          is_special: torch.Tensor) -> float:
    """Cross-entropy (nats) of the add-one-smoothed unigram distribution of the non-special training tokens."""
    counts = torch.bincount(train_ids.flatten(), minlength=vocab_size).double()
    counts[is_special] = 0
    counts[~is_special] += 1.0  # add-one smoothing: no token the validation text holds gets probability 0
    log_p = counts.log() - counts.sum().log()
    targets = val_labels[val_labels != -100]
    return float(-log_p[targets].mean())


def loss_curve(run_dir: Path) -> list[dict]:
    metrics = run_dir / "logs" / "metrics.csv"
    if not metrics.exists():
        return []
    with metrics.open() as f:
        return list(csv.DictReader(f))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a bertlite-pretrain run directory")
    args = parser.parse_args()
    cfg = OmegaConf.load(args.run_dir / "config.yaml")
    tokenizer = load_tokenizer(args.run_dir / "tokenizer.json")
    datamodule = instantiate(cfg.data)
    datamodule.set_tokenizer(tokenizer)
    datamodule.setup("fit")
    train_ids = torch.as_tensor(datamodule.train_dataset.with_format("numpy")["input_ids"])
    val_labels = torch.as_tensor(datamodule.val_dataset.with_format("numpy")["labels"])
    baseline = unigram_cross_entropy(train_ids, val_labels, tokenizer.get_vocab_size(),
                                     datamodule.objective.masker.is_special)
    n_targets = int((val_labels != -100).sum())

    rows = loss_curve(args.run_dir)
    print(f"validation: {len(val_labels)} blocks, {n_targets} masked targets (fixed seed {cfg.data.seed})")
    print(f"unigram baseline cross-entropy: {baseline:.3f} nat (perplexity {math.exp(baseline):.0f})")
    print("\n| step | train/loss | val/loss | below baseline |\n|---:|---:|---:|---:|")
    train_loss = None
    last_val = None
    for row in rows:
        if row.get("train/loss"):
            train_loss = float(row["train/loss"])
        if row.get("val/loss"):
            last_val = float(row["val/loss"])
            print(f"| {row['step']} | {train_loss if train_loss is not None else float('nan'):.3f} "
                  f"| {last_val:.3f} | {baseline - last_val:+.3f} |")
    if last_val is None:
        print("(no validation loss logged yet)")
        sys.exit(1)
    print(f"\nfinal val/loss {last_val:.3f} nat: {baseline - last_val:.3f} nat below the unigram baseline "
          f"{baseline:.3f}")


if __name__ == "__main__":
    main()
