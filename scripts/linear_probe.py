"""How much of a classification task a frozen encoder already knows: a linear probe.

    python scripts/linear_probe.py outputs/pretrain_gutenberg_mini/<run>/checkpoints/last.ckpt --train-size 2000

For the checkpoint and for the same architecture with fresh random weights, the script embeds SST-2's training
subset and dev set without training the encoder (mean over the tokens of the input embeddings, and of the last
layer), fits a logistic regression on the training features and prints dev accuracy. A pretrained encoder whose
features hold sentiment scores above the random one; fine-tuning cannot be expected to gain from one that does not.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

import torch

import bertlite
from bertlite.models.heads import pool


def read_sst2(path: Path) -> tuple[list[str], torch.Tensor]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows], torch.tensor([int(r["label"]) for r in rows])


@torch.inference_mode()
def features(predictor, encoder: torch.nn.Module, texts: list[str]) -> dict[str, torch.Tensor]:
    """{"embeddings": (N, C), "last layer": (N, C)}: token averages, padding excluded."""
    shape = (len(texts), predictor.config.d_model)
    out = {"embeddings": torch.empty(shape), "last layer": torch.empty(shape)}
    for idx, batch in predictor.batches(texts, None, 128):
        ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
        embedded = encoder.embeddings(ids, types)  # (B, T, C)
        out["embeddings"][idx] = pool(embedded, mask, "mean").float().cpu()
        out["last layer"][idx] = pool(encoder(ids, mask, types), mask, "mean").float().cpu()
    return out


def logistic_regression_accuracy(x_train, y_train, x_dev, y_dev, l2: float = 1e-3) -> float:
    """Standardised features, L2-regularised logistic regression fitted with L-BFGS."""
    mean, std = x_train.mean(0), x_train.std(0).clamp(min=1e-6)
    x_train, x_dev = (x_train - mean) / std, (x_dev - mean) / std
    linear = torch.nn.Linear(x_train.size(1), 2)
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(x_train), y_train) + l2 * linear.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float((linear(x_dev).argmax(-1) == y_dev).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path, help="MLM pretraining checkpoints")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    texts, labels = read_sst2(args.data_dir / "glue_sst2" / "train.tsv")
    chosen = random.Random(args.seed).sample(range(len(texts)), args.train_size)
    train_texts, train_labels = [texts[i] for i in chosen], labels[chosen]
    dev_texts, dev_labels = read_sst2(args.data_dir / "glue_sst2" / "dev.tsv")

    print("| encoder | SST-2 dev acc, probe on mean input embeddings | on the mean last layer |")
    print("|---|---:|---:|")
    for i, path in enumerate(args.checkpoints):
        predictor = bertlite.load(path, device="cpu")
        pretrained = predictor.model.bert.eval()
        torch.manual_seed(args.seed)
        starts = [(str(path), pretrained)]
        if i == 0:  # the same architecture and tokenizer, fresh weights
            starts.append(("random init", type(predictor.model)(predictor.config).bert.eval()))
        for name, encoder in starts:
            train, dev = features(predictor, encoder, train_texts), features(predictor, encoder, dev_texts)
            accs = [logistic_regression_accuracy(train[k], train_labels, dev[k], dev_labels) for k in train]
            print(f"| {name} | {accs[0]:.3f} | {accs[1]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
