"""Tokenizers on Hugging Face ``tokenizers``: train one from a corpus (BERT's WordPiece, or a RoBERTa-style
byte-level BPE), or load any ``tokenizer.json`` (WordPiece, BPE, Unigram) or a BERT ``vocab.txt``.

The tokenizer is saved as ``tokenizer.json``; its full JSON travels inside every checkpoint, beside the roles of
its special tokens (bertlite/data/special_tokens.py), read from a Hugging Face folder's tokenizer_config.json and
special_tokens_map.json where it has them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE, WordPiece
from tokenizers.trainers import BpeTrainer, WordPieceTrainer

from bertlite.data.special_tokens import SpecialTokens, read_hf_special_tokens, special_tokens, with_special_tokens
from bertlite.data.special_tokens import special_ids as special_ids  # where callers have always found it
from bertlite.errors import ConfigError

log = logging.getLogger(__name__)

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = [PAD, UNK, CLS, SEP, MASK]
BERT_ROLES = SpecialTokens(pad=PAD, unk=UNK, cls=CLS, sep=SEP, mask=MASK, source="bertlite's WordPiece tokenizer")
# RoBERTa's order, so that a bertlite BPE vocabulary numbers its special tokens as roberta-base does
BPE_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
BPE_ROLES = SpecialTokens(pad="<pad>", unk="<unk>", cls="<s>", sep="</s>", mask="<mask>", bos="<s>", eos="</s>",
                          source="bertlite's byte-level BPE tokenizer")
BYTE_LEVEL_ALPHABET = 256  # a byte-level BPE vocabulary starts with one symbol per byte


def _bert_pipeline(model: WordPiece, lowercase: bool) -> Tokenizer:
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def _add_bert_template(tokenizer: Tokenizer) -> Tokenizer:
    cls_id, sep_id = tokenizer.token_to_id(CLS), tokenizer.token_to_id(SEP)
    if cls_id is None or sep_id is None:
        raise ConfigError(f"the tokenizer's vocabulary lacks {CLS} or {SEP}; a BERT vocabulary needs both")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}",
        pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, cls_id), (SEP, sep_id)],
    )
    return tokenizer


def train_wordpiece(texts: Iterable[str], vocab_size: int = 8192, lowercase: bool = True,
                    min_frequency: int = 2) -> Tokenizer:
    """Learn a WordPiece vocabulary of ``vocab_size`` entries (special tokens first: [PAD] has id 0)."""
    tokenizer = _bert_pipeline(WordPiece(unk_token=UNK, max_input_chars_per_word=100), lowercase)
    trainer = WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
        continuing_subword_prefix="##", show_progress=False,
    )
    tokenizer.train_from_iterator(_batches(texts), trainer=trainer)
    return with_special_tokens(_add_bert_template(tokenizer), BERT_ROLES)


def train_bpe(texts: Iterable[str], vocab_size: int = 8192, lowercase: bool = False,
              min_frequency: int = 2) -> Tokenizer:
    """Learn a byte-level BPE vocabulary as RoBERTa's (and ModernBERT's) tokenizers are built: text split as GPT-2
    splits it, every byte a symbol (so no text is ever unknown), a space before the first word too
    (``add_prefix_space``: a word starts with the same piece wherever it stands), and RoBERTa's special tokens and
    template: ``<s> A </s>``, pairs ``<s> A </s></s> B </s>``. <mask> takes the space before it, as RoBERTa's does."""
    if vocab_size < BYTE_LEVEL_ALPHABET + len(BPE_SPECIAL_TOKENS):
        raise ConfigError(f"tokenizer.vocab_size={vocab_size} is below what a byte-level BPE vocabulary starts with "
                          f"({BYTE_LEVEL_ALPHABET} bytes and {len(BPE_SPECIAL_TOKENS)} special tokens) before it "
                          "learns a single merge; set tokenizer.vocab_size to a few hundred or more")
    tokenizer = Tokenizer(BPE())
    if lowercase:
        tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    specials = [AddedToken(t, lstrip=t == "<mask>", special=True, normalized=False) for t in BPE_SPECIAL_TOKENS]
    trainer = BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(_batches(texts), trainer=trainer)
    tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", tokenizer.token_to_id("</s>")), ("<s>", tokenizer.token_to_id("<s>")), trim_offsets=True,
        add_prefix_space=True)
    return with_special_tokens(tokenizer, BPE_ROLES)


TRAINERS = {"wordpiece": train_wordpiece, "bpe": train_bpe}  # tokenizer.kind


