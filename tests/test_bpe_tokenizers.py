"""Tokenizers of every kind bertlite reads: byte-level BPE (bertlite's own, RoBERTa's, ModernBERT's), Unigram and
WordPiece, each saved as transformers saves it, give the ids that transformers' AutoTokenizer gives (singles, pairs,
truncated pairs) on texts from the shared data sets; and bertlite-pretrain trains a byte-level BPE
(tokenizer.kind=bpe)."""

from __future__ import annotations

import gzip
import itertools
import json
import os
from pathlib import Path

import pytest
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from bertlite.data.encoding import encode_texts, truncating
from bertlite.data.special_tokens import special_tokens
from bertlite.data.tokenizer import get_or_train_tokenizer, load_tokenizer, train_bpe, train_wordpiece
from bertlite.errors import ConfigError
from tests.conftest import REPO, TINY_RUN, run_cli, tiny_corpus_paragraphs

transformers = pytest.importorskip("transformers")

DATA_DIR = Path(os.environ.get("BERTLITE_DATA_DIR", REPO.parent / "shared" / "data"))
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
HARD_TEXTS = [  # accents, emoji (with skin tones and joiners), long words, scripts the corpus never shows, spacing
    "Crème brûlée, naïve café résumé — façade coöperate Ångström Øre Ÿ.",
    "Great film 😀👍🏽 and 👨‍👩‍👧 too!!! 🎬🍿",
    "Donaudampfschifffahrtsgesellschaftskapitän met pneumonoultramicroscopicsilicovolcanoconiosis.",
    "  leading spaces,\ttabs and\nnewlines   and trailing  ",
    "中文字符 and العربية and ελληνικά and Ёлка",
    "zero\u200bwidth soft\u00adhyphen e\u0301 (a combining accent) and ﬁ ligature",
    "URLs like https://example.com/a?b=c&d=e and emails like a.b@c.org, numbers 3.14159 and 1,000,000",
]


def training_texts() -> list[str]:
    """What the test tokenizers learn from: Python's documentation and the hard texts."""
    return tiny_corpus_paragraphs(300) + HARD_TEXTS * 3


def saved(tokenizer: Tokenizer, folder: Path, hf_class, **roles) -> Path:
    """Save ``tokenizer`` as transformers does (tokenizer.json and tokenizer_config.json naming its special tokens),
    through ``hf_class(tokenizer_file=...)``."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "source.json"))
    hf_class(tokenizer_file=str(folder / "source.json"), **roles).save_pretrained(str(folder))
    (folder / "source.json").unlink()
    return folder


def bertlite_bpe_folder(folder: Path) -> Path:
    """bertlite's own byte-level BPE (tokenizer.kind=bpe), saved as a RoBERTa tokenizer."""
    return saved(train_bpe(training_texts(), vocab_size=600, lowercase=False), folder,
                 transformers.RobertaTokenizerFast, add_prefix_space=True)


def byte_level_bpe(specials: list, add_prefix_space: bool = False) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(training_texts(), trainer)
    return tokenizer


def roberta_folder(folder: Path) -> Path:
    """As roberta-base's: byte-level BPE, no space added before the first word, <s> A </s></s> B </s>."""
    specials = [AddedToken(t, lstrip=t == "<mask>", special=True) for t in ROBERTA_SPECIALS]
    tokenizer = byte_level_bpe(specials)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False)
    return saved(tokenizer, folder, transformers.RobertaTokenizerFast)


def modernbert_folder(folder: Path) -> Path:
    """As ModernBERT-base's: NFC, byte-level BPE with BERT's special tokens (and extra special tokens of its own),
    [CLS] A [SEP] B [SEP], saved as a PreTrainedTokenizerFast."""
    names = ["|||IP_ADDRESS|||", "[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]", "|||EMAIL_ADDRESS|||"]
    tokenizer = byte_level_bpe([AddedToken(t, lstrip=t == "[MASK]", special=True) for t in names])
    tokenizer.normalizer = normalizers.NFC()
    cls, sep = ("[CLS]", tokenizer.token_to_id("[CLS]")), ("[SEP]", tokenizer.token_to_id("[SEP]"))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1", special_tokens=[cls, sep])
    return saved(tokenizer, folder, transformers.PreTrainedTokenizerFast, cls_token="[CLS]", sep_token="[SEP]",
                 pad_token="[PAD]", mask_token="[MASK]", unk_token="[UNK]")


