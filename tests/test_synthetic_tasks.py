"""Sanity on synthetic tasks: the architectures can learn what they are built for.

Each test trains a tiny model from scratch in plain PyTorch (d_model 64, 2 layers) and checks exact match
on held-out sequences with greedy, cached generation. Run time on the 2-core CI machine: about 15-30 s each.
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from bertlite.models import preset
from bertlite.models.decoder import GPTForCausalLM
from bertlite.models.seq2seq import TransformerForSeq2Seq

pytestmark = pytest.mark.slow

BOS, SEP, FIRST_DIGIT, DIGITS, LENGTH = 2, 3, 5, 10, 8
SHAPE = dict(vocab_size=FIRST_DIGIT + DIGITS, d_model=64, n_heads=4, d_ff=128, max_seq_len=32, dropout=0.0,
             attention_dropout=0.0, norm_first=True)


def digits(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(FIRST_DIGIT, FIRST_DIGIT + DIGITS, (n, LENGTH), generator=generator)


def train(model, loss_fn, steps: int, lr: float = 2e-3, batch: int = 64, seed: int = 0) -> float:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    started = time.perf_counter()
    model.train()
    for _ in range(steps):
        loss = loss_fn(digits(batch, g))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
    model.eval()
    return time.perf_counter() - started


def test_encoder_decoder_reverses_sequences():
    torch.manual_seed(0)
    model = TransformerForSeq2Seq(preset("transformer-tiny", **SHAPE, n_layers=2, n_decoder_layers=2))

    def loss_fn(x):
        target = torch.cat([torch.full((len(x), 1), BOS), x.flip(1)], 1)  # BOS, reversed digits
        return model.loss(x, target[:, :-1], target[:, 1:])[0]

    seconds = train(model, loss_fn, steps=600)
    held_out = digits(500, torch.Generator().manual_seed(12345))
    out = model.generate(held_out, BOS, LENGTH, greedy=True)[:, 1:]
    exact = (out == held_out.flip(1)).all(1).float().mean().item()
    print(f"reversal: exact match {exact:.3f} after {seconds:.1f} s of training")
    assert exact >= 0.99


def test_gpt_copies_the_first_half():
    torch.manual_seed(0)
    model = GPTForCausalLM(preset("gpt-tiny", **SHAPE))

    def loss_fn(x):
        seq = torch.cat([torch.full((len(x), 1), BOS), x, torch.full((len(x), 1), SEP), x], 1)  # BOS x SEP x
        logits = model(seq[:, :-1])
        second_half = logits[:, LENGTH + 1:]  # the positions that predict the copy
        return F.cross_entropy(second_half.flatten(0, 1), seq[:, LENGTH + 2:].flatten())

    seconds = train(model, loss_fn, steps=800)
    held_out = digits(500, torch.Generator().manual_seed(54321))
    prompt = torch.cat([torch.full((500, 1), BOS), held_out, torch.full((500, 1), SEP)], 1)
    out = model.generate(prompt, LENGTH, greedy=True)[:, -LENGTH:]
    exact = (out == held_out).all(1).float().mean().item()
    print(f"copy: exact match {exact:.3f} after {seconds:.1f} s of training")
    assert exact >= 0.99
