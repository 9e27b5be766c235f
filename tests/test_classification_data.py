"""Classification data: labels, pairs, truncation, dynamic padding, length grouping, and the shipped data sets."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch

from bertlite.data.batching import LengthGroupedSampler
from bertlite.data.classification import ClassificationDataModule
from bertlite.data.tokenizer import train_wordpiece
from bertlite.errors import DataError
from tests.conftest import REPO, sentiment_rows

DATA_DIR = Path(os.environ.get("BERTLITE_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="module")
def tokenizer():
    texts = [r["review"] for r in sentiment_rows(300, 0)]
    return train_wordpiece(texts, vocab_size=120)


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_string_labels_sorted_and_pairs_get_segments(tmp_path, tokenizer):
    rows = [{"a": r["review"], "b": r["review"][::-1], "y": r["sentiment"]} for r in sentiment_rows(50, 2)]
    dm = ClassificationDataModule(tokenizer, train_file=str(write_csv(tmp_path / "t.csv", rows)), text_column="a",
                                  text_pair_column="b", label_column="y", max_seq_len=24, batch_size=8)
    dm.setup()
    assert dm.find_label_names() == ["neg", "pos"]
    assert len(dm.datasets["train"]) + len(dm.datasets["validation"]) == 50  # 10% carved off for validation
    batch = next(iter(dm.train_dataloader()))
    lengths = batch["attention_mask"].sum(1)
    # padded to the batch's longest row only, rounded up to a multiple of 8
    assert batch["input_ids"].shape[1] == -(-int(lengths.max()) // 8) * 8 <= 24
    assert (batch["token_type_ids"] == 1).any() and set(batch["labels"].tolist()) <= {0, 1}
    real = batch["attention_mask"].bool()
    assert (batch["input_ids"][~real] == tokenizer.token_to_id("[PAD]")).all()


def test_integer_labels_sort_numerically(tmp_path, tokenizer):
    rows = [{"text": f"the film was dull {i}", "label": i % 12} for i in range(60)]
    dm = ClassificationDataModule(tokenizer, train_file=str(write_csv(tmp_path / "t.csv", rows)))
    assert dm.find_label_names() == [str(i) for i in range(12)]


def test_unseen_validation_label_is_an_error(tmp_path, tokenizer):
    train = write_csv(tmp_path / "t.csv", [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}])
    dev = write_csv(tmp_path / "d.csv", [{"text": "meh", "label": "neutral"}])
    dm = ClassificationDataModule(tokenizer, train_file=str(train), validation_file=str(dev))
    with pytest.raises(DataError, match="never seen in training: \\['neutral'\\]"):
        dm.setup()


def test_missing_column_and_single_label(tmp_path, tokenizer):
    train = write_csv(tmp_path / "t.csv", [{"text": "good", "label": "pos"}, {"text": "fine", "label": "pos"}])
    with pytest.raises(DataError, match="available columns: text, label"):
        ClassificationDataModule(tokenizer, train_file=str(train), label_column="stars").setup()
    with pytest.raises(DataError, match="at least two"):
        ClassificationDataModule(tokenizer, train_file=str(train)).setup()


def test_truncation_and_empty_texts(tmp_path, tokenizer):
    rows = [{"text": "the film was dull " * 50, "label": "neg"}, {"text": "", "label": "pos"}] + \
           [{"text": r["review"], "label": r["sentiment"]} for r in sentiment_rows(20, 3)]
    path = write_csv(tmp_path / "t.csv", rows)
    dm = ClassificationDataModule(tokenizer, train_file=str(path), validation_file=str(path), max_seq_len=16)
    dm.setup()
    assert max(dm.datasets["validation"]["length"]) == 16
    assert len(dm.datasets["train"]) == len(rows) - 1  # the empty text is skipped in training...
    assert len(dm.datasets["validation"]) == len(rows)  # ...and kept (scored) in evaluation


def test_length_grouped_sampler():
    lengths = torch.randint(3, 100, (1000,)).tolist()
    order = list(LengthGroupedSampler(lengths, batch_size=10, window=20, seed=0))
    assert sorted(order) == list(range(1000))
    spread = sum(max(lengths[i] for i in order[k:k + 10]) - min(lengths[i] for i in order[k:k + 10])
                 for k in range(0, 1000, 10)) / 100
    random_spread = sum(max(lengths[k:k + 10]) - min(lengths[k:k + 10]) for k in range(0, 1000, 10)) / 100
    assert spread < 0.2 * random_spread
    assert order != list(LengthGroupedSampler(lengths, batch_size=10, window=20, seed=1))


# The shipped data configs against the row counts and columns in each SOURCE.md.
SHIPPED = {
    "sst2": ({"train": 67349, "validation": 872, "test": 1821}, ["0", "1"]),
    "mrpc": ({"train": 3668, "validation": 408, "test": 1725}, ["0", "1"]),
    "rte": ({"train": 2490, "validation": 277}, ["entailment", "not_entailment"]),
    "cola": ({"train": 8551, "validation": 1043}, ["0", "1"]),
    "sms_spam": ({"train": 4459, "validation": 1115}, ["ham", "spam"]),
}


@pytest.mark.skipif(not DATA_DIR.is_dir(), reason="../shared/data is not present")
@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_data_configs_read_the_real_files(name):
    from tests.test_configs import compose_resolved
    from hydra.utils import instantiate

    cfg, _ = compose_resolved("finetune", [f"data={name}", f"paths.data_dir={DATA_DIR}"])
    dm = instantiate(cfg.data)
    raw = dm.load_raw()
    counts, labels = SHIPPED[name]
    assert {s: len(raw[s]) for s in raw} == counts
    assert dm.find_label_names() == labels
    first = raw["train"][0]
    assert first[dm.text_column] and not first[dm.text_column].startswith("\ufeff")
    if dm.text_pair_column:
        assert first[dm.text_pair_column]


def test_empty_label_cell_in_a_numeric_column_is_an_error(tmp_path, tokenizer):
    """pandas reads an empty cell of an integer column as NaN (and the column as float): no silent 'nan' class."""
    path = tmp_path / "t.csv"
    path.write_text("text,label\n" + "".join(f"the value was valid,{i % 2}\n" for i in range(10)) + "the name,\n")
    with pytest.raises(DataError, match="rows without a label"):
        ClassificationDataModule(tokenizer, train_file=str(path)).find_label_names()


def test_hub_error_names_the_fine_tuning_file_option():
    dm = ClassificationDataModule(path="no-such-user/no-such-dataset")
    with pytest.raises(DataError, match=r"data.train_file=<file>") as info:
        dm.load_raw()
    assert "train_files" not in str(info.value)
