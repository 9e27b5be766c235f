"""Classification data: single sentences or sentence pairs with labels, from local files or the hub.

Labels are one class per row, a set of classes, or a number (``data.problem_type``; bertlite/data/labels.py).
Class names come from the training split (sorted), travel with
the model, and a label in validation or test data that training never saw is an error.
Batches are padded dynamically to their longest row. ``group_by_length`` puts rows of similar length
together so that little padding is left; it is off by default for training, because where length goes with
the label it makes label-skewed batches and costs accuracy (docs/results.md, "Length-grouped batches").
"""

from __future__ import annotations

import collections
import logging
from typing import Iterator, Sequence

import datasets
import lightning as L
import torch
from datasets.fingerprint import Hasher
from tokenizers import Tokenizer
from torch.utils.data import DataLoader

from bertlite.data.batching import EvaluationSampler, LengthGroupedSampler, ResumableBatches, pad_batch
from bertlite.data.encoding import encode_texts, truncating
from bertlite.data.labels import LabelColumn, class_name, label_feature
from bertlite.data.sources import carve_validation, expand_files, load_files, load_hub, require_column
from bertlite.data.special_tokens import special_id
from bertlite.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


def encoded_features(problem_type: str | None, num_labels: int = 0) -> datasets.Features:
    """The column types of a tokenized split; ``problem_type`` None: a split without labels."""
    features = {"input_ids": datasets.Sequence(datasets.Value("int32")),
                "token_type_ids": datasets.Sequence(datasets.Value("int8")), "length": datasets.Value("int32")}
    if problem_type is not None:
        features["label"] = label_feature(problem_type, num_labels)
    return datasets.Features(features)


