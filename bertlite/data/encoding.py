"""Texts to token ids, as fine-tuning and inference both encode them: a tokenizer that truncates (the longer text
of a pair first) and pads nothing, and batch encoding of texts or text pairs. Imports neither Lightning nor
``datasets``, so that inference (bertlite/inference.py) loads without the training stack."""

from __future__ import annotations

from typing import Sequence

from tokenizers import Tokenizer


def truncating(tokenizer: Tokenizer, max_seq_len: int) -> Tokenizer:
    """A copy of the tokenizer that cuts encodings to max_seq_len (the longer of a pair first), without padding."""
    tokenizer = Tokenizer.from_str(tokenizer.to_str())
    tokenizer.enable_truncation(max_seq_len, strategy="longest_first")
    tokenizer.no_padding()
    return tokenizer


def encode_texts(tokenizer: Tokenizer, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list:
    """The encodings of ``texts``, or of (text, pair) pairs when ``pairs`` is given, in order."""
    inputs = list(texts) if pairs is None else list(zip(texts, pairs))
    return tokenizer.encode_batch(inputs)
