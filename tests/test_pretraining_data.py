"""Pretraining data: every file format loads, bad files fail clearly, packing keeps the token stream intact."""

from __future__ import annotations

import json

import datasets
import pytest

from bertlite.data.pretraining import PretrainingDataModule, load_text_corpus, tokenize_and_pack
from bertlite.data.tokenizer import train_wordpiece
from bertlite.errors import DataError
from tests.conftest import tiny_corpus_paragraphs

TEXTS = tiny_corpus_paragraphs(120)


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(TEXTS, vocab_size=300)


def write(tmp_path, fmt: str):
    rows = [{"text": t, "id": i} for i, t in enumerate(TEXTS)]
    path = tmp_path / f"corpus.{fmt}"
    if fmt == "txt":
        path.write_text("\n".join(TEXTS) + "\n")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "csv":
        datasets.Dataset.from_list(rows).to_csv(str(path), index=False)
    elif fmt == "parquet":
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    return path


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "csv", "parquet"])
def test_every_local_format_loads(tmp_path, fmt):
    dsd = load_text_corpus(train_files=str(write(tmp_path, fmt)), validation_fraction=0.1, seed=1)
    assert len(dsd["train"]) + len(dsd["validation"]) == len(TEXTS)
    assert set(dsd["train"]["text"]) <= set(TEXTS)


def test_validation_carve_is_seeded(tmp_path):
    path = str(write(tmp_path, "jsonl"))
    a = load_text_corpus(train_files=path, validation_fraction=0.1, seed=3)["validation"]["text"]
    b = load_text_corpus(train_files=path, validation_fraction=0.1, seed=3)["validation"]["text"]
    c = load_text_corpus(train_files=path, validation_fraction=0.1, seed=4)["validation"]["text"]
    assert a == b and a != c


def test_wrong_column_lists_the_available_ones(tmp_path):
    with pytest.raises(DataError, match=r"'body' not found; available columns: text, id"):
        load_text_corpus(train_files=str(write(tmp_path, "jsonl")), text_column="body")


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_text_corpus(train_files=str(tmp_path / "missing.txt"))
    with pytest.raises(DataError, match="not found"):
        load_text_corpus(train_files=str(tmp_path / "*.jsonl"))
    empty = tmp_path / "blank.txt"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match="empty"):
        load_text_corpus(train_files=str(empty))


def test_non_utf8_file_is_reported(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\u00e9 cr\u00e8me br\u00fbl\u00e9e\n".encode("latin-1") * 50)
    with pytest.raises(DataError, match="UTF-8"):
        load_text_corpus(train_files=str(bad))


def test_packing_keeps_the_stream(tokenizer):
    ds = datasets.Dataset.from_dict({"text": TEXTS[:50]})
    blocks = tokenize_and_pack(ds, tokenizer, "text", max_seq_len=32)["input_ids"]
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    assert all(len(b) == 32 and b[0] == cls for b in blocks)
    stream = [i for t in TEXTS[:50] for i in tokenizer.encode(t, add_special_tokens=False).ids + [sep]]
    packed = [i for b in blocks for i in b[1:]]
    assert packed == stream[: len(packed)] and len(stream) - len(packed) < 31


def test_datamodule_batches_and_fixed_validation_masks(tmp_path, tokenizer):
    kwargs = dict(train_files=str(write(tmp_path, "txt")), validation_fraction=0.2, max_seq_len=32, batch_size=4,
                  eval_batch_size=8, seed=0)
    dm = PretrainingDataModule(tokenizer, **kwargs)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (4, 32)
    assert batch["mlm_positions"].shape == batch["mlm_labels"].shape
    first = [b["mlm_positions"] for b in dm.val_dataloader()]
    again = PretrainingDataModule(tokenizer, **kwargs)
    again.setup("fit")
    assert all((a == b).all() for a, b in zip(first, (b["mlm_positions"] for b in again.val_dataloader())))


@pytest.mark.parametrize("objective", ["mlm", "seq2seq"])
def test_ranks_draw_different_masks(tmp_path, tokenizer, objective):
    """Every rank seeds the global RNG alike (seed_everything). The masks (and infilling spans) come from a
    generator per block, so two ranks do not corrupt alike at the same step. Every block here holds the same
    tokens (one sentence per block), so only the random draws can tell the ranks apart."""
    import types

    import torch

    sentence = "the quick brown fox jumps over the lazy dog near the river bank"
    n = len(tokenizer.encode(sentence, add_special_tokens=False).ids)
    corpus = tmp_path / "same.txt"
    corpus.write_text((sentence + "\n") * 200)
    dm = PretrainingDataModule(tokenizer, objective=objective, train_files=str(corpus), validation_fraction=0.2,
                               max_seq_len=n + 2, batch_size=4, seed=0)  # [CLS] + sentence + [SEP]
    dm.setup("fit")
    corrupted = {}
    for rank in (0, 1):
        dm.trainer = types.SimpleNamespace(world_size=2, global_rank=rank)
        torch.manual_seed(0)
        batch = next(iter(dm.train_dataloader()))
        corrupted[rank] = batch["input_ids"] if objective == "mlm" else batch["src_ids"]
    blocks = dm.train_dataset[:]["input_ids"]
    assert len(blocks) > 8 and (blocks == blocks[0]).all()  # identical blocks
    assert corrupted[0].shape != corrupted[1].shape or not torch.equal(corrupted[0], corrupted[1])
