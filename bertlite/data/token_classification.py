"""Token classification data (named-entity recognition): sentences as words, one tag per word.

Readers: CoNLL-style column files (one word per line, its columns separated by spaces or tabs, a blank line between
sentences, ``-DOCSTART-`` lines skipped; the tag is in column ``tag_column``, the last by default), JSON Lines
with a list of words and a list of tags per row, or a hub data set (integer tags are named by its ClassLabel).

Words are given to the tokenizer as they are (``is_pretokenized``) and each word's tag goes to its first WordPiece;
the other pieces get -100, which the loss ignores (BERT's recipe, Devlin et al. 2019, section 5.3).
``label_all_pieces`` labels them too, with the word's tag (B-X turned into I-X). Evaluation reads the first piece of
each word either way, so scores are always per word.
"""

from __future__ import annotations

import logging
import re
from typing import Iterator, Sequence

import datasets
import torch
from tokenizers import Tokenizer

from bertlite.data.classification import SPLITS, LabelledDataModule
from bertlite.data.sources import expand_files, load_files, load_hub, require_column
from bertlite.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IGNORE = -100  # the label of positions the loss skips
TAG = re.compile(r"^(O|[BIES]-.+)$")  # IOB1, IOB2 or IOBES: O, or a prefix, a dash and the entity type
JSON_ENDINGS = (".json", ".jsonl", ".json.gz", ".jsonl.gz")


def read_conll(path: str, tag_column: int = -1) -> dict[str, list[list[str]]]:
    """A CoNLL column file -> {"tokens": [[word, ...], ...], "tags": [[tag, ...], ...]}. Every token line must
    have as many columns as the first: a line short of one would otherwise hand another column's value as the tag."""
    tokens: list[list[str]] = []
    width = None
    tags: list[list[str]] = []
    words: list[str] = []
    labels: list[str] = []

    def flush() -> None:
        if words:
            tokens.append(list(words))
            tags.append(list(labels))
            words.clear()
            labels.clear()

    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                parts = line.split()
                if not parts or parts[0] == "-DOCSTART-":
                    flush()
                    continue
                if width is None:
                    width, first = len(parts), n
                elif len(parts) != width:
                    raise DataError(f"{path}, line {n}: {line.strip()!r} has {len(parts)} column(s) but line {first} "
                                    f"has {width}: every token line needs the same columns (word first, the tag in "
                                    "data.tag_column). Fix or remove the line")
                column = tag_column if tag_column >= 0 else len(parts) + tag_column
                if not 0 < column < len(parts):
                    raise DataError(
                        f"{path}, line {n}: {line.strip()!r} has {len(parts)} column(s), and data.tag_column="
                        f"{tag_column} {'is the word itself' if column == 0 else 'is not one of them'}. A CoNLL "
                        "line holds the word first and its tag in a later column, separated by spaces or tabs; "
                        "set data.tag_column to the tag's column (counted from 0; -1 is the last)")
                words.append(parts[0])
                labels.append(parts[column])
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not valid UTF-8 ({exc.reason} at byte {exc.start}); re-encode it as UTF-8 "
                        "(for example: iconv -f latin1 -t utf-8)") from None
    flush()
    return {"tokens": tokens, "tags": tags}


def align_tags(word_ids: Sequence[int | None], word_tags: Sequence[int], label_all_pieces: bool = False,
               inside: Sequence[int] | None = None) -> tuple[list[int], list[int]]:
    """Word tags -> one label per WordPiece, and a 0/1 mark on the first piece of each word.

    Special tokens ([CLS], [SEP]: word id None) get -100. The first piece of a word gets the word's tag; the other
    pieces get -100, or with ``label_all_pieces`` the word's tag mapped through ``inside`` (B-X -> I-X).
    """
    labels, starts, prev = [], [], None
    for w in word_ids:
        first = w is not None and w != prev
        if w is None:
            labels.append(IGNORE)
        elif first:
            labels.append(word_tags[w])
        else:
            tag = word_tags[w] if inside is None else inside[word_tags[w]]
            labels.append(tag if label_all_pieces else IGNORE)
        starts.append(int(first))
        prev = w
    return labels, starts


