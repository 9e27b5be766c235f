"""The file readers under hostile input: random bytes, text in another encoding, a valid file cut at any point,
and random JSON values. Each reader, called as a run calls it, gives data or one DataError / CheckpointError (a
line the CLI prints), never another exception (a traceback). Hypothesis draws a fixed, bounded set of examples."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
from contextlib import suppress
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")  # a dev extra: an install without it still runs the rest of the suite
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from bertlite.errors import CheckpointError, DataError

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# derandomize: the same examples on every run, so a CI failure is reproducible (and no example database is
# needed to find it again)
FUZZ = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
# datasets' loaders cost tens of milliseconds a call: fewer examples there
FUZZ_DATASETS = settings(FUZZ, max_examples=20)
# the slowest readers: a failure is reported as found, without the minutes that shrinking it would take
NO_SHRINK = (Phase.explicit, Phase.generate)

ENCODINGS = ["latin-1", "cp1252", "utf-16", "utf-32", "utf-8-sig", "utf-8"]
# words outside ASCII, so that the encoding matters
WORDS = ["the", "value", "was", "valid", "café", "naïve", "“quoted”", "—", "€", "日本", "\u200b", "\x00",
         "ß"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8)


def encoded(text: str, encoding: str) -> bytes:
    return text.encode(encoding, errors="replace")


def hostile(valid: str, random_line: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """The bytes of a file: random bytes, random text or the valid file in another encoding, the valid file
    cut at a random byte, or the valid file with a random line put in at a random place."""
    raw = valid.encode()
    lines = valid.splitlines(keepends=True)

    def spliced(at: int, line: str, encoding: str) -> bytes:
        return encoded("".join(lines[:at]) + line + "\n" + "".join(lines[at:]), encoding)

    return st.one_of(
        st.binary(max_size=300),
        st.builds(encoded, st.text(max_size=150), st.sampled_from(ENCODINGS)),
        st.builds(encoded, st.just(valid), st.sampled_from(ENCODINGS)),
        st.integers(0, len(raw)).map(lambda n: raw[:n]),
        st.builds(spliced, st.integers(0, len(lines)), random_line, st.sampled_from(ENCODINGS)),
    )


_counter = itertools.count()


def fresh_file(folder: Path, name: str, content: bytes) -> str:
    """``content`` in a new folder of its own: no reader cache can serve an earlier example's data."""
    path = folder / f"case{next(_counter)}" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A folder for the examples' files, with datasets' cache inside it."""
    import datasets

    folder = tmp_path_factory.mktemp("fuzz")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", str(folder / "hf_cache"))
        datasets.disable_progress_bars()
        yield folder


@pytest.fixture(scope="module")
def tokenizer():
    from bertlite.data.tokenizer import train_wordpiece

    return train_wordpiece([" ".join(WORDS)] * 20 + ["B-PER I-PER O a b c"] * 20, vocab_size=80)


# --- classification files: CSV, TSV, JSON Lines ----------------------------------------------------------
ROWS = [(f"{WORDS[i % len(WORDS)]} {WORDS[3 * i % len(WORDS)]} .", "pos" if i % 2 else "neg") for i in range(8)]


def delimited(sep: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=sep, lineterminator="\n")
    writer.writerow(["text", "label"])
    writer.writerows(ROWS)
    return out.getvalue()


def json_lines() -> str:
    return "".join(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n"
                   for text, label in ROWS)


def delimited_row(sep: str) -> st.SearchStrategy[str]:
    """A row of random cells, quoted as csv quotes them (delimiters, quotes and newlines inside cells)."""
    def row(cells: list[str]) -> str:
        out = io.StringIO()
        csv.writer(out, delimiter=sep, lineterminator="").writerow(cells)
        return out.getvalue()

    return st.one_of(st.lists(st.text(max_size=10), max_size=4).map(row), st.text(max_size=30))


# a JSON line: usually a row with text and label of any JSON type, else any JSON value
json_line = st.one_of(
    st.fixed_dictionaries({"text": json_values, "label": json_values}),
    st.fixed_dictionaries({"text": st.text(max_size=10), "label": json_values}),
    json_values,
).map(json.dumps)

CLASSIFICATION_FILES = {
    "train.csv": hostile(delimited(","), delimited_row(",")),
    "train.tsv": hostile(delimited("\t"), delimited_row("\t")),
    "train.jsonl": hostile(json_lines(), json_line),
}


def read_classification(tokenizer, train_file: str, **options) -> None:
    """What bertlite-finetune does with the files before training: read them, find the labels, tokenize."""
    from bertlite.data.classification import ClassificationDataModule

    dm = ClassificationDataModule(tokenizer, train_file=train_file, max_seq_len=16, **options)
    dm.find_label_names()
    dm.setup()


@pytest.mark.parametrize("name", list(CLASSIFICATION_FILES))
def test_a_hostile_classification_file_is_read_or_one_data_error(name, files, tokenizer):
    @FUZZ_DATASETS
    @given(content=CLASSIFICATION_FILES[name])
    def check(content: bytes) -> None:
        with suppress(DataError):
            read_classification(tokenizer, fresh_file(files, name, content))

    check()


@FUZZ_DATASETS
@given(lines=st.lists(json_line, min_size=1, max_size=6),
       problem_type=st.sampled_from(["auto", "single_label", "multi_label", "regression"]))
def test_random_json_labels_are_read_or_one_data_error(lines, problem_type, files, tokenizer):
    content = ("\n".join(lines) + "\n").encode()
    with suppress(DataError):
        read_classification(tokenizer, fresh_file(files, "train.jsonl", content), problem_type=problem_type,
                            label_separator="," if problem_type == "multi_label" else None)


@settings(FUZZ_DATASETS, phases=NO_SHRINK)
@example(lines=['{"text": 5, "label": "a"}', '{"text": 6, "label": "b"}', '{"text": 7, "label": "a"}'])
@given(lines=st.lists(json_line, min_size=1, max_size=6))
def test_random_json_texts_fit_a_tokenizer_or_give_one_data_error(lines, files):
    """Fine-tuning without a pretrained tokenizer fits one on the training text."""
    from bertlite.data.classification import ClassificationDataModule
    from bertlite.data.tokenizer import train_wordpiece

    path = fresh_file(files, "train.jsonl", ("\n".join(lines) + "\n").encode())
    dm = ClassificationDataModule(train_file=path)
    with suppress(DataError):
        train_wordpiece(dm.train_texts(), vocab_size=40)


# what the fuzzing found, as fixed cases: each was a traceback (or a crash) before
@pytest.mark.parametrize("name, content, message", [
    # Arrow's JSON reader segfaults on a null row (the whole process dies, no exception)
    ("train.jsonl", b'{"text": "a", "label": "x"}\nnull\n', r"train.jsonl, line 2, is null"),
    ("train.json", b'[null, {"text": "a", "label": "x"}]', r"train.json: element 0 of its JSON array is null"),
    # Arrow's JSON reader keeps Latin-1 bytes unchecked: a UnicodeDecodeError when the text was tokenized
    ("train.jsonl", '{"text": "café", "label": "x"}\n{"text": "b", "label": "y"}\n'.encode("latin-1"),
     r"train.jsonl, line 1, is not valid UTF-8"),
    ("train.jsonl", b'{"text": "a", "label": []}\n{"text": "b", "label": "x"}\n{"text": "c", "label": "y"}\n',
     r"holds \[\] in row 0: a label must be a class name or a number; .*multi_label"),
    ("train.jsonl", b'{"text": "a", "label": {"k": 1}}\n{"text": "b", "label": "x"}\n',
     r"holds \{'k': 1\}"),
])
def test_what_fuzzing_found_is_one_data_error(name, content, message, files, tokenizer):
    path = fresh_file(files, name, content)
    with pytest.raises(DataError, match=message):  # validation given: no shuffled split, rows keep order
        read_classification(tokenizer, path, validation_file=path)


def test_a_file_of_one_row_is_one_data_error_not_a_split_failure(files, tokenizer):
    """Too few rows to carve a validation split from: a ValueError from datasets before."""
    path = fresh_file(files, "train.csv", b"text,label\nthe value,pos\n")
    with pytest.raises(DataError, match=r"1 row\(s\): too few to carve a validation split"):
        read_classification(tokenizer, path)


# --- pretraining text: plain text and JSON Lines ---------------------------------------------------------
TEXT = "".join(f"{' '.join(WORDS[i:] + WORDS[:i])}\n" for i in range(6))


@FUZZ_DATASETS
@given(content=hostile(TEXT, st.text(max_size=40)))
def test_a_hostile_text_corpus_is_read_or_one_data_error(content, files):
    from bertlite.data.pretraining import load_text_corpus

    with suppress(DataError):
        load_text_corpus(train_files=fresh_file(files, "train.txt", content), validation_fraction=0.2)


@settings(FUZZ_DATASETS, phases=NO_SHRINK)
@example(content=b'{"text": 5}\n{"text": "the value"}\n{"text": "was valid"}\n')
@given(content=hostile("".join(json.dumps({"text": line}) + "\n" for line in TEXT.splitlines()),
                       st.fixed_dictionaries({"text": json_values}).map(json.dumps)))
def test_a_hostile_json_lines_corpus_is_read_or_one_data_error(content, files):
    from bertlite.data.pretraining import load_text_corpus

    with suppress(DataError):
        load_text_corpus(train_files=fresh_file(files, "train.jsonl", content), validation_fraction=0.2)


# --- named entities: CoNLL columns and JSON Lines --------------------------------------------------------
CONLL = "-DOCSTART- -X- O\n\nthe DT B-PER\ncafé NN I-PER\n. . O\n\n日本 NN B-LOC\nwas VB O\n"
conll_line = st.one_of(st.lists(st.text(alphabet=st.characters(exclude_characters="\n\r"), max_size=6),
                                max_size=4).map(" ".join),
                       st.text(max_size=20))


def read_named_entities(tokenizer, train_file: str) -> None:
    from bertlite.data.token_classification import TokenClassificationDataModule

    dm = TokenClassificationDataModule(tokenizer, train_file=train_file, max_seq_len=16)
    with suppress(DataError):
        dm.find_label_names()
        dm.setup()


@FUZZ
@given(content=hostile(CONLL, conll_line), tag_column=st.sampled_from([-1, 1, 2, 5]))
def test_a_hostile_conll_file_is_read_or_one_data_error(content, tag_column, files):
    from bertlite.data.token_classification import read_conll

    try:
        read = read_conll(fresh_file(files, "train.conll", content), tag_column)
    except DataError:
        return
    assert all(len(words) == len(tags) for words, tags in zip(read["tokens"], read["tags"]))


@FUZZ
@given(content=hostile(CONLL, conll_line))
def test_a_hostile_conll_training_file_is_read_or_one_data_error(content, files, tokenizer):
    read_named_entities(tokenizer, fresh_file(files, "train.txt", content))


NER_JSONL = "".join(json.dumps({"tokens": t, "tags": g}, ensure_ascii=False) + "\n" for t, g in [
    (["the", "café"], ["B-PER", "I-PER"]), (["日本", "was", "."], ["B-LOC", "O", "O"])])
ner_json_line = st.one_of(
    st.fixed_dictionaries({"tokens": json_values, "tags": json_values}),
    st.fixed_dictionaries({"tokens": st.lists(st.text(max_size=5), max_size=3), "tags": json_values}),
    json_values,
).map(json.dumps)


@settings(FUZZ_DATASETS, phases=NO_SHRINK)
@example(content=(NER_JSONL + '{"tokens": ["a"], "tags": 5}\n').encode())
@example(content=(NER_JSONL + '{"tokens": "ab", "tags": ["O", "O"]}\n').encode())
@given(content=hostile(NER_JSONL, ner_json_line))
def test_a_hostile_named_entity_json_lines_file_is_read_or_one_data_error(content, files, tokenizer):
    read_named_entities(tokenizer, fresh_file(files, "train.jsonl", content))


# --- model folders: config.json --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, tokenizer) -> tuple[Path, str]:
    """A valid classifier model folder and its config.json's text; each example rewrites config.json."""
    from bertlite.model_folder import save_model_folder
    from bertlite.models import preset
    from bertlite.models.registry import build_classifier
    from tests.conftest import predictor_checkpoint

    config = preset("bert-tiny", vocab_size=tokenizer.get_vocab_size(), d_model=32, n_heads=2, d_ff=64,
                    n_layers=2, max_seq_len=32)
    checkpoint = predictor_checkpoint(build_classifier(config, 2), tokenizer, "classification",
                                      label_names=["neg", "pos"], pooling="cls", max_seq_len=32)
    folder = save_model_folder(checkpoint, tmp_path_factory.mktemp("folder") / "model")
    return folder, (folder / "config.json").read_text()


