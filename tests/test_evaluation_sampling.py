"""Evaluation scores every row once, on any number of processes, and a limited evaluation (limit_val_batches)
scores rows spread over the range of lengths, not the shortest ones."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch

from bertlite.data.batching import EvaluationSampler, spread_order
from bertlite.data.classification import ClassificationDataModule
from bertlite.data.tokenizer import train_wordpiece
from bertlite.tasks import ClassificationTask

TINY = dict(arch="bert", d_model=32, n_layers=2, n_heads=2, d_ff=64, max_seq_len=32, dropout=0.0,
            attention_dropout=0.0)
WORDS = "the film was good bad dull great plot acting music long short".split()


@pytest.mark.parametrize("n, batch_size", [(5, 2), (5, 1), (5, 8), (8, 3), (1, 4)])
def test_two_ranks_share_the_rows_without_repeating_any(n, batch_size):
    lengths = torch.randint(1, 30, (n,), generator=torch.Generator().manual_seed(n)).tolist()
    shares = [list(EvaluationSampler(lengths, batch_size, num_replicas=2, rank=r)) for r in (0, 1)]
    if n >= 2:
        assert sorted(shares[0] + shares[1]) == list(range(n))  # each row exactly once, on one rank
        assert abs(len(shares[0]) - len(shares[1])) <= 1
    else:  # fewer rows than ranks: every rank still gets a batch, so none waits for the others forever
        assert shares == [[0], [0]]
    assert [len(EvaluationSampler(lengths, batch_size, num_replicas=2, rank=r)) for r in (0, 1)] == \
        [len(s) for s in shares]


def test_the_ranks_come_from_the_process_group(monkeypatch):
    """Under DDP (a process group started, as Lightning does before it asks for the loaders) each rank takes
    its own share; Lightning keeps the sampler, a DistributedSampler, instead of putting its padding one on."""
    from torch.utils.data import DistributedSampler

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *args: 2)
    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(torch.distributed, "get_rank", lambda *args: rank)
        sampler = EvaluationSampler([3, 1, 4, 1, 5], batch_size=2)
        assert isinstance(sampler, DistributedSampler) and (sampler.num_replicas, sampler.rank) == (2, rank)
        shares.append(list(sampler))
    assert sorted(shares[0] + shares[1]) == [0, 1, 2, 3, 4]


def test_batches_hold_rows_of_neighbouring_lengths():
    lengths = torch.randint(1, 100, (1000,), generator=torch.Generator().manual_seed(0)).tolist()
    order = list(EvaluationSampler(lengths, batch_size=10))
    assert sorted(order) == list(range(1000))
    rank_of = {i: r for r, i in enumerate(sorted(range(1000), key=lambda i: lengths[i]))}
    for start in range(0, 1000, 10):  # each batch: ten rows next to each other in length order
        ranks = sorted(rank_of[i] for i in order[start:start + 10])
        assert ranks == list(range(ranks[0], ranks[0] + 10))


@pytest.mark.parametrize("n", range(1, 40))
def test_spread_order_puts_both_ends_first_and_visits_each_batch_once(n):
    order = spread_order(n)
    assert sorted(order) == list(range(n))
    assert order[:2] == [0, n - 1][:n]
    for k in range(3, n + 1):  # any k first batches leave no gap wider than about n / (k - 1) * 2
        chosen = sorted(order[:k])
        assert max(b - a for a, b in zip(chosen, chosen[1:])) <= 2 * (n - 1) / (k - 1) + 1


def write_csv(path: Path, rows: list[dict]) -> str:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def rows_of_lengths(word_counts: list[int]) -> list[dict]:
    return [{"text": " ".join(WORDS[(i + k) % len(WORDS)] for k in range(n)), "label": ["neg", "pos"][i % 2]}
            for i, n in enumerate(word_counts)]


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece([" ".join(WORDS)] * 20, vocab_size=60)


def datamodule(tokenizer, tmp_path, validation_words: list[int], eval_batch_size: int) -> ClassificationDataModule:
    train = write_csv(tmp_path / "train.csv", rows_of_lengths([3, 4, 5, 6] * 4))
    dev = write_csv(tmp_path / "dev.csv", rows_of_lengths(validation_words))
    dm = ClassificationDataModule(tokenizer, train_file=train, validation_file=dev, max_seq_len=32,
                                  eval_batch_size=eval_batch_size, pad_to_multiple_of=1)
    dm.setup("validate")
    return dm


class RecordLengths(L.Callback):
    def __init__(self):
        self.lengths: list[int] = []

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.lengths += batch["attention_mask"].sum(1).tolist()


def test_limited_validation_scores_short_and_long_rows(tokenizer, tmp_path):
    """limit_val_batches=2 of 8 batches: the rows scored reach the shortest and the longest lengths (before, they
    were the 8 shortest of 32)."""
    dm = datamodule(tokenizer, tmp_path, validation_words=list(range(1, 33)), eval_batch_size=4)
    lengths = sorted(dm.datasets["validation"]["length"])
    assert len(dm.val_dataloader()) == 8
    record = RecordLengths()
    task = ClassificationTask(dict(TINY, vocab_size=tokenizer.get_vocab_size()), num_labels=2,
                              label_names=["neg", "pos"])
    trainer = L.Trainer(accelerator="cpu", devices=1, limit_val_batches=2, logger=False, callbacks=[record],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(task, datamodule=dm, verbose=False)
    assert len(record.lengths) == 8
    assert min(record.lengths) <= lengths[len(lengths) // 4]
    assert max(record.lengths) >= lengths[3 * len(lengths) // 4]
