"""Streaming data that breaks: a stream with no block to train on is one error before training (not an endless
wait), a shard that fails mid-read is skipped with a warning or stops the run after a checkpoint
(data.on_bad_shard), and a SIGTERM while the loop waits for data stops the run at once."""

from __future__ import annotations

import collections
import gzip
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import datasets
import lightning as L
import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from bertlite.data.pretraining import PretrainingDataModule, load_text_stream
from bertlite.data.streaming import StreamingBlocks, stream_loader
from bertlite.data.tokenizer import train_wordpiece
from bertlite.errors import DataError
from bertlite.tasks.resilience import SaveOnInterrupt
from tests.conftest import TINY_RUN, run_cli

WORDS = "the cat sat on a mat and dog ran to box of red blue green house tree river stone light".split()
SEQ = 16  # a document of SEQ - 2 words is one block: [CLS] + its words + [SEP]


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece([" ".join(WORDS)] * 20, vocab_size=120)  # every word one token


def documents(n: int, seed: int) -> list[str]:
    return [" ".join(WORDS[(seed + i + k) % len(WORDS)] for k in range(SEQ - 2)) for i in range(n)]


def jsonl_gz(path, texts) -> str:
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    return str(path)


def truncate(path) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:len(data) // 2])


def blocks(files, tokenizer, **kw) -> collections.Counter:
    data = StreamingBlocks(load_text_stream("files", files), tokenizer, max_seq_len=SEQ, shuffle_buffer=1, passes=1,
                           docs_per_read=8, **kw)
    return collections.Counter(tuple(row["input_ids"].tolist()) for row in data)


def good_and_bad_shards(folder, kind: str) -> tuple[list[str], str]:
    """Two readable shards and one that fails only when read: a truncated .jsonl.gz, a latin-1 .txt, a .jsonl
    with an unparsable line or with a null line (which crashes Arrow's reader if it gets there). Returns (the good
    files, the bad file)."""
    folder.mkdir()
    ending = {"gz": "jsonl.gz", "latin1": "txt", "json": "jsonl", "null": "jsonl"}[kind]
    good = [folder / f"a{i}.{ending}" for i in range(2)]
    bad = folder / f"b-bad.{ending}"
    for i, path in enumerate([*good, bad]):
        texts = documents(30, seed=i)
        if kind == "gz":
            jsonl_gz(path, texts)
        elif kind == "latin1":
            path.write_bytes("\n".join(texts + ["caf\xe9"] if path == bad else texts).encode("latin-1"))
        else:
            lines = [json.dumps({"text": t}) for t in texts]
            broken = '{"text": broken' if kind == "json" else "null"
            path.write_text("\n".join(lines + [broken] if path == bad else lines) + "\n")
    if kind == "gz":
        truncate(bad)
    return [str(p) for p in good], str(bad)


@pytest.mark.parametrize("kind", ["gz", "latin1", "json", "null"])
def test_an_unreadable_shard_is_skipped_with_a_warning_and_every_good_block_trains(tmp_path, tokenizer, kind,
                                                                                   caplog):
    good, bad = good_and_bad_shards(tmp_path / "shards", kind)
    expected = blocks(good, tokenizer)
    with caplog.at_level(logging.WARNING, logger="bertlite.data.shards"):
        seen = blocks([*good, bad], tokenizer)
    assert seen == expected and sum(expected.values()) == 60
    warnings = [r.getMessage() for r in caplog.records if "Skipping" in r.getMessage()]
    assert len(warnings) == 1 and bad in warnings[0] and "only its first 0 blocks are used" in warnings[0]


def test_on_bad_shard_error_stops_with_an_error_naming_the_shard(tmp_path, tokenizer):
    good, bad = good_and_bad_shards(tmp_path / "shards", "gz")
    with pytest.raises(DataError) as exc:
        blocks([*good, bad], tokenizer, on_bad_shard="error")
    message = str(exc.value)
    assert "\n" not in message and bad in message and "EOFError" in message and "data.on_bad_shard=skip" in message


@pytest.mark.parametrize("kind", ["latin1", "null"])
def test_tokenizer_training_from_a_stream_follows_on_bad_shard(tmp_path, caplog, kind):
    from bertlite.data.shards import stream_texts

    good, bad = good_and_bad_shards(tmp_path / "shards", kind)
    stream = load_text_stream("files", [*good, bad])
    with caplog.at_level(logging.WARNING, logger="bertlite.data.shards"):
        assert list(stream_texts(stream, on_bad_shard="skip")) == documents(30, 0) + documents(30, 1)
    assert any(bad in r.getMessage() for r in caplog.records)
    with pytest.raises(DataError, match="b-bad"):
        list(stream_texts(stream, on_bad_shard="error"))


def streaming_module(tokenizer, train_files, **kw) -> PretrainingDataModule:
    return PretrainingDataModule(tokenizer, train_files=train_files, max_seq_len=SEQ, streaming=True, **kw)


