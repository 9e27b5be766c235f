"""Pretraining objectives on packed blocks: how a batch of blocks becomes inputs and targets.

- ``MaskedLM`` (BERT): predict the masked tokens from both sides (see masking.py).
- ``CausalLM`` (GPT): predict every next token; the block is both input and target.
- ``TextInfilling`` (BART): spans covering ``noise_density`` of the tokens are each replaced by one mask token;
  the encoder reads the corrupted text and the decoder writes the original back. Chosen over T5's span
  corruption because it needs no sentinel tokens in the vocabulary (bertlite's tokenizers all have a mask token)
  and trains the decoder to produce whole text, which is what generation then does.

Each objective collates random training batches and, through ``fix``, corrupts the validation blocks once
with a fixed seed so that every evaluation scores the same task.

Training rows may carry a ``mask_seed`` (the samplers of pretraining.py and streaming.py name every block of
every pass with one): the row is then corrupted with its own generator seeded by it, so the masks do not
depend on the global RNG (which every rank seeds alike), on the batch a row lands in, on the DataLoader
worker, or on where a run was resumed.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer
from torch import Tensor

from bertlite.data.masking import MLMMasker, labels_to_targets
from bertlite.data.special_tokens import special_id


def stack(rows: list[dict], key: str) -> Tensor:
    return torch.stack([torch.as_tensor(r[key]) for r in rows])


def row_generators(rows: list[dict]) -> list[torch.Generator | None]:
    """One generator per row, seeded by its ``mask_seed``; None (the global RNG) for rows without one."""
    return [torch.Generator().manual_seed(int(r["mask_seed"])) if "mask_seed" in r else None for r in rows]


def pad(sequences: list[Tensor], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-pad 1-D tensors -> ids (B, L), mask (B, L) with 1 for real tokens."""
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, :len(s)], mask[i, :len(s)] = s, 1
    return ids, mask


class MaskedLM:
    """input_ids (B, T) corrupted; mlm_positions (N,) flat indices into B*T; mlm_labels (N,)."""

    def __init__(self, tokenizer: Tokenizer, mlm_probability: float = 0.15, whole_word_mask: bool = False,
                 eval_mlm_probability: float = 0.15, **_):
        self.masker = MLMMasker(tokenizer, mlm_probability, whole_word_mask)
        # validation keeps BERT's 15% whatever the training rate, so losses stay comparable across recipes
        self.eval_masker = MLMMasker(tokenizer, eval_mlm_probability, whole_word_mask)

    def __call__(self, rows: list[dict]) -> dict[str, Tensor]:
        input_ids = stack(rows, "input_ids")
        if "labels" in rows[0]:
            labels = stack(rows, "labels")
        elif "mask_seed" in rows[0]:  # each row masked by its own generator
            rows_masked = [self.masker(ids[None], g) for ids, g in zip(input_ids, row_generators(rows))]
            input_ids, labels = (torch.cat(parts) for parts in zip(*rows_masked))
        else:
            input_ids, labels = self.masker(input_ids)
        positions, targets = labels_to_targets(labels)
        return {"input_ids": input_ids, "mlm_positions": positions, "mlm_labels": targets}

    def fix(self, ids: Tensor, generator: torch.Generator) -> dict:
        corrupted, labels = self.eval_masker(ids, generator)
        return {"input_ids": corrupted.numpy(), "labels": labels.numpy()}


class CausalLM:
    """input_ids (B, T): position t is trained to predict token t + 1."""

    def __init__(self, tokenizer: Tokenizer, **_):
        pass

    def __call__(self, rows: list[dict]) -> dict[str, Tensor]:
        return {"input_ids": stack(rows, "input_ids")}

    def fix(self, ids: Tensor, generator: torch.Generator) -> dict:
        return {"input_ids": ids.numpy()}


class TextInfilling:
    """src_ids/src_mask (B, S): the corrupted block; tgt_ids (B, T-1): the block shifted right ([CLS] starts it);
    labels (B, T-1): the block itself, one ahead."""

    def __init__(self, tokenizer: Tokenizer, noise_density: float = 0.3, mean_span_length: float = 3.0, **_):
        self.mask_id = special_id(tokenizer, "mask", "text infilling (task=seq2seq)")
        self.pad_id = special_id(tokenizer, "pad", "text infilling (task=seq2seq)")
        self.noise_density = noise_density
        self.mean_span_length = mean_span_length

    def corrupt(self, block: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(T,) -> (S,): the first token ([CLS] or <s>) kept; spans (Poisson lengths) covering ~noise_density of the
        rest become one mask token each."""
        body = block[1:]
        n = len(body)
        masked = torch.zeros(n, dtype=torch.bool)
        budget = max(1, round(self.noise_density * n))
        while int(masked.sum()) < budget:
            rate = torch.tensor([self.mean_span_length])
            length = max(1, int(torch.poisson(rate, generator=generator)))
            start = int(torch.randint(n, (1,), generator=generator))
            masked[start:start + length] = True
        span_start = masked & ~torch.cat([torch.tensor([False]), masked[:-1]])  # first token of each span
        keep = ~masked | span_start
        out = torch.where(span_start, torch.full_like(body, self.mask_id), body)[keep]
        return torch.cat([block[:1], out])

    def __call__(self, rows: list[dict], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        blocks = stack(rows, "input_ids")
        if "src_ids" in rows[0]:
            sources = [torch.as_tensor(r["src_ids"]) for r in rows]
        elif "mask_seed" in rows[0]:
            sources = [self.corrupt(b, g) for b, g in zip(blocks, row_generators(rows))]
        else:
            sources = [self.corrupt(b, generator) for b in blocks]
        src_ids, src_mask = pad(sources, self.pad_id)
        return {"src_ids": src_ids, "src_mask": src_mask, "tgt_ids": blocks[:, :-1], "labels": blocks[:, 1:]}

    def fix(self, ids: Tensor, generator: torch.Generator) -> dict:
        return {"input_ids": ids.numpy(), "src_ids": [self.corrupt(b, generator).numpy() for b in ids]}


OBJECTIVES = {"mlm": MaskedLM, "clm": CausalLM, "seq2seq": TextInfilling}
