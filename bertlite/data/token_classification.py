"""Token classification data (named-entity recognition): sentences as words, one tag per word.

Readers: CoNLL-style column files (one word per line, its columns separated by spaces or tabs, a blank line between
sentences, ``-DOCSTART-`` lines skipped; the tag is in column ``tag_column``, the last by default), JSON Lines
with a list of words and a list of tags per row, or a hub data set (integer tags are named by its ClassLabel).

Words are given to the tokenizer as they are (``is_pretokenized``, each after the space it has in running text, so
that a byte-level BPE gives it its Ġ piece) and each word's tag goes to its first piece, found from the encoding's
word ids; the other pieces get -100, which the loss ignores (BERT's recipe, Devlin et al. 2019, section 5.3).
``label_all_pieces`` labels them too, with the word's tag (B-X turned into I-X). Evaluation reads the first piece of
each word either way, so scores are always per word.

A sentence longer than ``max_seq_len`` tokens becomes overlapping windows of whole words (``stride`` pieces shared;
bertlite/data/word_windows.py), in training and evaluation alike. Each word is labelled in one window only, so
it is trained on and scored once; evaluation puts the sentence back together before counting its entities. A word
with no piece (the normalizer removes U+200B, soft hyphens, byte-order marks) is never seen by the model: it is
scored as predicted O, so an entity on it counts as missed.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Iterator, Sequence

import datasets
import torch
from tokenizers import Tokenizer

from bertlite.data.classification import SPLITS, LabelledDataModule
from bertlite.data.sources import expand_files, load_files, load_hub, require_column
from bertlite.data.encoding import encode_words
from bertlite.data.special_tokens import special_id
from bertlite.data.tokenizer import copy_tokenizer
from bertlite.data.word_windows import pieces_by_word, plan_windows, resolve_stride, scored_words, window_pieces
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
        tag_column: int = -1,
        tokens_column: str = "tokens",
        tags_column: str = "tags",
        label_all_pieces: bool = False,
        metric: str = "entity_f1",
        stride: int | None = None,
        format: str | None = None,
        **common,
    ):
        if format not in (None, "conll", "json"):
            raise ConfigError(f"data.format={format!r}: token classification reads conll (column files) or json "
                              "(JSON Lines with a list of words and a list of tags per row)")
        if not isinstance(tag_column, int) or isinstance(tag_column, bool):
            raise ConfigError(f"data.tag_column={tag_column!r} must be a column index (0 is the word, -1 the last)")
        super().__init__(tokenizer, format=format, metric=metric, **common)
        self.tag_column = tag_column
        self.tokens_column = tokens_column
        self.tags_column = tags_column
        self.label_all_pieces = label_all_pieces
        self.stride = resolve_stride(stride, self.max_seq_len)

    def train_texts(self) -> Iterator[str]:
        """Training sentences, words joined by spaces: for fitting a tokenizer when there is no pretrained one."""
        yield from (" ".join(words) for words in self.load_raw()["train"]["tokens"])

    # --- raw data and labels ------------------------------------------------------------------
    def _split_format(self, split: str) -> str:
        """"json" or "conll": data.format, else what the split's file names say."""
        files = expand_files(self.files.get(split), f"{split} file")
        return self.format or ("json" if files and all(f.lower().endswith(JSON_ENDINGS) for f in files) else "conll")

    def _read_split(self, split: str, files: list[str]) -> datasets.Dataset:
        fmt = self._split_format(split)
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
        words, tags = ds[self.tokens_column], ds[self.tags_column]
        self._check_value_kinds(split, words, tags)
        tags = [[names[t] if names else str(t) for t in row] for row in tags]
        return datasets.Dataset.from_dict({"tokens": words, "tags": tags})

    def _check_value_kinds(self, split: str, words: list, tags: list) -> None:
        """Each row's words are a list of strings and its tags a list of names or class numbers: a file of other
        JSON values is one error, not a TypeError or an Arrow error further on."""
        for i, (row_words, row_tags) in enumerate(zip(words, tags)):
            if not isinstance(row_words, list) or not all(isinstance(w, str) for w in row_words):
                raise DataError(f"{split} row {i}: {self.tokens_column!r} must be a list of strings (the words), "
                                f"found {row_words!r:.80}")
            if not isinstance(row_tags, list) or not all(
                    isinstance(t, str) or (isinstance(t, int) and not isinstance(t, bool)) for t in row_tags):
                raise DataError(f"{split} row {i}: {self.tags_column!r} must be a list of tags (names such as "
                                f"B-PER, or class numbers), found {row_tags!r:.80}")

    def read_raw(self) -> datasets.DatasetDict:
        if self.path:
            hub = load_hub(self.path, self.name, local_files="data=conll data.train_file=<file> (CoNLL columns) "
                                                             "or data=ner_jsonl data.train_file=<file> (JSON Lines)")
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
                where = (f"column {self.tags_column!r}" if self.path or self._split_format(split) == "json"
                         else f"column {self.tag_column} of the CoNLL file")
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
        whole = copy_tokenizer(tokenizer)  # windows, not truncation, keep every word
        whole.no_truncation()
        purpose = "token classification (every window of words starts and ends with them)"
        windows = SentenceWindows(self.max_seq_len, self.stride, special_id(tokenizer, "cls", purpose),
                                  special_id(tokenizer, "sep", purpose), self.label_all_pieces, inside_tags(names))
        for split, ds in raw.items():
            if "tags" not in ds.column_names:
                continue  # an unlabelled test split: nothing to score
            unseen = sorted({t for tags in ds["tags"] for t in tags} - set(names))
            if unseen:
                raise DataError(f"the {split} split has tags never seen in training: {unseen[:10]}; training "
                                f"tags are {names}")
            rows, stats = [], SplitStats(names)
            for start in range(0, len(ds), 1000):
                chunk = ds[start:start + 1000]
                encodings = encode_words(whole, chunk["tokens"])
                for n, (encoding, tags) in enumerate(zip(encodings, chunk["tags"])):
                    sentence_rows = windows.rows(start + n, encoding, [ids[t] for t in tags])
                    stats.add(sentence_rows)
                    rows += sentence_rows
            if split == "train":  # a window that labels no word teaches nothing
                rows = [r for r in rows if any(label != IGNORE for label in r["labels"])]
            else:  # sorted by length: evaluation batches carry little padding
                rows.sort(key=lambda r: r["length"])
            stats.log(split, self.max_seq_len, self.stride)
            self.datasets[split] = rows
        log.info("Token classification data: %s; tags %s",
                 ", ".join(f"{s} {len(d)}" for s, d in self.datasets.items()), names)

    # --- loaders ----------------------------------------------------------------------------------
    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        """Padded ids; per token the label, the first-piece mark and the word index (-1: no word scored there);
        per row its sentence, and the words without pieces (-1 padded) with their gold tags."""
        batch = super().collate(rows)
        shape = batch["input_ids"].shape
        labels = torch.full(shape, IGNORE, dtype=torch.long)
        starts = torch.zeros(shape, dtype=torch.long)
        word_index = torch.full(shape, -1, dtype=torch.long)
        width = max(len(r.get("unseen_words", ())) for r in rows)
        unseen_words = torch.full((len(rows), width), -1, dtype=torch.long)
        unseen_tags = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        for i, r in enumerate(rows):
            labels[i, :len(r["labels"])] = torch.as_tensor(r["labels"])
            starts[i, :len(r["word_starts"])] = torch.as_tensor(r["word_starts"])
            word_index[i, :len(r["word_index"])] = torch.as_tensor(r["word_index"])
            empty = r.get("unseen_words", ())
            unseen_words[i, :len(empty)] = torch.as_tensor(empty, dtype=torch.long)
            unseen_tags[i, :len(empty)] = torch.as_tensor(r.get("unseen_tags", ()), dtype=torch.long)
        return {**batch, "labels": labels, "word_starts": starts, "word_index": word_index,
                "sentence": torch.as_tensor([r["sentence"] for r in rows]), "unseen_words": unseen_words,
                "unseen_tags": unseen_tags}


