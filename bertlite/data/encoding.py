"""Texts to token ids, as fine-tuning and inference both encode them: a tokenizer that truncates (the longer text
of a pair first) and pads nothing, batch encoding of texts or text pairs (with the tokenizer's own template:
``[CLS] A [SEP] B [SEP]`` for BERT, ``<s> A </s></s> B </s>`` for RoBERTa), and sentences given as words, encoded
as they read in running text. Imports neither Lightning nor ``datasets``, so that inference
(bertlite/inference.py) loads without the training stack."""

from __future__ import annotations

from typing import Sequence

from tokenizers import Tokenizer

from bertlite.data.tokenizer import copy_tokenizer


def truncating(tokenizer: Tokenizer, max_seq_len: int) -> Tokenizer:
    """A copy of the tokenizer that cuts encodings to max_seq_len (the longer of a pair first), without padding."""
    tokenizer = copy_tokenizer(tokenizer)
    tokenizer.enable_truncation(max_seq_len, strategy="longest_first")
    tokenizer.no_padding()
    return tokenizer


def encode_texts(tokenizer: Tokenizer, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list:
    """The encodings of ``texts``, or of (text, pair) pairs when ``pairs`` is given, in order."""
    inputs = list(texts) if pairs is None else list(zip(texts, pairs))
    return tokenizer.encode_batch(inputs)


def encode_words(tokenizer: Tokenizer, sentences: Sequence[Sequence[str]]) -> list:
    """The encodings (no special tokens) of sentences given as lists of words, each piece's word in ``word_ids``.
    Every word but the first is given with the space that precedes it in running text, so that a byte-level BPE
    (RoBERTa's) encodes it with the Ġ piece it has there, and the first word as it stands at the start of a text
    (with Ġ only where the tokenizer adds a prefix space). Tokenizers that split on spaces (BERT's) drop the space."""
    spaced = [[word if i == 0 else " " + word for i, word in enumerate(words)] for words in sentences]
    return tokenizer.encode_batch(spaced, is_pretokenized=True, add_special_tokens=False)
