"""Pretraining data: raw text -> token ids (batched, cached by ``datasets``) -> packed blocks -> batches.

Blocks hold ``max_seq_len`` tokens: the tokenizer's opening token ([CLS], RoBERTa's <s>) then a stretch of the
running token stream, in which every document ends with its closing token ([SEP], </s>). No padding is needed, so
every position of every batch is trained on.
"""

from __future__ import annotations

import itertools
import logging
from typing import Sequence

import datasets
import numpy as np
import lightning as L
import torch
from tokenizers import Tokenizer
from torch.utils.data import DataLoader

from bertlite.data.objectives import OBJECTIVES
from bertlite.data.resumable import KeyedRows, ResumableDataLoader, ResumableSampler
from bertlite.data.shards import check_bad_shard_policy, stream_texts
from bertlite.data.streaming import StreamingBlocks, stream_loader
from bertlite.data.sources import carve_validation, expand_files, load_files, load_hub, require_column
from bertlite.data.special_tokens import special_id
from bertlite.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def load_text_corpus(
    source: str = "files",
    train_files: str | Sequence[str] | None = None,
    validation_files: str | Sequence[str] | None = None,
    format: str | None = None,
    path: str | None = None,
    name: str | None = None,
    text_column: str = "text",
    validation_fraction: float = 0.01,
    seed: int = 0,
) -> datasets.DatasetDict:
    """A DatasetDict with 'train' and 'validation' splits, each with a ``text_column`` of non-empty strings."""
    if source == "python_docs":
        from bertlite.data.python_docs import python_docs_paragraphs

        dsd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({text_column: python_docs_paragraphs()})})
    elif source == "hub":
        if not path:
            raise DataError("data.source=hub needs data.path (and optionally data.name), e.g. data.path=wikitext")
        dsd = load_hub(path, name)
    elif source == "files":
        if not train_files:
            raise DataError("no training files: set data.train_files=/path/to/*.txt (text, jsonl, csv or parquet)")
        splits = {"train": expand_files(train_files, "training file"),
                  "validation": expand_files(validation_files, "validation file")}
        dsd = load_files(splits, format)
    else:
        raise DataError(f"unknown data.source {source!r}; choose files, hub or python_docs")
    if "validation" not in dsd and "test" in dsd:
        dsd["validation"] = dsd["test"]
    for split in list(dsd):
        require_column(dsd[split], text_column, "data.text_column")
        feature = dsd[split].features[text_column]
        if getattr(feature, "dtype", None) not in ("string", "large_string"):
            raise DataError(f"column {text_column!r} of the {split} data holds {feature}, not text; set "
                            "data.text_column to a column of strings")
        dsd[split] = dsd[split].filter(lambda b: [bool(t and t.strip()) for t in b[text_column]], batched=True,
                                       desc=f"dropping empty {split} rows")
    if "train" not in dsd or len(dsd["train"]) == 0:
        raise DataError("the training corpus is empty (no non-blank text); check data.train_files and data.text_column")
    dsd = carve_validation(datasets.DatasetDict({k: dsd[k] for k in ("train", "validation") if k in dsd}),
                           validation_fraction, seed)
    if len(dsd["validation"]) == 0:
        raise DataError("the validation split is empty; give data.validation_files or a larger validation_fraction")
    return dsd