def unigram_folder(folder: Path) -> Path:
    """A SentencePiece-style Unigram tokenizer (Metaspace) whose special tokens have names of their own (<cls>,
    <sep>): only its tokenizer_config.json says which is which."""
    specials = ["<pad>", "<unk>", "<cls>", "<sep>", "<mask>"]
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(training_texts(), trainers.UnigramTrainer(
        vocab_size=600, special_tokens=specials, unk_token="<unk>", show_progress=False))
    cls, sep = ("<cls>", tokenizer.token_to_id("<cls>")), ("<sep>", tokenizer.token_to_id("<sep>"))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<cls> $A <sep>", pair="<cls> $A <sep> $B:1 <sep>:1", special_tokens=[cls, sep])
    return saved(tokenizer, folder, transformers.PreTrainedTokenizerFast, cls_token="<cls>", sep_token="<sep>",
                 pad_token="<pad>", mask_token="<mask>", unk_token="<unk>")


def wordpiece_folder(folder: Path) -> Path:
    """bertlite's WordPiece (lower-cased, as bert-base-uncased), saved as a BERT tokenizer."""
    return saved(train_wordpiece(training_texts(), vocab_size=600), folder, transformers.BertTokenizerFast)


FOLDERS = {"bertlite_bpe": bertlite_bpe_folder, "roberta": roberta_folder, "modernbert": modernbert_folder,
           "unigram": unigram_folder, "wordpiece": wordpiece_folder}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """kind -> its tokenizer folder, each built once, when first asked for."""
    built: dict[str, Path] = {}

    def folder(kind: str) -> Path:
        if kind not in built:
            built[kind] = FOLDERS[kind](tmp_path_factory.mktemp(kind))
        return built[kind]

    return folder