class LabelledDataModule(L.LightningDataModule):
    """What the classification data modules share: the options common to both, reading the splits once,
    tokenizing them once (``build``, from ``prepare_data`` and ``setup``) and the loaders. Subclasses read the
    raw splits (``read_raw``), find the label names (``read_label_names``) and encode the splits
    (``encode_splits``); they take their own options and pass these on as keywords.

    The options (conf/data/_classification.yaml and _token_classification.yaml describe each): the split files
    (``train_file`` ...), their ``format``, or a hub data set (``path``, ``name``); ``validation_fraction`` carved
    from train where there is no validation file; ``max_train_samples``; ``metric``, the data set's measure;
    ``max_seq_len``; ``batch_size``, ``eval_batch_size``, ``group_by_length``, ``pad_to_multiple_of``,
    ``num_workers``; ``seed`` for the carving, the subset and the order of training batches.
    """

    def __init__(
        self,
        tokenizer: Tokenizer | None = None,
        train_file: str | Sequence[str] | None = None,
        validation_file: str | Sequence[str] | None = None,
        test_file: str | Sequence[str] | None = None,
        format: str | None = None,
        path: str | None = None,
        name: str | None = None,
        validation_fraction: float = 0.1,
        max_train_samples: int | None = None,
        metric: str = "auto",
        max_seq_len: int = 128,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        group_by_length: bool = False,
        pad_to_multiple_of: int = 8,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        self.files = {"train": train_file, "validation": validation_file, "test": test_file}
        self.format = format
        self.path = path
        self.name = name
        self.validation_fraction = validation_fraction
        self.max_train_samples = max_train_samples
        self.metric = metric  # the data set's own measure of success (GLUE's convention), read by the task
        self.max_seq_len = max_seq_len
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.group_by_length = group_by_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.num_workers = num_workers
        self.seed = seed
        self.tokenizer: Tokenizer | None = None
        self.pad_id: int | None = None
        if tokenizer is not None:
            self.set_tokenizer(tokenizer)
        self.raw: datasets.DatasetDict | None = None
        self.label_names: list[str] | None = None
        self.datasets: dict[str, datasets.Dataset | list[dict]] = {}

    def set_tokenizer(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.pad_id = special_id(tokenizer, "pad", "padding fine-tuning batches")

    # --- raw data and labels ----------------------------------------------------------------
    def load_raw(self) -> datasets.DatasetDict:
        """The raw splits, read once; validation carved from train where there is none, train cut to
        ``max_train_samples``."""
        if self.raw is not None:
            return self.raw
        dsd = carve_validation(self.read_raw(), self.validation_fraction, self.seed)
        if self.max_train_samples is not None:
            n = min(self.max_train_samples, len(dsd["train"]))
            dsd["train"] = dsd["train"].shuffle(seed=self.seed).select(range(n))
        self.raw = dsd
        return dsd

    def read_raw(self) -> datasets.DatasetDict:
        """The splits as read and checked."""
        raise NotImplementedError

    def task_options(self) -> dict:
        """What the task needs to know of the labels beyond their names (bertlite-finetune passes it on)."""
        return {}

    def find_label_names(self) -> list[str]:
        """The label names of the training split, found once."""
        if self.label_names is None:
            self.label_names = self.read_label_names(self.load_raw()["train"])
        return self.label_names

    def read_label_names(self, train: datasets.Dataset) -> list[str]:
        """The sorted label names of the training split, checked."""
        raise NotImplementedError

    # --- tokenized splits ---------------------------------------------------------------------
    def prepare_data(self) -> None:
        self.build()

    def setup(self, stage: str | None = None) -> None:
        self.build()

    def build(self) -> None:
        if self.datasets:
            return
        if self.tokenizer is None:
            raise RuntimeError("call set_tokenizer() before setup()")
        raw, names = self.load_raw(), self.find_label_names()
        self.encode_splits(raw, names, truncating(self.tokenizer, self.max_seq_len))

    def encode_splits(self, raw: datasets.DatasetDict, names: list[str], tokenizer: Tokenizer) -> None:
        """Fill ``self.datasets`` with the encoded splits (rows with input_ids, token_type_ids and length)."""
        raise NotImplementedError

    # --- loaders -------------------------------------------------------------------------------
    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        return pad_batch(rows, self.pad_id, self.pad_to_multiple_of)

    def train_dataloader(self) -> DataLoader:
        ds = self.datasets["train"]
        lengths = [r["length"] for r in ds] if isinstance(ds, list) else ds["length"]
        sampler = LengthGroupedSampler(lengths, self.batch_size, seed=self.seed, group=self.group_by_length)
        # a generator of its own: creating the iterator then draws nothing from the global RNG, which a resumed
        # run restores to the interrupted step's state (dropout masks)
        return ResumableBatches(ds, batch_size=self.batch_size, sampler=sampler, collate_fn=self.collate,
                                num_workers=self.num_workers, generator=torch.Generator().manual_seed(self.seed))

    def _eval_loader(self, split: str) -> DataLoader:
        """Length-sorted batches, each row scored once under DDP, and any first batches (limit_val_batches) spread
        over the lengths: ``EvaluationSampler``."""
        ds = self.datasets[split]
        lengths = [r["length"] for r in ds] if isinstance(ds, list) else list(ds["length"])
        sampler = EvaluationSampler(lengths, self.eval_batch_size)
        return DataLoader(ds, batch_size=self.eval_batch_size, sampler=sampler, collate_fn=self.collate,
                          num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test") if self.labelled("test") else []

    def labelled(self, split: str) -> bool:
        """Whether the split was encoded with its labels, so that it can be scored."""
        return split in self.datasets


class ClassificationDataModule(LabelledDataModule):
    """Texts (or text pairs) with a label column; the files, splits, lengths and batching options are
    LabelledDataModule's (``common``)."""

    def __init__(
        self,
        tokenizer: Tokenizer | None = None,
        text_column: str = "text",
        text_pair_column: str | None = None,
        label_column: str = "label",
        problem_type: str = "auto",
        label_separator: str | None = None,
        reader: dict | None = None,
        **common,
    ):
        super().__init__(tokenizer, **common)
        self.text_column = text_column
        self.text_pair_column = text_pair_column
        self.label_column = label_column
        self.labels = LabelColumn(label_column, problem_type, label_separator)
        self.reader = dict(reader or {})

    @property
    def problem_type(self) -> str:
        return self.labels.problem_type

    def task_options(self) -> dict:
        self.find_label_names()  # resolves problem_type=auto
        return {"problem_type": self.problem_type}

    def train_texts(self) -> Iterator[str]:
        """Training text (both sentences of pairs), for fitting a tokenizer when there is no pretrained one."""
        train = self.load_raw()["train"]
        for column in filter(None, [self.text_column, self.text_pair_column]):
            # as the encoder reads them: a number in a text column is its digits
            yield from (str(t) for t in train[column] if t is not None and str(t))

    # --- raw data and labels ----------------------------------------------------------------
    def read_raw(self) -> datasets.DatasetDict:
        if self.path:
            dsd = load_hub(self.path, self.name, local_files="data=csv data.train_file=<file> (csv, tsv, jsonl or "
                                                            "parquet)")
        else:
            if not self.files["train"]:
                raise DataError("no training file: set data.train_file=/path/train.csv (csv, tsv, jsonl or parquet)")
            splits = {s: expand_files(f, f"{s} file") for s, f in self.files.items() if f}
            dsd = load_files(splits, self.format, **self.reader)
        dsd = datasets.DatasetDict({s: dsd[s] for s in SPLITS if s in dsd})
        for split, ds in dsd.items():
            if len(ds) == 0:
                raise DataError(f"the {split} split is empty; check data.{split}_file")
            for column, option in [(self.text_column, "data.text_column"), (self.label_column, "data.label_column"),
                                   (self.text_pair_column, "data.text_pair_column")]:
                if column is not None and (split != "test" or column != self.label_column):
                    require_column(ds, column, option)
        return dsd

    def read_label_names(self, train: datasets.Dataset) -> list[str]:
        """The problem type (resolved from ``auto``) and the label names of the training split."""
        self.labels.resolve(train.features[self.label_column])
        return self.labels.names(train[self.label_column])

    def label_counts(self) -> dict[str, int]:
        """Training examples per label name (for task.class_weights=auto)."""
        if self.find_label_names() and self.problem_type != "single_label":
            raise ConfigError(f"task.class_weights weigh the classes of single-label data; this data is "
                              f"{self.problem_type}: drop task.class_weights")
        counts = collections.Counter(map(class_name, self.load_raw()["train"][self.label_column]))
        return {name: counts[name] for name in self.find_label_names()}

    # --- tokenized splits ---------------------------------------------------------------------
    def encode_splits(self, raw: datasets.DatasetDict, names: list[str], tokenizer: Tokenizer) -> None:
        label_ids = {name: i for i, name in enumerate(names)}
        for split, ds in raw.items():
            has_labels = self.label_column in ds.column_names
            if has_labels:
                self.check_labels(split, ds, names)
            # the cache key, from what the encoding depends on (datasets would hash the whole closure, slowly)
            fingerprint = Hasher.hash((ds._fingerprint, tokenizer.to_str(), label_ids if has_labels else None,
                                       self.text_column, self.text_pair_column, self.label_column,
                                       self.problem_type, self.labels.separator))
            # features given explicitly: an encoded ``label`` would otherwise keep the type of a source column of
            # the same name (string labels in a column named "label")
            features = encoded_features(self.problem_type if has_labels else None, len(names))
            self.datasets[split] = ds.map(self._encoder(tokenizer, label_ids if has_labels else None), batched=True,
                                          remove_columns=ds.column_names, features=features,
                                          new_fingerprint=fingerprint, desc=f"tokenizing {split}")
        # Rows whose text is empty teach nothing: skipped in training, kept (and scored) in evaluation.
        train = self.datasets["train"]
        specials = tokenizer.num_special_tokens_to_add(is_pair=False)  # [CLS] [SEP], <s> </s>: an empty text's length
        self.datasets["train"] = train.filter(lambda n: [x > specials for x in n], input_columns="length",
                                              batched=True)
        skipped = len(train) - len(self.datasets["train"])
        if skipped:
            log.warning("Skipped %d training rows with empty text", skipped)
        log.info("Classification data: %s; labels %s",
                 ", ".join(f"{s} {len(d)}" for s, d in self.datasets.items()), names)

    def check_labels(self, split: str, ds: datasets.Dataset, names: list[str]) -> None:
        self.labels.check(split, ds[self.label_column], names)

    def _encoder(self, tokenizer: Tokenizer, label_ids: dict | None):
        def encode(batch: dict) -> dict:
            texts = ["" if t is None else str(t) for t in batch[self.text_column]]
            pairs = None
            if self.text_pair_column:
                pairs = ["" if t is None else str(t) for t in batch[self.text_pair_column]]
            encodings = encode_texts(tokenizer, texts, pairs)
            out = {"input_ids": [e.ids for e in encodings], "token_type_ids": [e.type_ids for e in encodings],
                   "length": [len(e.ids) for e in encodings]}
            if label_ids is not None:
                out["label"] = [self.labels.encode(v, label_ids) for v in batch[self.label_column]]
            return out

        return encode

    def labelled(self, split: str) -> bool:
        return split in self.datasets and "label" in self.datasets[split].column_names