def load_text_stream(source: str = "files", train_files=None, format: str | None = None, path: str | None = None,
                     name: str | None = None, text_column: str = "text") -> datasets.IterableDataset:
    """The training documents as a ``datasets.IterableDataset``: read as they are needed, never cached whole."""
    if source == "hub":
        if not path:
            raise DataError("data.source=hub needs data.path (and optionally data.name), e.g. data.path=wikitext")
        try:
            stream = datasets.load_dataset(path, name, split="train", streaming=True)
        except Exception as exc:
            raise DataError(f"cannot stream hub data set {path!r} (name={name!r}): {type(exc).__name__}: {exc}. "
                            "Without internet, use local files: data=text_files data.train_files=<files>") from exc
    elif source == "files":
        if not train_files:
            raise DataError("no training files: set data.train_files=/path/to/shards/*.jsonl.gz (text, jsonl, "
                            "csv or parquet, compressed or not)")
        stream = load_files({"train": expand_files(train_files, "training file")}, format, streaming=True)["train"]
    else:
        raise DataError(f"data.streaming=true reads data.source=files or hub, not {source!r}")
    try:
        first = next(iter(stream.take(1)))
    except StopIteration:
        raise DataError("the training corpus is empty; check data.train_files") from None
    if text_column not in first:
        raise DataError(f"column {text_column!r} not found; available columns: {', '.join(first)}. "
                        "Set data.text_column=<one of them>")
    return stream


def tokenize_and_pack(ds: datasets.Dataset, tokenizer: Tokenizer, text_column: str, max_seq_len: int,
                      num_proc: int | None = None) -> datasets.Dataset:
    """Text rows -> rows of exactly ``max_seq_len`` ids: [CLS] + stream chunk (documents end with [SEP])."""
    cls_id = special_id(tokenizer, "cls", "packing pretraining blocks (each starts with it)")
    sep_id = special_id(tokenizer, "sep", "packing pretraining blocks (each document ends with it)")
    chunk = max_seq_len - 1

    def tokenize(batch: dict) -> dict:
        encodings = tokenizer.encode_batch(batch[text_column], add_special_tokens=False)
        return {"ids": [e.ids + [sep_id] for e in encodings]}

    def pack(batch: dict) -> dict:
        stream = [i for ids_ in batch["ids"] for i in ids_]
        n = len(stream) // chunk  # the remainder of each 1,000-document batch is dropped
        return {"input_ids": [[cls_id] + stream[k * chunk:(k + 1) * chunk] for k in range(n)]}

    tokenized = ds.map(tokenize, batched=True, remove_columns=ds.column_names, num_proc=num_proc,
                       desc="tokenizing")
    return tokenized.map(pack, batched=True, batch_size=1000, remove_columns=["ids"], num_proc=num_proc,
                         desc=f"packing into blocks of {max_seq_len}")