@dataclass(frozen=True)
class SentenceWindows:
    """How a sentence becomes rows: windows of at most ``max_seq_len`` tokens sharing ``stride`` pieces, each word
    labelled in one window only (the labels of ``align_tags``; -100 for the words another window labels)."""

    max_seq_len: int
    stride: int
    cls: int
    sep: int
    label_all_pieces: bool
    inside: list[int]

    def rows(self, sentence: int, encoding, tags: list[int]) -> list[dict]:
        """The rows of sentence number ``sentence`` (``encoding``: its words encoded without special tokens). The
        first row also lists the words without pieces and their gold tags, for the metric."""
        pieces = pieces_by_word(encoding.ids, encoding.word_ids, len(tags))
        counts = [len(p) for p in pieces]
        windows = plan_windows(counts, self.max_seq_len, self.stride)
        rows = [self.window_row(sentence, window, set(scored), pieces, tags)
                for window, scored in zip(windows, scored_words(windows, counts))]
        if not rows:  # every word lost to the normalizer: an empty window carries them to the metric
            rows.append(self.window_row(sentence, [], set(), pieces, tags))
        empty = [w for w, n in enumerate(counts) if n == 0]
        rows[0]["unseen_words"], rows[0]["unseen_tags"] = empty, [tags[w] for w in empty]
        return rows

    def window_row(self, sentence: int, window: list[int], scored: set[int], pieces: list[list[int]],
                   tags: list[int]) -> dict:
        window_ids, words = window_pieces(window, pieces, self.max_seq_len)
        word_ids = [None, *words, None]  # [CLS] and [SEP] (<s> and </s>) are no word
        labels, starts = align_tags(word_ids, tags, self.label_all_pieces, self.inside)
        for i, w in enumerate(word_ids):
            if w is not None and w not in scored:  # this word is labelled in another window
                labels[i], starts[i] = IGNORE, 0
        return {"input_ids": [self.cls, *window_ids, self.sep], "token_type_ids": [0] * len(word_ids),
                "labels": labels, "word_starts": starts,
                "word_index": [w if start else -1 for w, start in zip(word_ids, starts)], "sentence": sentence,
                "length": len(word_ids)}


class SplitStats:
    """What the log says of a split: sentences cut into windows, and words the model cannot see."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.windowed = self.windows = self.empty_words = self.empty_entity_words = 0

    def add(self, sentence_rows: list[dict]) -> None:
        if len(sentence_rows) > 1:
            self.windowed += 1
            self.windows += len(sentence_rows)
        empty_tags = [self.names[t] for t in sentence_rows[0]["unseen_tags"]]
        self.empty_words += len(empty_tags)
        self.empty_entity_words += sum(t != "O" for t in empty_tags)

    def log(self, split: str, max_seq_len: int, stride: int) -> None:
        if self.windowed:
            log.info("%s: %d sentences longer than data.max_seq_len=%d tokens were split into %d overlapping "
                     "windows (data.stride=%d pieces shared); every word is still labelled and scored once",
                     split, self.windowed, max_seq_len, self.windows, stride)
        if self.empty_words:
            log.warning("%s: %d words (%d of them tagged as entities) have no word piece: the tokenizer's normalizer "
                        "removes them (such as '\\u200b', soft hyphens, byte-order marks, NUL). The model never sees "
                        "them; evaluation scores them as predicted O", split, self.empty_words,
                        self.empty_entity_words)
