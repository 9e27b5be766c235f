"""BERT WordPiece tokenizers on Hugging Face ``tokenizers``: train one from a corpus, or load one.

The tokenizer is saved as ``tokenizer.json`` and its full JSON travels inside every checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from tokenizers.trainers import WordPieceTrainer

from bertlite.errors import ConfigError

log = logging.getLogger(__name__)

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = [PAD, UNK, CLS, SEP, MASK]


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
    return _add_bert_template(tokenizer)


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
    """Load a ``tokenizer.json`` or a BERT ``vocab.txt`` (one WordPiece token per line)."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / "tokenizer.json", path / "vocab.txt"]
        path = next((p for p in candidates if p.exists()), candidates[0])
    if not path.exists():
        raise ConfigError(f"tokenizer file not found: {path}. Give a tokenizer.json or vocab.txt, "
                          "or leave tokenizer.path unset to train one from the corpus")
    try:
        if path.suffix == ".json":
            return unpadded(Tokenizer.from_file(str(path)), str(path))
        vocab = WordPiece.read_file(str(path))
        return _add_bert_template(_bert_pipeline(WordPiece(vocab, unk_token=UNK), lowercase))
    except ConfigError:
        raise
    except Exception as exc:  # tokenizers raises plain Exceptions with terse messages
        raise ConfigError(f"cannot read tokenizer {path}: {exc}") from exc


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


def tokenizer_from_json(text: str) -> Tokenizer:
    return unpadded(Tokenizer.from_str(text), "the checkpoint's tokenizer")


def get_or_train_tokenizer(path: str | Path | None, output_file: Path, texts: Iterable[str],
                           vocab_size: int, lowercase: bool) -> Tokenizer:
    """A given tokenizer, else the run's own ``tokenizer.json`` if it exists, else a newly trained one."""
    if path:
        tokenizer = load_tokenizer(path, lowercase)
        log.info("Loaded tokenizer %s (%d tokens)", path, tokenizer.get_vocab_size())
    elif output_file.exists():
        tokenizer = load_tokenizer(output_file)
        log.info("Reusing tokenizer %s (%d tokens)", output_file, tokenizer.get_vocab_size())
        return tokenizer
    else:
        log.info("Training a WordPiece tokenizer (vocab %d, lowercase=%s)", vocab_size, lowercase)
        tokenizer = train_wordpiece(texts, vocab_size, lowercase)
    output_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_file.with_suffix(".json.tmp")
    tokenizer.save(str(tmp))
    tmp.replace(output_file)
    return tokenizer


def special_ids(tokenizer: Tokenizer) -> dict[str, int]:
    ids = {name: tokenizer.token_to_id(tok) for name, tok in
           [("pad", PAD), ("unk", UNK), ("cls", CLS), ("sep", SEP), ("mask", MASK)]}
    missing = [name for name, i in ids.items() if i is None]
    if missing:
        raise ConfigError(f"the tokenizer lacks the special tokens {missing}; BERT needs {SPECIAL_TOKENS}")
    return ids
