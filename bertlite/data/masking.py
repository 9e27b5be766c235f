"""BERT's masked-language-model corruption (Devlin et al., 2019, section 3.1).

Select ~15% of the tokens (never special tokens or padding); of those, replace 80% by [MASK],
10% by a random token, and keep 10% unchanged. The model predicts the original token at every
selected position. With whole-word masking a word's WordPiece pieces are selected together.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer
from torch import Tensor

from bertlite.data.tokenizer import special_ids


class MLMMasker:
    def __init__(self, tokenizer: Tokenizer, mlm_probability: float = 0.15, whole_word_mask: bool = False,
                 mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1):
        if not 0.0 < mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
        if mask_replace_prob + random_replace_prob > 1.0:
            raise ValueError("mask_replace_prob + random_replace_prob must not exceed 1")
        ids = special_ids(tokenizer)
        vocab = tokenizer.get_vocab()
        self.vocab_size = tokenizer.get_vocab_size()
        self.mask_id = ids["mask"]
        self.probability = mlm_probability
        self.mask_replace_prob = mask_replace_prob
        self.random_replace_prob = random_replace_prob
        self.whole_word = whole_word_mask
        # Lookup tables indexed by token id.
        self.is_special = torch.zeros(self.vocab_size, dtype=torch.bool)
        self.is_special[list(ids.values())] = True
        self.is_continuation = torch.zeros(self.vocab_size, dtype=torch.bool)
        self.is_continuation[[i for tok, i in vocab.items() if tok.startswith("##")]] = True

    def select(self, input_ids: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(B, T) -> boolean (B, T): the positions the model must predict."""
        candidates = ~self.is_special[input_ids]
        if not self.whole_word:
            return (torch.rand(input_ids.shape, generator=generator) < self.probability) & candidates
        # One draw per word: a word starts at every candidate that is not a ##continuation piece.
        starts = candidates & ~self.is_continuation[input_ids]
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


def labels_to_targets(labels: Tensor) -> tuple[Tensor, Tensor]:
    """labels (B, T) with -100 for ignored -> flat positions (N,) into B*T and their target ids (N,)."""
    flat = labels.reshape(-1)
    positions = (flat != -100).nonzero().squeeze(1)
    return positions, flat[positions]
