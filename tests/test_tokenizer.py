"""WordPiece tokenizers: training, the BERT template, decoding, unknown characters, casing,
and saving / loading (tokenizer.json and vocab.txt)."""

from __future__ import annotations

import re

import pytest

from bertlite.data.tokenizer import (
    SPECIAL_TOKENS,
    get_or_train_tokenizer,
    load_tokenizer,
    special_ids,
    tokenizer_from_json,
    train_wordpiece,
)
from bertlite.errors import ConfigError
from tests.conftest import synthetic_sentences

VOCAB_SIZE = 200


def make_corpus(n_sentences: int = 600, seed: int = 1234) -> list[str]:
    return synthetic_sentences(n_sentences, seed, inner_commas=True)


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return make_corpus()


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return train_wordpiece(corpus, vocab_size=VOCAB_SIZE)


@pytest.fixture(scope="module")
def cased_tokenizer(corpus):
    return train_wordpiece(corpus, vocab_size=VOCAB_SIZE, lowercase=False)


SENTENCES = ["The cat sat on the mat.", "She was in the lomine, with katas!", "to be or not to be?",
             "Kazarmika fenne vimok zarnegrumi."]


def _squash_punct(text: str) -> str:
    """Normalise whitespace and the spaces around punctuation."""
    text = re.sub(r"\s*([.,!?])\s*", r"\1 ", text)
    return " ".join(text.split())


def test_vocabulary_size_and_special_tokens(tokenizer):
    vocab = tokenizer.get_vocab()
    assert len(vocab) == tokenizer.get_vocab_size() <= VOCAB_SIZE
    assert tokenizer.get_vocab_size() >= VOCAB_SIZE - 10  # the corpus is rich enough to fill it
    assert vocab["[PAD]"] == 0
    for tok in SPECIAL_TOKENS:
        assert tok in vocab
    ids = special_ids(tokenizer)
    assert ids["pad"] == 0 and len(set(ids.values())) == 5
    assert any(t.startswith("##") for t in vocab)  # WordPiece continuation pieces


def test_single_encoding_adds_cls_and_sep(tokenizer):
    ids = special_ids(tokenizer)
    for text in SENTENCES:
        enc = tokenizer.encode(text)
        assert enc.ids[0] == ids["cls"] and enc.ids[-1] == ids["sep"]
        assert enc.ids.count(ids["cls"]) == 1 and enc.ids.count(ids["sep"]) == 1
        assert set(enc.type_ids) == {0}
        bare = tokenizer.encode(text, add_special_tokens=False)
        assert enc.ids[1:-1] == bare.ids


def test_pair_encoding_token_types(tokenizer):
    ids = special_ids(tokenizer)
    a, b = "the cat sat", "on the mat."
    enc = tokenizer.encode(a, b)
    n_a = len(tokenizer.encode(a, add_special_tokens=False).ids)
    n_b = len(tokenizer.encode(b, add_special_tokens=False).ids)
    assert len(enc.ids) == n_a + n_b + 3
    assert enc.ids[0] == ids["cls"] and enc.ids[n_a + 1] == ids["sep"] and enc.ids[-1] == ids["sep"]
    assert enc.type_ids == [0] * (n_a + 2) + [1] * (n_b + 1)


def test_decode_round_trips_lowercase_text(tokenizer, corpus):
    for text in corpus[:50] + SENTENCES:
        decoded = tokenizer.decode(tokenizer.encode(text).ids)
        assert "[CLS]" not in decoded and "[SEP]" not in decoded
        assert _squash_punct(decoded) == _squash_punct(text.lower())


def test_unknown_characters_map_to_unk(tokenizer):
    unk = special_ids(tokenizer)["unk"]
    for text in ["the \U0001F600 cat", "the \u4e2d cat", "\u4e2d\u6587"]:
        enc = tokenizer.encode(text)
        assert unk in enc.ids
    enc = tokenizer.encode("the \U0001F600 the")
    assert enc.tokens[1:-1] == ["the", "[UNK]", "the"]
    # CJK characters are split one per token, each unknown.
    assert tokenizer.encode("\u4e2d\u6587", add_special_tokens=False).ids == [unk, unk]


def test_lowercase_false_keeps_case(tokenizer, cased_tokenizer):
    text = "The cat, She"
    cased = cased_tokenizer.encode(text, add_special_tokens=False).tokens
    lower = tokenizer.encode(text, add_special_tokens=False).tokens
    assert any(c.isupper() for t in cased for c in t)
    assert not any(c.isupper() for t in lower for c in t)
    assert cased[0].startswith("T") and lower[0].startswith("t")
    words = "".join(t[2:] if t.startswith("##") else " " + t for t in cased).split()
    assert words == ["The", "cat", ",", "She"]
    assert _squash_punct(cased_tokenizer.decode(cased_tokenizer.encode(text).ids)) == _squash_punct(text)
    # The cased vocabulary holds both cases of the letters it saw capitalised; the uncased one only lowercase.
    vocab = cased_tokenizer.get_vocab()
    assert "T" in vocab and "t" in vocab
    assert not any(c.isupper() for t in tokenizer.get_vocab() if not t.startswith("[") for c in t)