def _batches(texts: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def load_tokenizer(path: str | Path, lowercase: bool = True) -> Tokenizer:
    """Load a ``tokenizer.json`` (any model: WordPiece, BPE, Unigram) or a BERT ``vocab.txt`` (one WordPiece token
    per line), or a folder holding one. The roles of its special tokens come from the folder's
    tokenizer_config.json / special_tokens_map.json where it has them, else from their usual names."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / "tokenizer.json", path / "vocab.txt"]
        path = next((p for p in candidates if p.exists()), candidates[0])
    if not path.exists():
        raise ConfigError(f"tokenizer file not found: {path}. Give a tokenizer.json or vocab.txt, "
                          "or leave tokenizer.path unset to train one from the corpus")
    try:
        if path.suffix == ".json":
            tokenizer = unpadded(Tokenizer.from_file(str(path)), str(path))
        else:
            vocab = WordPiece.read_file(str(path))
            tokenizer = _add_bert_template(_bert_pipeline(WordPiece(vocab, unk_token=UNK), lowercase))
    except ConfigError:
        raise
    except Exception as exc:  # tokenizers raises plain Exceptions with terse messages
        raise ConfigError(f"cannot read tokenizer {path}: {exc}") from exc
    return with_special_tokens(tokenizer, read_hf_special_tokens(path.parent, tokenizer), str(path))


def unpadded(tokenizer: Tokenizer, source: str = "the tokenizer") -> Tokenizer:
    """The tokenizer with padding and truncation turned off. Released tokenizer.json files often enable both
    (``max_length 128``, ``Fixed 128``); bertlite truncates and pads per task itself (packed pretraining blocks
    hold no padding at all), so a file's own settings would cut documents and write [PAD] into the stream."""
    if tokenizer.padding is not None or tokenizer.truncation is not None:
        log.info("%s enables padding %s / truncation %s; turned off (bertlite pads and truncates per task)",
                 source, tokenizer.padding, tokenizer.truncation)
        tokenizer.no_padding()
        tokenizer.no_truncation()
    return tokenizer


def tokenizer_from_json(text: str, roles: dict | None = None, source: str = "the checkpoint's tokenizer"
                        ) -> Tokenizer:
    """A tokenizer from its JSON and, where stored, the roles of its special tokens ({role: token}; None, as in
    checkpoints written before roles were stored: found by their usual names)."""
    tokenizer = unpadded(Tokenizer.from_str(text), source)
    return with_special_tokens(tokenizer, None if roles is None else SpecialTokens.from_dict(roles, source), source)


def tokenizer_from_section(section: dict, source: str = "the checkpoint") -> Tokenizer:
    """The tokenizer of a checkpoint's bertlite section (or a model folder's), with its roles."""
    return tokenizer_from_json(section["tokenizer"], section.get("special_tokens"), f"{source}'s tokenizer")


def tokenizer_section(tokenizer: Tokenizer) -> dict:
    """What a checkpoint's bertlite section stores of a tokenizer: its JSON and its roles."""
    return {"tokenizer": tokenizer.to_str(), "special_tokens": special_tokens(tokenizer).to_dict()}


def copy_tokenizer(tokenizer: Tokenizer) -> Tokenizer:
    """An independent copy (its truncation and padding can be changed alone), with the same roles."""
    return with_special_tokens(Tokenizer.from_str(tokenizer.to_str()), special_tokens(tokenizer))


def get_or_train_tokenizer(path: str | Path | None, output_file: Path, texts: Iterable[str],
                           vocab_size: int, lowercase: bool, kind: str = "wordpiece") -> Tokenizer:
    """A given tokenizer, else the run's own ``tokenizer.json`` if it exists, else a newly trained one of ``kind``
    (``wordpiece``, BERT's, or ``bpe``, RoBERTa's byte-level BPE)."""
    if kind not in TRAINERS:
        raise ConfigError(f"tokenizer.kind={kind!r}: choose {' or '.join(TRAINERS)}")
    if path:
        tokenizer = load_tokenizer(path, lowercase)
        log.info("Loaded tokenizer %s (%d tokens)", path, tokenizer.get_vocab_size())
    elif output_file.exists():
        tokenizer = load_tokenizer(output_file)
        log.info("Reusing tokenizer %s (%d tokens)", output_file, tokenizer.get_vocab_size())
        return tokenizer
    else:
        log.info("Training a %s tokenizer (vocab %d, lowercase=%s)", kind, vocab_size, lowercase)
        tokenizer = TRAINERS[kind](texts, vocab_size, lowercase)
    output_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_file.with_suffix(".json.tmp")
    tokenizer.save(str(tmp))
    tmp.replace(output_file)
    return tokenizer