def inside_tags(label_names: Sequence[str]) -> list[int]:
    """For each tag id, the id of the tag a continuation piece takes: I-X for B-X (when I-X is a label), else itself."""
    ids = {name: i for i, name in enumerate(label_names)}
    return [ids.get("I-" + name[2:], i) if name.startswith("B-") else i for i, name in enumerate(label_names)]


class TokenClassificationDataModule(LabelledDataModule):
    task_name = "token_classification"  # the task it feeds (bertlite-finetune checks that they agree)

    def __init__(
        self,
        tokenizer: Tokenizer | None = None,
        train_file: str | Sequence[str] | None = None,
        validation_file: str | Sequence[str] | None = None,
        test_file: str | Sequence[str] | None = None,
        format: str | None = None,
        path: str | None = None,
        name: str | None = None,
        tag_column: int = -1,
        tokens_column: str = "tokens",
        tags_column: str = "tags",
        label_all_pieces: bool = False,
        validation_fraction: float = 0.1,
        max_train_samples: int | None = None,
        metric: str = "entity_f1",
        max_seq_len: int = 128,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        group_by_length: bool = False,
        pad_to_multiple_of: int = 8,
        num_workers: int = 0,
        seed: int = 0,
    ):
        if format not in (None, "conll", "json"):
            raise ConfigError(f"data.format={format!r}: token classification reads conll (column files) or json "
                              "(JSON Lines with a list of words and a list of tags per row)")
        if not isinstance(tag_column, int) or isinstance(tag_column, bool):
            raise ConfigError(f"data.tag_column={tag_column!r} must be a column index (0 is the word, -1 the last)")
        super().__init__(tokenizer, {"train": train_file, "validation": validation_file, "test": test_file},
                         format, path, name, validation_fraction, max_train_samples, metric, max_seq_len,
                         batch_size, eval_batch_size, group_by_length, pad_to_multiple_of, num_workers, seed)
        self.tag_column, self.tokens_column, self.tags_column = tag_column, tokens_column, tags_column
        self.label_all_pieces = label_all_pieces

    def train_texts(self) -> Iterator[str]:
        """Training sentences, words joined by spaces: for fitting a tokenizer when there is no pretrained one."""
        yield from (" ".join(words) for words in self.load_raw()["train"]["tokens"])

    # --- raw data and labels ------------------------------------------------------------------
    def _read_split(self, split: str, files: list[str]) -> datasets.Dataset:
        fmt = self.format or ("json" if all(f.lower().endswith(JSON_ENDINGS) for f in files) else "conll")
        if fmt == "conll":
            columns: dict[str, list] = {"tokens": [], "tags": []}
            for f in files:
                for key, values in read_conll(f, self.tag_column).items():
                    columns[key] += values
            return datasets.Dataset.from_dict(columns)
        ds = load_files({split: files}, "json")[split]
        return self._standard_columns(ds, split)

    def _standard_columns(self, ds: datasets.Dataset, split: str) -> datasets.Dataset:
        """A split with ``tokens`` and (where labelled) ``tags`` columns, tags as names."""
        if len(ds) == 0:
            return ds
        require_column(ds, self.tokens_column, "data.tokens_column")
        if self.tags_column not in ds.column_names:
            if split != "test":
                require_column(ds, self.tags_column, "data.tags_column")
            return datasets.Dataset.from_dict({"tokens": ds[self.tokens_column]})
        feature = ds.features[self.tags_column]
        names = getattr(getattr(feature, "feature", None), "names", None)  # Sequence(ClassLabel): named ints
        tags = [[names[t] if names else str(t) for t in row] for row in ds[self.tags_column]]
        return datasets.Dataset.from_dict({"tokens": ds[self.tokens_column], "tags": tags})

    def read_raw(self) -> datasets.DatasetDict:
        if self.path:
            hub = load_hub(self.path, self.name, local_files="data=conll2003 data.train_file=<file> (CoNLL columns "
                                                             "or JSON Lines)")
            dsd = datasets.DatasetDict({s: self._standard_columns(hub[s], s) for s in SPLITS if s in hub})
        else:
            if not self.files["train"]:
                raise DataError("no training file: set data.train_file=/path/train.txt (CoNLL columns: word ... "
                                "tag per line) or a .jsonl file with tokens and tags lists")
            dsd = datasets.DatasetDict({s: self._read_split(s, expand_files(f, f"{s} file"))
                                        for s, f in self.files.items() if f})
        for split, ds in list(dsd.items()):
            empty = sum(len(words) == 0 for words in ds["tokens"]) if len(ds) else 0
            if empty:  # a JSON Lines row without words: nothing to tag
                log.warning("Skipped %d %s sentences without words", empty, split)
                dsd[split] = ds = ds.filter(lambda words: len(words) > 0, input_columns="tokens")
            if len(ds) == 0:
                raise DataError(f"the {split} split holds no sentences; check data.{split}_file"
                                + (f" and data.tag_column={self.tag_column}" if self.format != "json" else ""))
            self._check_rows(split, ds)
        return dsd

    def _check_rows(self, split: str, ds: datasets.Dataset) -> None:
        has_tags = "tags" in ds.column_names
        for i, row in enumerate(ds):
            words, tags = row["tokens"], row.get("tags")
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise DataError(f"{split} row {i}: the words ({self.tokens_column}) must be a list of strings")
            if has_tags and len(tags) != len(words):
                raise DataError(f"{split} row {i} has {len(words)} words but {len(tags)} tags; each word needs "
                                "exactly one tag")
            bad = next((t for t in tags or () if not TAG.match(t)), None)
            if bad is not None:
                where = (f"column {self.tag_column} of the CoNLL file" if self.format != "json" and not self.path
                         else f"column {self.tags_column!r}")
                raise DataError(f"{split} row {i}: {bad!r} in {where} is not an entity tag (O, B-TYPE or I-TYPE). "
                                "Point data.tag_column (CoNLL files, counted from 0, -1 the last) or "
                                "data.tags_column (JSON Lines) at the tags")

    def read_label_names(self, train: datasets.Dataset) -> list[str]:
        """The sorted tags of the training split; with ``label_all_pieces``, I-X is added for every B-X."""
        names = {t for tags in train["tags"] for t in tags}
        if self.label_all_pieces:
            names |= {"I-" + t[2:] for t in names if t.startswith("B-")}
        if len(names) < 2:
            raise DataError(f"the training data has only the tag(s) {sorted(names)}; token classification "
                            "needs at least two")
        return sorted(names)

    # --- tokenized splits -----------------------------------------------------------------------
    def encode_splits(self, raw: datasets.DatasetDict, names: list[str], tokenizer: Tokenizer) -> None:
        ids = {name: i for i, name in enumerate(names)}
        inside = inside_tags(names)
        for split, ds in raw.items():
            if "tags" not in ds.column_names:
                continue  # an unlabelled test split: nothing to score
            unseen = sorted({t for tags in ds["tags"] for t in tags} - set(names))
            if unseen:
                raise DataError(f"the {split} split has tags never seen in training: {unseen[:10]}; training "
                                f"tags are {names}")
            rows, truncated = [], 0
            for start in range(0, len(ds), 1000):
                chunk = ds[start:start + 1000]
                encodings = tokenizer.encode_batch(chunk["tokens"], is_pretokenized=True)
                for encoding, tags in zip(encodings, chunk["tags"]):
                    labels, starts = align_tags(encoding.word_ids, [ids[t] for t in tags], self.label_all_pieces,
                                                inside)
                    truncated += sum(starts) < len(tags)
                    rows.append({"input_ids": encoding.ids, "token_type_ids": encoding.type_ids, "labels": labels,
                                 "word_starts": starts, "length": len(encoding.ids)})
            if truncated:
                log.info("%s: %d sentences cut to data.max_seq_len=%d tokens (their last words are not scored)",
                         split, truncated, self.max_seq_len)
            if split != "train":  # sorted by length: evaluation batches carry little padding
                rows.sort(key=lambda r: r["length"])
            self.datasets[split] = rows
        log.info("Token classification data: %s; tags %s",
                 ", ".join(f"{s} {len(d)}" for s, d in self.datasets.items()), names)

    # --- loaders ----------------------------------------------------------------------------------
    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = super().collate(rows)
        labels = torch.full(batch["input_ids"].shape, IGNORE, dtype=torch.long)
        starts = torch.zeros(batch["input_ids"].shape, dtype=torch.long)
        for i, r in enumerate(rows):
            labels[i, :len(r["labels"])] = torch.as_tensor(r["labels"])
            starts[i, :len(r["word_starts"])] = torch.as_tensor(r["word_starts"])
        return {**batch, "labels": labels, "word_starts": starts}
