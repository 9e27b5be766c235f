"""BERT's masked-language-model corruption (Devlin et al., 2019, section 3.1).

Select ~15% of the tokens (never special tokens or padding); of those, replace 80% by the mask token ([MASK],
RoBERTa's <mask>), 10% by a random token, and keep 10% unchanged. The model predicts the original token at every
selected position. With whole-word masking a word's pieces are selected together: WordPiece marks the pieces that
continue a word (##), byte-level BPE and SentencePiece the pieces that start one (Ġ, ▁), and a piece right after a
special token always starts a word.
"""

from __future__ import annotations

import json

import torch
from tokenizers import Tokenizer
from torch import Tensor

from bertlite.data.special_tokens import all_special_ids, special_id

# how a vocabulary marks where words start, by pre-tokenizer: a piece that does not begin with the mark continues
# the word before it
WORD_START_MARKS = {"ByteLevel": "\u0120", "Metaspace": "\u2581"}  # Ġ (a space, byte-level) and ▁ (SentencePiece)


class MLMMasker:
    def __init__(self, tokenizer: Tokenizer, mlm_probability: float = 0.15, whole_word_mask: bool = False,
                 mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1):
        if not 0.0 < mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
        if mask_replace_prob + random_replace_prob > 1.0:
            raise ValueError("mask_replace_prob + random_replace_prob must not exceed 1")
        self.vocab_size = tokenizer.get_vocab_size()
        self.mask_id = special_id(tokenizer, "mask", "masked-LM pretraining (task=mlm)")
        self.probability = mlm_probability
        self.mask_replace_prob = mask_replace_prob
        self.random_replace_prob = random_replace_prob
        self.whole_word = whole_word_mask
        # Lookup tables indexed by token id.
        self.is_special = torch.zeros(self.vocab_size, dtype=torch.bool)
        self.is_special[all_special_ids(tokenizer)] = True
        self.is_continuation = continuation_pieces(tokenizer) & ~self.is_special

    def select(self, input_ids: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(B, T) -> boolean (B, T): the positions the model must predict."""
        candidates = ~self.is_special[input_ids]
        if not self.whole_word:
            return (torch.rand(input_ids.shape, generator=generator) < self.probability) & candidates
        # One draw per word: a word starts at every candidate that is not a continuation piece, and right after a
        # special token (a document that starts without a space before its first word).
        after_special = torch.ones_like(candidates)
        after_special[:, 1:] = self.is_special[input_ids[:, :-1]]
        starts = candidates & (~self.is_continuation[input_ids] | after_special)
        word_index = starts.long().cumsum(dim=1)  # (B, T): index of the word each token belongs to
        draws = torch.rand(input_ids.size(0), input_ids.size(1) + 1, generator=generator) < self.probability
        return draws.gather(1, word_index) & candidates

    def __call__(self, input_ids: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(B, T) token ids -> (corrupted ids (B, T), labels (B, T) with -100 where nothing is predicted)."""
        selected = self.select(input_ids, generator)
        if not selected.any():  # a batch must predict something, or its loss is undefined
            selected.view(-1)[(~self.is_special[input_ids]).view(-1).nonzero()[:1]] = True
        labels = input_ids.masked_fill(~selected, -100)
        r = torch.rand(input_ids.shape, generator=generator)
        to_mask = selected & (r < self.mask_replace_prob)
        to_random = selected & (r >= self.mask_replace_prob) & (r < self.mask_replace_prob + self.random_replace_prob)
        corrupted = input_ids.masked_fill(to_mask, self.mask_id)
        random_tokens = torch.randint(self.vocab_size, input_ids.shape, generator=generator)
        corrupted = torch.where(to_random, random_tokens, corrupted)
        return corrupted, labels


def continuation_pieces(tokenizer: Tokenizer) -> Tensor:
    """Boolean (V,): the tokens that continue a word rather than start one. WordPiece marks continuations with
    its prefix (##); a byte-level or SentencePiece pre-tokenizer marks word starts (Ġ, ▁). A vocabulary with
    neither mark has every piece start a word: whole-word masking is then plain token masking."""
    spec = json.loads(tokenizer.to_str())
    vocab = tokenizer.get_vocab()
    prefix = (spec.get("model") or {}).get("continuing_subword_prefix")
    mark = word_start_mark(spec.get("pre_tokenizer"))
    if prefix:  # WordPiece's ##, or a BPE trained with a continuation prefix
        continues = [i for token, i in vocab.items() if token.startswith(prefix)]
    elif mark:
        continues = [i for token, i in vocab.items() if not token.startswith(mark)]
    else:
        continues = []
    table = torch.zeros(tokenizer.get_vocab_size(), dtype=torch.bool)
    table[continues] = True
    return table


def word_start_mark(pre_tokenizer: dict | None) -> str | None:
    """The character a pre-tokenizer puts at the start of every word (Ġ for byte-level, ▁ for SentencePiece's
    Metaspace), looking into a Sequence of pre-tokenizers; None if it puts none."""
    steps = [pre_tokenizer or {}]
    if steps[0].get("type") == "Sequence":
        steps = steps[0].get("pretokenizers") or []
    for step in steps:
        if step.get("type") == "ByteLevel":
            return WORD_START_MARKS["ByteLevel"]
        if step.get("type") == "Metaspace":
            return step.get("replacement") or WORD_START_MARKS["Metaspace"]
    return None


def labels_to_targets(labels: Tensor) -> tuple[Tensor, Tensor]:
    """labels (B, T) with -100 for ignored -> flat positions (N,) into B*T and their target ids (N,)."""
    flat = labels.reshape(-1)
    positions = (flat != -100).nonzero().squeeze(1)
    return positions, flat[positions]
