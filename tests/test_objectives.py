"""Pretraining objectives: causal LM batches and BART text infilling."""

from __future__ import annotations

import pytest
import torch

from bertlite.data.objectives import CausalLM, TextInfilling
from bertlite.data.tokenizer import train_wordpiece
from tests.conftest import tiny_corpus_paragraphs


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(tiny_corpus_paragraphs(100), vocab_size=300)


def test_infilling_noise_density_and_structure(tokenizer):
    objective = TextInfilling(tokenizer, noise_density=0.3, mean_span_length=3.0)
    mask_id, cls_id = tokenizer.token_to_id("[MASK]"), tokenizer.token_to_id("[CLS]")
    g = torch.Generator().manual_seed(0)
    blocks = torch.randint(5, 300, (200, 64))
    blocks[:, 0] = cls_id
    removed, spans = 0, 0
    for block in blocks:
        src = objective.corrupt(block, g)
        assert src[0] == cls_id
        n_masks = int((src == mask_id).sum())
        spans += n_masks
        removed += 64 - (len(src) - n_masks)  # tokens hidden inside spans
        # what is left, in order, is a subsequence of the original block
        kept = [t for t in src.tolist() if t != mask_id]
        it = iter(block.tolist())
        assert all(t in it for t in kept)
    density = removed / (200 * 63)
    assert 0.28 <= density <= 0.40  # overlapping spans can overshoot the budget a little
    assert 2.0 <= removed / spans <= 4.0  # mean span length around 3


def test_infilling_batch_and_fixed_validation(tokenizer):
    objective = TextInfilling(tokenizer)
    blocks = torch.randint(5, 300, (4, 32))
    batch = objective([{"input_ids": b} for b in blocks])
    assert torch.equal(batch["tgt_ids"], blocks[:, :-1]) and torch.equal(batch["labels"], blocks[:, 1:])
    assert batch["src_ids"].shape == batch["src_mask"].shape and batch["src_ids"].size(1) < 32
    fixed = objective.fix(blocks, torch.Generator().manual_seed(0))
    again = objective.fix(blocks, torch.Generator().manual_seed(0))
    assert all((a == b).all() for a, b in zip(fixed["src_ids"], again["src_ids"]))
    rows = [{"input_ids": blocks[i], "src_ids": fixed["src_ids"][i]} for i in range(4)]
    assert torch.equal(objective(rows)["src_ids"][0, : len(fixed["src_ids"][0])], torch.as_tensor(fixed["src_ids"][0]))


def test_causal_lm_batch(tokenizer):
    blocks = torch.randint(5, 300, (3, 16))
    assert torch.equal(CausalLM(tokenizer)([{"input_ids": b} for b in blocks])["input_ids"], blocks)
