"""Streaming pretraining data (data.streaming=true): every block once across ranks and workers, an exact resume
that re-reads one window wherever the stream stopped, masks drawn per block, and CLI runs on 1 and 2 processes."""

from __future__ import annotations

import collections
import gzip
import json
import random

import datasets
import pytest
import torch

from bertlite.data.objectives import MaskedLM
from bertlite.data.streaming import StreamingBlocks, stream_loader
from bertlite.data.tokenizer import special_ids, train_wordpiece
from tests.conftest import TINY_RUN, jsonl_shards, run_cli

WORDS = ("the cat sat on a mat and dog ran to box of red blue green house tree river stone light dark old new "
         "small large king queen ship sea wind rain").split()
SEQ = 16


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece([" ".join(WORDS)] * 20, vocab_size=120)


def write_shards(folder, n_shards: int, docs_per_shard: int | list[int], words_per_doc=None,
                 seed: int = 0) -> list[str]:
    """``n_shards`` .jsonl.gz files of random word documents (``docs_per_shard``: a number, or one per shard);
    ``words_per_doc`` fixed makes one block per document."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for s in range(n_shards):
        files.append(str(folder / f"part-{s:02d}.jsonl.gz"))
        with gzip.open(files[-1], "wt") as f:
            for _ in range(docs_per_shard if isinstance(docs_per_shard, int) else docs_per_shard[s]):
                n = words_per_doc or rng.randint(1, 40)
                f.write(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(n))}) + "\n")
    return files


def stream(files) -> datasets.IterableDataset:
    return datasets.load_dataset("json", data_files=files, split="train", streaming=True)


def blocks(docs, tokenizer, **kw) -> list[tuple[int, ...]]:
    return [tuple(r["input_ids"].tolist()) for r in StreamingBlocks(docs, tokenizer, max_seq_len=SEQ, passes=1,
                                                                     docs_per_read=50, **kw)]


@pytest.mark.parametrize("n_shards", [8, 3])
def test_ranks_and_workers_read_every_block_exactly_once(tmp_path, tokenizer, n_shards):
    docs = stream(write_shards(tmp_path, n_shards, 200))
    corpus = blocks(docs, tokenizer, shuffle_buffer=1)  # one reader, no shuffling: the corpus's blocks
    assert len(corpus) == len(set(corpus)) > 300
    for world in (2, 3):
        seen = [b for rank in range(world) for b in blocks(docs, tokenizer, rank=rank, world_size=world,
                                                           shuffle_buffer=7)]
        assert collections.Counter(seen) == collections.Counter(corpus), (world, len(seen), len(corpus))
    for workers in (0, 2, 3):  # through DataLoader workers, which split a rank's shards between them
        loader = stream_loader(StreamingBlocks(docs, tokenizer, max_seq_len=SEQ, shuffle_buffer=7, passes=1,
                                               docs_per_read=50), 1, lambda rows: rows[0]["input_ids"], workers)
        assert collections.Counter(tuple(b.tolist()) for b in loader) == collections.Counter(corpus), workers


def test_validation_blocks_are_held_out_of_training(tmp_path, tokenizer):
    docs = stream(write_shards(tmp_path, 2, 100))
    held = StreamingBlocks(docs, tokenizer, max_seq_len=SEQ, holdout=10, passes=1)
    first = [tuple(ids) for index, ids, _ in held.shard_blocks(0) if index < 10]
    trained = set(blocks(docs, tokenizer, holdout=10))
    assert len(first) == 10 and not trained & set(first)
    assert len(trained) == len(blocks(docs, tokenizer)) - 10


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_with_the_next_untrained_batch(tmp_path, tokenizer, workers):
    docs = stream(write_shards(tmp_path, 4, 150))

    def loader():
        data = StreamingBlocks(docs, tokenizer, max_seq_len=SEQ, shuffle_buffer=7, passes=1, docs_per_read=50)
        return stream_loader(data, 4, lambda rows: torch.stack([r["input_ids"] for r in rows]), workers)

    whole = list(loader())
    first, it = loader(), None
    it = iter(first)
    trained = [next(it) for _ in range(21)]
    next(it)  # fetched ahead of training (as Lightning does), not trained: must come again after the resume
    state = first.state_dict()
    second = loader()
    second.load_state_dict(state)
    resumed = trained + list(second)
    assert len(resumed) == len(whole) and all(torch.equal(a, b) for a, b in zip(whole, resumed))


def test_a_resume_reads_one_window_wherever_the_stream_stopped(tmp_path, tokenizer, monkeypatch):
    """No replay: the blocks read before the first one handed out are at most one window (plus one read)."""
    docs = stream(write_shards(tmp_path, 1, 2000))
    data = StreamingBlocks(docs, tokenizer, max_seq_len=SEQ, shuffle_buffer=20, passes=1, docs_per_read=50)
    reads = []
    original = StreamingBlocks.shard_blocks

    def counting(self, j, start=None):
        for block in original(self, j, start):
            reads.append(block[0])
            yield block

    it = iter(data)
    states = {}
    for n in range(1, 2001):
        next(it)
        if n in (30, 2000):
            states[n] = data.state_dict()
    monkeypatch.setattr(StreamingBlocks, "shard_blocks", counting)
    for n, state in states.items():
        resumed = StreamingBlocks(docs, tokenizer, max_seq_len=SEQ, shuffle_buffer=20, passes=1, docs_per_read=50)
        resumed.load_state_dict(state)
        reads.clear()
        next(iter(resumed))
        assert len(reads) <= 20 + 50 * 40 // (SEQ - 1) + 1, (n, len(reads))  # one window + one read's blocks


def test_masks_are_drawn_per_block_not_from_the_global_rng(tmp_path, tokenizer):
    """Every rank seeds the global RNG alike; masks keyed by block differ between ranks and do not depend on the
    batch a block lands in."""
    docs = stream(write_shards(tmp_path, 2, 100))
    mlm = MaskedLM(tokenizer)
    rows = {rank: list(StreamingBlocks(docs, tokenizer, max_seq_len=SEQ, rank=rank, world_size=2, passes=1))[:8]
            for rank in (0, 1)}
    mask_id = special_ids(tokenizer)["mask"]
    masked = {}
    for rank in (0, 1):
        torch.manual_seed(0)  # as seed_everything does on every rank
        batch = mlm(rows[rank])
        masked[rank] = torch.zeros(8 * SEQ, dtype=torch.bool)
        masked[rank][batch["mlm_positions"]] = True
    assert not torch.equal(masked[0], masked[1])
    torch.manual_seed(1)
    alone = mlm(rows[0][3:4])  # the same block in a batch of its own, another global RNG state
    row3 = mlm(rows[0])["input_ids"][3]
    assert torch.equal(alone["input_ids"][0], row3)
    assert (row3 == mask_id).any()


STREAM_RUN = [*TINY_RUN, "data=text_files", "data.streaming=true", "data.shuffle_buffer=16",
              "data.validation_blocks=16"]


def test_streaming_cli_run_trains_and_validates(tmp_path, tiny_corpus):
    files = jsonl_shards(tiny_corpus, tmp_path / "shards")
    result = run_cli("bertlite.pretrain", *STREAM_RUN, f"data.train_files={files}",
                     "trainer.max_steps=10", "trainer.val_check_interval=5", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Streaming blocks of 32 tokens from 4 shards" in (tmp_path / "run" / "pretrain.log").read_text()
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)  # the stream position is plain data


def test_streaming_needs_max_steps(tmp_path, tiny_corpus):
    result = run_cli("bertlite.pretrain", *STREAM_RUN, f"data.train_files={tiny_corpus}", "trainer.max_steps=-1",
                     f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0 and "set trainer.max_steps=N" in result.stderr


@pytest.mark.slow
@pytest.mark.xdist_group("distributed")
# rank 0 reads shards 0, 2, 4, 6 (5 + 9 + 13 + 21 blocks), rank 1 the others (12 each): 48 blocks per rank. Half-way
# (24 blocks) rank 1 is at the end of a shard and rank 0, in any shard order, inside one: a rank that restored the
# other's position would repeat or skip blocks
@pytest.mark.parametrize("n_shards,docs_per_shard", [(8, [5, 12, 9, 12, 13, 12, 21, 12])])
def test_two_processes_see_every_block_of_the_corpus_once(tmp_path, n_shards, docs_per_shard):
    """A 2-process DDP run (gloo) streaming .jsonl.gz shards for one pass, stopped half-way and resumed: the blocks
    trained on by the two ranks are the corpus's blocks, each exactly once. (3 shards, where the ranks split each
    shard's blocks instead, pass here too, as (3, 16); test_ranks_and_workers_read_every_block_exactly_once covers
    them without processes.)"""
    from bertlite.data.tokenizer import load_tokenizer

    tok = train_wordpiece([" ".join(WORDS)] * 20, vocab_size=120)
    tok_file = tmp_path / "tokenizer.json"
    tok_file.write_text(tok.to_str())
    files = write_shards(tmp_path / "shards", n_shards, docs_per_shard, words_per_doc=30)
    write_shards(tmp_path / "val", 1, 4, words_per_doc=30)
    tok = load_tokenizer(tok_file)
    ids = special_ids(tok)
    corpus = []  # one document = 30 words = [CLS] + 30 tokens + [SEP]: one block each
    for f in files:
        for line in gzip.open(f, "rt"):
            enc = tok.encode(json.loads(line)["text"], add_special_tokens=False).ids
            assert len(enc) == 30
            corpus.append((ids["cls"], *enc, ids["sep"]))
    steps = len(corpus) // 2 // 8
    out = tmp_path / "seen"
    run = [*TINY_RUN, "model=gpt-tiny", "task=clm", "data=text_files",
           f"data.train_files={tmp_path / 'shards'}/*.jsonl.gz", "data.streaming=true",
           f"data.validation_files={tmp_path / 'val'}/part-00.jsonl.gz", "data.shuffle_buffer=5",
           f"tokenizer.path={tok_file}", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
           "trainer.strategy=ddp_spawn", f"trainer.val_check_interval={steps // 2}",
           "+callbacks.record._target_=tests.stream_recorder.RecordBlocks", f"+callbacks.record.out={out}",
           f"hydra.run.dir={tmp_path / 'run'}"]
    # half the pass, then a resume (ckpt_path=last) to its end: each rank goes on from its own position
    for extra in ([f"trainer.max_steps={steps // 2}"],
                  [f"trainer.max_steps={steps}", "ckpt_path=last", "task.extend_schedule=true"]):
        result = run_cli("bertlite.pretrain", *run, *extra, timeout=300, subprocess_run=True)
        assert result.returncode == 0, result.stderr[-3000:]
    seen = {r: [tuple(map(int, line.split())) for line in (out / f"rank{r}.txt").read_text().splitlines()]
            for r in (0, 1)}
    assert len(seen[0]) == len(seen[1]) == steps * 8
    assert collections.Counter(seen[0] + seen[1]) == collections.Counter(corpus)


def test_streaming_a_hub_data_set_offline_is_one_clear_error(tmp_path):
    run = [arg for arg in STREAM_RUN if arg != "data=text_files"]
    result = run_cli("bertlite.pretrain", *run, "data=hub", "data.path=allenai/c4", "data.name=en",
                     f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "cannot stream hub data set 'allenai/c4'" in result.stderr and "data=text_files" in result.stderr


def test_every_local_format_streams_the_same_blocks(tmp_path, tokenizer):
    """Text, JSON Lines (gzip-compressed or not), CSV and Parquet files of the same documents stream the same
    blocks (one shard per file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bertlite.data.pretraining import load_text_stream

    rng = random.Random(3)
    docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) for _ in range(60)]
    (tmp_path / "a.txt").write_text("\n".join(docs) + "\n")
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
        f.writelines(json.dumps({"text": d}) + "\n" for d in docs)
    (tmp_path / "a.csv").write_text("text\n" + "".join(f"{d}\n" for d in docs))
    pq.write_table(pa.table({"text": docs}), tmp_path / "a.parquet")
    seen = {name: blocks(load_text_stream("files", str(tmp_path / name)), tokenizer, shuffle_buffer=1)
            for name in ("a.txt", "a.jsonl", "a.jsonl.gz", "a.csv", "a.parquet")}
    assert len(seen["a.txt"]) > 20
    assert all(b == seen["a.txt"] for b in seen.values())