def read_lines(path: Path, n: int) -> list[str]:
    """The first ``n`` lines of a text file, gzipped or not (a byte-order mark dropped)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig") as f:
        return [line.rstrip("\n") for line in itertools.islice(f, n)]


def json_texts(path: Path, n: int) -> list[str]:
    return [json.loads(line)["text"] for line in read_lines(path, n)]


def tsv_columns(path: Path, n: int, columns: slice) -> list[list[str]]:
    """Columns of the first ``n`` rows after the header."""
    return [line.split("\t")[columns] for line in read_lines(path, n + 1)[1:]]


def conll_sentences(path: Path, n: int) -> list[str]:
    sentences, words = [], []
    for line in read_lines(path, 20 * n):
        if line.strip() and not line.startswith("-DOCSTART-"):
            words.append(line.split()[0])
        elif words:
            sentences.append(" ".join(words))
            words = []
    return sentences[:n]


def parity_texts() -> tuple[list[str], list[tuple[str, str]]]:
    """1,000 texts from five corpora (Gutenberg prose, long IMDB reviews, SST-2 sentences, CoNLL-2003 news,
    WikiText) and the hard texts; and sentence pairs from MRPC and RTE."""
    wiki = [line.strip() for line in read_lines(DATA_DIR / "wikitext2_raw_test" / "wiki.test.raw", 600)
            if line.strip()]
    texts = (json_texts(DATA_DIR / "gutenberg_en" / "validation.jsonl.gz", 250)
             + json_texts(DATA_DIR / "imdb" / "test.jsonl.gz", 50)
             + [row[0] for row in tsv_columns(DATA_DIR / "glue_sst2" / "dev.tsv", 350, slice(0, 1))]
             + conll_sentences(DATA_DIR / "conll2003" / "dev.txt", 200) + wiki[:143] + HARD_TEXTS)
    pairs = [tuple(row) for row in tsv_columns(DATA_DIR / "glue_mrpc" / "dev.tsv", 408, slice(3, 5))]
    pairs += [tuple(row) for row in tsv_columns(DATA_DIR / "glue_rte" / "dev.tsv", 277, slice(1, 3))]
    pairs += list(zip(HARD_TEXTS, reversed(HARD_TEXTS)))
    return texts, pairs


@pytest.fixture(scope="module")
def texts_and_pairs():
    if not DATA_DIR.is_dir():
        pytest.skip("the shared data (BERTLITE_DATA_DIR, ../shared/data) is absent")
    return parity_texts()


@pytest.mark.parametrize("kind", ["bertlite_bpe", "roberta", "modernbert", "wordpiece"])
def test_ids_equal_autotokenizers_on_a_thousand_texts_singles_and_pairs(kind, folders, texts_and_pairs):
    texts, pairs = texts_and_pairs
    folder = folders(kind)
    assert len(texts) == 1000 and len(pairs) > 600
    ours = load_tokenizer(folder)
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
    assert [e.ids for e in encode_texts(ours, texts)] == theirs(texts)["input_ids"]
    firsts, seconds = [a for a, _ in pairs], [b for _, b in pairs]
    assert [e.ids for e in encode_texts(ours, firsts, seconds)] == theirs(firsts, seconds)["input_ids"]
    firsts, seconds = firsts[::4], seconds[::4]  # truncation, on a quarter of the pairs
    cut = theirs(firsts, seconds, truncation="longest_first", max_length=48)["input_ids"]
    assert [e.ids for e in encode_texts(truncating(ours, 48), firsts, seconds)] == cut


@pytest.mark.parametrize("kind", list(FOLDERS))
def test_ids_equal_autotokenizers_on_hard_texts_without_the_data(kind, folders):
    folder = folders(kind)
    ours = load_tokenizer(folder)
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
    assert [e.ids for e in encode_texts(ours, HARD_TEXTS)] == theirs(HARD_TEXTS)["input_ids"]
    pairs = list(reversed(HARD_TEXTS))
    assert [e.ids for e in encode_texts(ours, HARD_TEXTS, pairs)] == theirs(HARD_TEXTS, pairs)["input_ids"]


@pytest.mark.parametrize("kind", list(FOLDERS))
def test_roles_are_the_ones_transformers_reads(kind, folders):
    folder = folders(kind)
    roles = special_tokens(load_tokenizer(folder))
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
    assert (roles.pad, roles.unk, roles.cls, roles.sep, roles.mask) == (
        theirs.pad_token, theirs.unk_token, theirs.cls_token, theirs.sep_token, theirs.mask_token)


def test_bpe_training_gives_robertas_special_tokens_and_template():
    tokenizer = train_bpe(training_texts(), vocab_size=600, lowercase=False)
    vocab = tokenizer.get_vocab()
    assert [vocab[t] for t in ROBERTA_SPECIALS] == [0, 1, 2, 3, 4]  # numbered as roberta-base numbers them
    assert 500 < tokenizer.get_vocab_size() <= 600
    encoding = tokenizer.encode("Hello there", "General Kenobi")
    assert encoding.tokens[0] == "<s>" and encoding.tokens.count("</s>") == 3 and encoding.tokens[-1] == "</s>"
    assert encoding.tokens[1].startswith("Ġ")  # a space before the first word too: words start alike everywhere
    assert set(encoding.type_ids) == {0}  # RoBERTa has no token types
    assert tokenizer.decode(tokenizer.encode("Crème brûlée 😀!").ids) == " Crème brûlée 😀!"  # bytes: nothing unknown
    lower = train_bpe(training_texts(), vocab_size=600, lowercase=True)
    assert lower.encode("HELLO").ids == lower.encode("hello").ids


def test_bpe_vocabulary_below_the_byte_alphabet_is_one_config_error():
    with pytest.raises(ConfigError, match="tokenizer.vocab_size=200 .*256 bytes"):
        train_bpe(training_texts(), vocab_size=200)


def test_unknown_tokenizer_kind_is_one_config_error(tmp_path):
    with pytest.raises(ConfigError, match="tokenizer.kind='sentencepiece': choose wordpiece or bpe"):
        get_or_train_tokenizer(None, tmp_path / "tokenizer.json", ["some text"], 300, True, kind="sentencepiece")


@pytest.mark.slow
def test_pretrain_cli_trains_a_bpe_tokenizer_and_the_model_fills_its_mask(tiny_corpus, tmp_path):
    import bertlite

    result = run_cli("bertlite.pretrain", *TINY_RUN, "data=text_files", f"data.train_files={tiny_corpus}",
                     "tokenizer.kind=bpe", "tokenizer.lowercase=false", "trainer.max_steps=4",
                     "trainer.val_check_interval=2", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    tokenizer = load_tokenizer(tmp_path / "tokenizer.json")
    assert json.loads(tokenizer.to_str())["model"]["type"] == "BPE"
    assert tokenizer.get_vocab()["<mask>"] == 4
    model = bertlite.load(tmp_path / "checkpoints" / "last.ckpt")
    assert model.mask_token == "<mask>"
    assert model.meta["special_tokens"]["mask"] == "<mask>"  # stored in the checkpoint, beside the tokenizer
    assert len(model.fill_mask("The value of the <mask> is returned.", top_k=3)) == 3