def read_folder(folder: Path, config: bytes) -> None:
    """``bertlite.load``'s reading and checks (read_checkpoint), and the folder reader alone."""
    from bertlite.sources import read_checkpoint
    from bertlite.model_folder import read_model_folder

    (folder / "config.json").write_bytes(config)
    for read in (read_checkpoint, read_model_folder):
        with suppress(CheckpointError):
            read(folder)


@FUZZ
@given(data=st.data())
def test_a_hostile_config_json_file_is_read_or_one_checkpoint_error(model_folder, data):
    folder, valid = model_folder
    read_folder(folder, data.draw(hostile(valid, st.text(max_size=30))))


@FUZZ
@example(value=None)
@example(value=[])
@example(value={"format": "bertlite-model-folder", "tied_weights": []})
@given(value=json_values | st.dictionaries(st.sampled_from(["format", "task", "model_config", "tied_weights"]),
                                           json_values, max_size=4))
def test_config_json_holding_any_json_value_is_one_checkpoint_error(model_folder, value):
    read_folder(model_folder[0], json.dumps(value).encode())


def _model_config_fields() -> list[str]:
    import dataclasses

    from bertlite.models.config import BertConfig

    return [f.name for f in dataclasses.fields(BertConfig)]


DELETE = object()  # a change that removes the field
CONFIG_FIELDS = ([("format",), ("task",), ("model_config",), ("label_names",), ("pooling",), ("max_seq_len",),
                  ("tied_weights",)] + [("model_config", name) for name in _model_config_fields()])


@settings(FUZZ, phases=NO_SHRINK)
@example(changes=[(("model_config", "n_heads"), 0)])
@given(changes=st.lists(st.tuples(st.sampled_from(CONFIG_FIELDS), json_values | st.just(DELETE)), min_size=1,
                        max_size=3))
def test_config_json_with_random_field_values_is_read_or_one_checkpoint_error(model_folder, changes):
    folder, valid = model_folder
    config = json.loads(valid)
    for path, value in changes:
        parent = config if len(path) == 1 else config["model_config"]
        if not isinstance(parent, dict):  # model_config itself was replaced by an earlier change
            continue
        if value is DELETE:
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = value
    read_folder(folder, json.dumps(config).encode())