def checked_objective(objective: str) -> str:
    """The objective's name, if bertlite has it; else one ConfigError listing those it has."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown pretraining objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    return objective


class PretrainingDataModule(L.LightningDataModule):
    """Packed blocks from a text corpus, made into batches by a pretraining objective (data/objectives.py):
    dynamically masked for MLM, as they are for causal LM, noised for seq2seq text infilling.

    Validation blocks are corrupted once, with a fixed seed, so every evaluation (and the unigram baseline
    in scripts/unigram_baseline.py) scores the very same task.
    """

    def __init__(
        self,
        tokenizer: Tokenizer | None = None,
        objective: str = "mlm",
        source: str = "files",
        train_files: str | Sequence[str] | None = None,
        validation_files: str | Sequence[str] | None = None,
        format: str | None = None,
        path: str | None = None,
        name: str | None = None,
        text_column: str = "text",
        validation_fraction: float = 0.01,
        max_seq_len: int = 128,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        max_eval_blocks: int | None = None,
        mlm_probability: float = 0.15,
        eval_mlm_probability: float = 0.15,
        whole_word_mask: bool = False,
        noise_density: float = 0.3,
        mean_span_length: float = 3.0,
        num_workers: int = 0,
        num_proc: int | None = None,
        seed: int = 0,
        eval_seed: int | None = None,
        streaming: bool = False,
        shuffle_buffer: int = 10000,
        validation_blocks: int = 1000,
        on_bad_shard: str = "skip",
    ):
        super().__init__()
        self.streaming = streaming
        self.shuffle_buffer = shuffle_buffer
        self.validation_blocks = validation_blocks
        check_bad_shard_policy(on_bad_shard)
        self.on_bad_shard = on_bad_shard
        self.skipped_shards: set[int] = set()  # unreadable shards already reported (each is warned about once)
        self.corpus_kwargs = dict(source=source, train_files=train_files, validation_files=validation_files,
                                  format=format, path=path, name=name, text_column=text_column,
                                  validation_fraction=validation_fraction, seed=seed)
        self.text_column = text_column
        self.max_seq_len = max_seq_len
        self.num_proc = num_proc
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.max_eval_blocks = max_eval_blocks
        self.num_workers = num_workers
        self.seed = seed
        self.eval_seed = seed if eval_seed is None else eval_seed  # the validation masks' seed
        self.objective_name = checked_objective(objective)
        self.objective_kwargs = dict(mlm_probability=mlm_probability, eval_mlm_probability=eval_mlm_probability,
                                     whole_word_mask=whole_word_mask, noise_density=noise_density,
                                     mean_span_length=mean_span_length)
        self.tokenizer: Tokenizer | None = None
        if tokenizer is not None:
            self.set_tokenizer(tokenizer)
        self.train_dataset: datasets.Dataset | None = None
        self.val_dataset: datasets.Dataset | None = None
        self.raw: datasets.DatasetDict | None = None
        self.stream: datasets.IterableDataset | None = None

    def set_tokenizer(self, tokenizer: Tokenizer) -> None:
        """The tokenizer may be trained on this module's own corpus, so it can arrive after construction."""
        self.tokenizer = tokenizer
        self.objective = OBJECTIVES[self.objective_name](tokenizer, **self.objective_kwargs)

    def corpus(self) -> datasets.DatasetDict:
        if self.raw is None:
            self.raw = load_text_corpus(**self.corpus_kwargs)
        return self.raw

    def train_texts(self):
        """The training text, for fitting a tokenizer (streamed from the start of the corpus when streaming, with
        an unreadable shard skipped or an error, as data.on_bad_shard says)."""
        if self.streaming:
            return stream_texts(self.training_stream(), self.text_column, self.on_bad_shard)
        return self.corpus()["train"][self.text_column]

    def training_stream(self) -> datasets.IterableDataset:
        if self.stream is None:
            kw = self.corpus_kwargs
            self.stream = load_text_stream(kw["source"], kw["train_files"], kw["format"], kw["path"], kw["name"],
                                           self.text_column)
        return self.stream

    def stream_blocks(self, rank: int = 0, world_size: int = 1, **kwargs) -> StreamingBlocks:
        holdout = 0 if self.corpus_kwargs["validation_files"] else self.validation_blocks
        return StreamingBlocks(self.training_stream(), self.tokenizer, self.text_column, self.max_seq_len,
                               self.shuffle_buffer, self.seed, rank, world_size, holdout=holdout,
                               on_bad_shard=self.on_bad_shard, skipped=self.skipped_shards, **kwargs)

    def prepare_data(self) -> None:
        # Lightning calls this on one process per node before setup(): the tokenized and packed blocks
        # land in the datasets cache once, and the other ranks read them from there.
        self.build()

    def setup(self, stage: str | None = None) -> None:
        self.build()

    def build(self) -> None:
        if self.train_dataset is not None:
            return
        if self.tokenizer is None:
            raise RuntimeError("call set_tokenizer() before setup()")
        if self.streaming:
            self.build_streaming()
            return
        raw = self.corpus()
        self.train_dataset = tokenize_and_pack(raw["train"], self.tokenizer, self.text_column, self.max_seq_len,
                                               self.num_proc).with_format("torch")
        val = tokenize_and_pack(raw["validation"], self.tokenizer, self.text_column, self.max_seq_len, self.num_proc)
        for split, ds in (("train", self.train_dataset), ("validation", val)):
            if len(ds) == 0:
                raise DataError(f"the {split} split holds fewer than {self.max_seq_len} tokens, not one block; "
                                "give more text or a smaller data.max_seq_len")
        if self.max_eval_blocks is not None:
            val = val.select(range(min(self.max_eval_blocks, len(val))))
        self.val_dataset = self.corrupt_once(val)
        log.info("Pretraining blocks of %d tokens: %d train, %d validation", self.max_seq_len,
                 len(self.train_dataset), len(self.val_dataset))

    def build_streaming(self) -> None:
        """Training blocks are read as they are needed (train_dataloader); validation is fixed: the validation
        files, or the first ``validation_blocks`` blocks of the stream's first shard, which training skips.
        Every rank checks that every rank's share of the stream holds a block to train on: a rank left without
        one would wait for it forever, and one rank failing alone would leave the others waiting for it."""
        trainer = self.trainer
        replicas = trainer.world_size if trainer is not None else 1
        for rank in range(replicas):
            self.stream_blocks(rank, replicas).check_yields_a_block()
        self.train_dataset = self.stream_blocks()
        if self.corpus_kwargs["validation_files"]:
            files = expand_files(self.corpus_kwargs["validation_files"], "validation file")
            texts = load_files({"validation": files}, self.corpus_kwargs["format"])["validation"]
            require_column(texts, self.text_column, "data.text_column")
            val = tokenize_and_pack(texts, self.tokenizer, self.text_column, self.max_seq_len)
        else:
            first = itertools.islice(self.train_dataset.shard_blocks(0), self.validation_blocks)
            val = datasets.Dataset.from_dict({"input_ids": [ids.tolist() for _, ids, _ in first]})
            if len(val) < self.validation_blocks:
                raise DataError(f"the stream's first shard holds {len(val)} blocks, fewer than the "
                                f"data.validation_blocks={self.validation_blocks} held out for validation; lower "
                                "it or give data.validation_files")
        if self.max_eval_blocks is not None:
            val = val.select(range(min(self.max_eval_blocks, len(val))))
        self.val_dataset = self.corrupt_once(val)
        log.info("Streaming blocks of %d tokens from %d shards (shuffled in windows of %d blocks); %d validation "
                 "blocks", self.max_seq_len, self.training_stream().num_shards, self.shuffle_buffer,
                 len(self.val_dataset))

    def corrupt_once(self, ds: datasets.Dataset) -> datasets.Dataset:
        ids = torch.from_numpy(np.stack(ds.with_format("numpy")["input_ids"]))  # (N, T)
        fixed = self.objective.fix(ids, torch.Generator().manual_seed(self.eval_seed))
        return datasets.Dataset.from_dict(fixed).with_format("torch")

    def train_dataloader(self) -> DataLoader:
        # resumable: a run resumed mid-epoch continues at the next unseen block (data/resumable.py); each rank
        # of a distributed run reads its own share of the epoch's permutation
        trainer = self.trainer
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        if self.streaming:
            return stream_loader(self.stream_blocks(rank, replicas), self.batch_size, self.objective,
                                 self.num_workers)
        sampler = ResumableSampler(self.train_dataset, num_replicas=replicas, rank=rank, shuffle=True, seed=self.seed,
                                   keyed=True)
        rows = KeyedRows(self.train_dataset, self.seed)
        return ResumableDataLoader(rows, batch_size=self.batch_size, sampler=sampler,
                                   on_resize=self.continue_epoch_in_new_batches,
                                   collate_fn=self.objective, num_workers=self.num_workers,
                                   persistent_workers=self.num_workers > 0)

    def continue_epoch_in_new_batches(self, batches_done: int) -> None:
        """A resume with another batch size x ranks: count the epoch's batches so far in the new batches, so
        Lightning ends the epoch when the permutation does, and validates on the same optimizer steps."""
        loop = self.trainer.fit_loop.epoch_loop
        for counter in ("ready", "started", "processed", "completed"):
            setattr(loop.batch_progress.current, counter, batches_done)
            setattr(loop.batch_progress.total, counter, loop.global_step * self.trainer.accumulate_grad_batches)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_dataset, batch_size=self.eval_batch_size, shuffle=False,
                          collate_fn=self.objective, num_workers=self.num_workers)