def _exploding_texts():
    raise AssertionError("the texts must not be read when a tokenizer.json already exists")
    yield "never"  # pragma: no cover


def test_get_or_train_tokenizer_writes_then_reuses(tmp_path, corpus):
    out = tmp_path / "run" / "tokenizer.json"
    first = get_or_train_tokenizer(None, out, iter(corpus), VOCAB_SIZE, True)
    assert out.is_file()
    assert not out.with_suffix(".json.tmp").exists()
    # A second call reuses the file, whatever texts it is given: they are never iterated.
    second = get_or_train_tokenizer(None, out, _exploding_texts(), 50, False)
    assert second.get_vocab() == first.get_vocab()
    for text in SENTENCES:
        assert second.encode(text).ids == first.encode(text).ids
    # The JSON form (as stored in checkpoints) rebuilds the same tokenizer.
    third = tokenizer_from_json(first.to_str())
    assert third.encode(SENTENCES[0], SENTENCES[1]).ids == first.encode(SENTENCES[0], SENTENCES[1]).ids


def test_get_or_train_tokenizer_with_given_path(tmp_path, tokenizer):
    src = tmp_path / "given.json"
    tokenizer.save(str(src))
    out = tmp_path / "run" / "tokenizer.json"
    got = get_or_train_tokenizer(str(src), out, _exploding_texts(), VOCAB_SIZE, True)
    assert out.is_file()
    assert got.get_vocab() == tokenizer.get_vocab()


def test_vocab_txt_matches_json_tokenizer(tmp_path, tokenizer):
    vocab = tokenizer.get_vocab()
    by_id = sorted(vocab, key=vocab.get)
    assert [vocab[t] for t in by_id] == list(range(len(by_id)))
    vocab_txt = tmp_path / "vocab.txt"
    vocab_txt.write_text("\n".join(by_id) + "\n", encoding="utf-8")
    json_path = tmp_path / "tokenizer.json"
    tokenizer.save(str(json_path))

    from_txt = load_tokenizer(vocab_txt)
    from_json = load_tokenizer(json_path)
    assert from_txt.get_vocab() == vocab
    for text in SENTENCES + ["the \U0001F600 cat", "UPPER case Words"]:
        assert from_txt.encode(text).ids == tokenizer.encode(text).ids == from_json.encode(text).ids
    pair = ("the cat sat", "on the mat.")
    assert from_txt.encode(*pair).type_ids == tokenizer.encode(*pair).type_ids
    # A directory resolves to the tokenizer.json inside it.
    assert load_tokenizer(tmp_path).get_vocab() == vocab


def test_vocab_txt_without_cls_sep_is_rejected(tmp_path):
    bad = tmp_path / "vocab.txt"
    bad.write_text("[PAD]\n[UNK]\nthe\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        load_tokenizer(bad)


def test_missing_tokenizer_path_raises_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_tokenizer(tmp_path / "nope.json")
    with pytest.raises(ConfigError):
        load_tokenizer(tmp_path / "empty_dir_that_does_not_exist" / "vocab.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError):
        load_tokenizer(tmp_path / "empty")
    with pytest.raises(ConfigError):
        get_or_train_tokenizer(str(tmp_path / "missing.json"), tmp_path / "out.json", [], 100, True)


def test_corrupt_tokenizer_json_raises_config_error(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot read"):
        load_tokenizer(bad)


def _padded_hub_style(tokenizer, tmp_path):
    """A tokenizer.json as released on the hub: truncation and fixed-length padding enabled in the file."""
    from tokenizers import Tokenizer

    hub = Tokenizer.from_str(tokenizer.to_str())
    hub.enable_truncation(8)
    hub.enable_padding(length=16, pad_id=special_ids(hub)["pad"], pad_token="[PAD]")
    path = tmp_path / "tokenizer.json"
    hub.save(str(path))
    return path


def test_loaded_tokenizer_neither_pads_nor_truncates(tmp_path, tokenizer, corpus):
    """A tokenizer.json that enables padding and truncation once gave 16 ids, 8 of them [PAD]."""
    path = _padded_hub_style(tokenizer, tmp_path)
    text = " ".join(["the"] * 15)
    pad = special_ids(tokenizer)["pad"]
    for loaded in (load_tokenizer(path), tokenizer_from_json(path.read_text())):
        ids = loaded.encode(text).ids
        assert len(ids) == 17 and pad not in ids  # [CLS] + 15 words + [SEP]
        assert loaded.padding is None and loaded.truncation is None


def test_pretraining_stream_from_a_padded_tokenizer_file_has_no_padding(tmp_path, tokenizer, corpus):
    import datasets

    from bertlite.data.pretraining import tokenize_and_pack

    loaded = load_tokenizer(_padded_hub_style(tokenizer, tmp_path))
    docs = datasets.Dataset.from_dict({"text": [" ".join(corpus[i:i + 5]) for i in range(0, 200, 5)]})
    blocks = tokenize_and_pack(docs, loaded, "text", 32)["input_ids"]
    stream = [i for block in blocks for i in block[1:]]
    assert special_ids(tokenizer)["pad"] not in stream
    assert len(stream) > 40 * 17  # documents are not cut to the file's 8 tokens
