"""The layouts users' classification files come in, crossed: label kinds (strings, integers, boolean-like and
float-like strings) x label column (``label`` or another name) x text column (``text``, ``sentence`` or another
name) x format (CSV, TSV, JSONL, Parquet) x with and without a validation file.

Every combination, read with the columns named as the user would name them, trains one step and predicts
labels of its own; left at the defaults, a column the defaults do not name is one clear ``DataError``.
String labels in a column named ``label`` once crashed at the first batch.
"""

from __future__ import annotations

import csv
import itertools
import json
import random

import pytest
import torch
import torch.nn.functional as F

from bertlite.data.classification import ClassificationDataModule
from bertlite.data.tokenizer import train_wordpiece
from bertlite.errors import DataError
from bertlite.inference import Classifier
from bertlite.tasks import ClassificationTask

WORDS = "the film was good bad fine dull great plot cast ending long short".split()
LABELS = {  # label kind -> (values as written in the file, label names expected per format family)
    "string": (["negative", "neutral", "positive"], None),
    "integer": ([0, 1, 2], ["0", "1", "2"]),
    "boolean-like": (["false", "true"], None),
    "float-like": (["0.5", "1.5", "2.5"], None),
}
FORMATS = ("csv", "tsv", "jsonl", "parquet")
TINY = dict(arch="bert", d_model=32, n_layers=2, n_heads=2, d_ff=64, max_seq_len=32, dropout=0.0,
            attention_dropout=0.0)


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece([" ".join(WORDS)] * 20, vocab_size=60, min_frequency=1)


def rows(n: int, values: list, text_column: str, label_column: str, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{text_column: " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))),
             label_column: values[i % len(values)]}
            for i in range(n)]


def write(path_stem, fmt: str, data: list[dict]) -> str:
    path = f"{path_stem}.{fmt}"
    if fmt in ("csv", "tsv"):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(data[0]), delimiter="\t" if fmt == "tsv" else ",")
            writer.writeheader()
            writer.writerows(data)
    elif fmt == "jsonl":
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in data)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(data), path)
    return path


def expected_names(kind: str, fmt: str) -> list[str]:
    values, names = LABELS[kind]
    if names is not None:
        return names
    if kind == "boolean-like" and fmt in ("csv", "tsv"):
        return ["False", "True"]  # pandas reads true/false cells as booleans
    return sorted(values)


def one_step_then_predict(dm: ClassificationDataModule, tokenizer) -> list[str]:
    """One optimizer step on a real training batch, a validation batch scored, then ``Classifier.predict``
    through a checkpoint built as ``bertlite-finetune`` builds it."""
    dm.setup("fit")
    names = dm.find_label_names()
    task = ClassificationTask(dict(TINY, vocab_size=tokenizer.get_vocab_size()), num_labels=len(names),
                              label_names=names)
    batch = next(iter(dm.train_dataloader()))
    assert batch["labels"].dtype == torch.long and int(batch["labels"].max()) < len(names)
    optimizer = torch.optim.SGD(task.parameters(), lr=0.1)
    loss = F.cross_entropy(task(batch), batch["labels"])
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    val = next(iter(dm.val_dataloader()))
    assert task(val).shape == (len(val["labels"]), len(names))
    task.tokenizer_json = tokenizer.to_str()
    checkpoint = {"state_dict": task.state_dict()}
    task.on_save_checkpoint(checkpoint)
    return Classifier(checkpoint).predict(["the film was great", "dull plot"])


MATRIX = list(itertools.product(LABELS, ("label", "category"), ("text", "sentence", "review"), FORMATS, (True, False)))


@pytest.mark.parametrize("kind,label_column,text_column,fmt,with_validation", MATRIX,
                         ids=["-".join(map(str, m)) for m in MATRIX])
def test_layout_trains_and_predicts_or_fails_clearly(tmp_path, tokenizer, kind, label_column, text_column, fmt,
                                                     with_validation):
    values = LABELS[kind][0]
    files = {"train_file": write(tmp_path / "train", fmt, rows(16, values, text_column, label_column, 0))}
    if with_validation:
        files["validation_file"] = write(tmp_path / "dev", fmt, rows(6, values, text_column, label_column, 1))

    columns = dict(text_column=text_column, label_column=label_column)
    if kind == "float-like" and fmt in ("csv", "tsv"):
        # pandas reads the cells as floats: a regression target (tests/test_problem_types.py), as in HF's scripts
        auto = ClassificationDataModule(tokenizer, **files, **columns)
        assert auto.find_label_names() == [label_column] and auto.problem_type == "regression"
        with pytest.raises(DataError, match="holds numbers such as .* Set data.problem_type=regression"):
            ClassificationDataModule(tokenizer, **files, **columns, problem_type="single_label").find_label_names()
        return
    dm = ClassificationDataModule(tokenizer, **files, **columns, max_seq_len=16, batch_size=4, eval_batch_size=8)
    predictions = one_step_then_predict(dm, tokenizer)
    assert dm.find_label_names() == expected_names(kind, fmt)
    assert len(predictions) == 2 and set(predictions) <= set(dm.find_label_names())
    assert len(dm.datasets["validation"]) == (6 if with_validation else 2)

    if (text_column, label_column) != ("text", "label"):  # the defaults name other columns
        missing = text_column if text_column != "text" else label_column
        with pytest.raises(DataError, match=rf"column '(text|label)' not found; available columns: .*{missing}"):
            ClassificationDataModule(tokenizer, **files).load_raw()