def test_a_stream_without_a_block_to_train_on_is_one_error_before_training(tmp_path, tokenizer):
    """A file shorter than one block, all shards blank, and every block held out for validation: each an error
    that names the files and the block length (the loop would otherwise wait forever for a first block)."""
    val = jsonl_gz(tmp_path / "val.jsonl.gz", documents(4, 9))
    short = tmp_path / "short.txt"
    short.write_text("the cat sat\n")
    blank = [jsonl_gz(tmp_path / f"blank{i}.jsonl.gz", ["  ", "\t"]) for i in range(2)]
    five = jsonl_gz(tmp_path / "five.jsonl.gz", documents(5, 0))  # 5 blocks, all 5 held out
    cases = [(streaming_module(tokenizer, str(short), validation_files=val), str(short)),
             (streaming_module(tokenizer, blank, validation_files=val), blank[0]),
             (streaming_module(tokenizer, five, validation_blocks=5), five)]
    for datamodule, named in cases:
        with pytest.raises(DataError) as exc:
            datamodule.setup("fit")
        message = str(exc.value)
        assert "\n" not in message and named in message and f"no full block of {SEQ} tokens" in message
    assert "held out for validation" in message


@pytest.mark.slow
def test_streaming_a_file_shorter_than_one_block_exits_2_with_one_line(tmp_path, tiny_corpus):
    short = tmp_path / "short.txt"
    short.write_text("Too short.\n")  # a few tokens, whatever the vocabulary: blocks hold 32
    result = run_cli("bertlite.pretrain", *TINY_RUN, "data=text_files", "data.streaming=true",
                     f"data.train_files={short}", f"data.validation_files={tiny_corpus}",
                     f"hydra.run.dir={tmp_path / 'run'}", subprocess_run=True, timeout=90)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.stderr and len(errors) == 1
    assert "no full block of 32 tokens" in errors[0] and str(short) in errors[0]


class Blocks(L.LightningModule):
    """The smallest model of token blocks: one embedding weight per id."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Embedding(100, 1)

    def training_step(self, batch, batch_idx):
        return self.weight(batch).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(tmp_path, data: StreamingBlocks, workers: int = 0) -> L.Trainer:
    trainer = L.Trainer(max_steps=1000, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=tmp_path,
                        callbacks=[SaveOnInterrupt(str(tmp_path / "checkpoints"))])
    loader = stream_loader(data, 4, lambda rows: torch.stack([r["input_ids"] for r in rows]), workers)
    trainer.fit(Blocks(), loader)
    return trainer


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bad_shard_with_on_bad_shard_error_saves_a_checkpoint_and_stops_with_one_line(tmp_path, tokenizer,
                                                                                        workers):
    folder = tmp_path / "shards"
    folder.mkdir()
    files = [jsonl_gz(folder / f"part-{i}.jsonl.gz", documents(40, i)) for i in range(3)]
    docs = load_text_stream("files", files)
    data = StreamingBlocks(docs, tokenizer, max_seq_len=SEQ, shuffle_buffer=4, on_bad_shard="error")
    bad = files[data.shard_order(0, 0, 1)[-1]]  # the last shard of the first pass: read after some steps
    truncate(bad)
    with pytest.raises(DataError) as exc:
        fit(tmp_path, data, workers)
    message, saved = str(exc.value), tmp_path / "checkpoints" / "last.ckpt"
    assert "\n" not in message and bad in message and f"saved {saved} at step" in message
    assert torch.load(saved, weights_only=True)["global_step"] > 0


def stalling_stream(stall_after: int, deadline_s: float, events: dict) -> datasets.IterableDataset:
    """Documents that stop coming after ``stall_after`` (a hung network read, say): 0.3 s into the wait the
    process gets a SIGTERM (``events["sigterm"]``: when); the generator gives up after ``deadline_s``
    (``events["gave_up"]``) so that a failing test ends."""

    def sigterm():
        events["sigterm"] = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)

    def generate():
        yield from ({"text": text} for text in documents(stall_after, 0))
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            return  # no handler: a SIGTERM would end the test process itself
        threading.Timer(0.3, sigterm).start()
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            time.sleep(0.05)
        events["gave_up"] = True

    return datasets.IterableDataset.from_generator(generate)


def test_sigterm_while_waiting_for_data_stops_the_run_at_once_and_saves(tmp_path, tokenizer):
    events: dict = {}
    data = StreamingBlocks(stalling_stream(24, deadline_s=30, events=events), tokenizer, max_seq_len=SEQ,
                           shuffle_buffer=1, docs_per_read=1)
    with pytest.raises(SIGTERMException):
        fit(tmp_path, data)
    assert "gave_up" not in events and time.monotonic() - events["sigterm"] < 5  # not at a later step boundary
    # 24 blocks make 6 batches of 4: steps 1-5 trained, the 6th batch fetched, the 7th never came
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5
