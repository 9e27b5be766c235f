"""AdamW parameter groups (decay on matrices only) and the warm-up / decay learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bertlite.models import BertForMaskedLM, preset
from bertlite.tasks.optim import build_adamw, parameter_groups, warmup_decay


@pytest.fixture(scope="module")
def model() -> BertForMaskedLM:
    torch.manual_seed(0)
    cfg = preset("bert-tiny", d_model=64, n_heads=2, d_ff=128, n_layers=2, vocab_size=100, max_seq_len=32,
                 dropout=0.0, attention_dropout=0.0)
    return BertForMaskedLM(cfg)


def test_every_parameter_in_exactly_one_group(model):
    groups = parameter_groups(model, weight_decay=0.01)
    assert len(groups) == 2
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))  # no parameter twice (the tied embedding/decoder weight included)
    assert set(ids) == {id(p) for p in model.parameters()}


def test_decay_and_no_decay_membership(model):
    decay, no_decay = parameter_groups(model, weight_decay=0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    decay_ids, no_decay_ids = {id(p) for p in decay["params"]}, {id(p) for p in no_decay["params"]}
    n_linear = n_norm = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            if module is not model.mlm_head.decoder:  # the decoder's weight is the (decayed) embedding
                n_linear += 1
            assert id(module.weight) in decay_ids, name
            if module.bias is not None:
                assert id(module.bias) in no_decay_ids, name
        elif isinstance(module, nn.LayerNorm):
            n_norm += 1
            assert id(module.weight) in no_decay_ids and id(module.bias) in no_decay_ids, name
        elif isinstance(module, nn.Embedding):
            assert id(module.weight) in decay_ids, name
    assert n_linear == 2 * 6 + 1 and n_norm == 1 + 2 * 2 + 1
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])


def test_frozen_parameters_are_left_out():
    net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    net[0].weight.requires_grad_(False)
    groups = parameter_groups(net, 0.1)
    ids = {id(p) for g in groups for p in g["params"]}
    assert id(net[0].weight) not in ids and id(net[0].bias) in ids


def test_groups_are_accepted_by_adamw_and_decay_applies_to_matrices_only():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(1.0)
    opt = build_adamw(parameter_groups(net, weight_decay=0.5), lr=0.1)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)  # zero gradient: only decoupled weight decay moves the parameters
    opt.step()
    torch.testing.assert_close(net[0].weight, torch.full((3, 3), 1.0 - 0.1 * 0.5))
    for p in (net[0].bias, net[1].weight, net[1].bias):
        torch.testing.assert_close(p, torch.ones_like(p))


# --------------------------------------------------------------------------------------------
# warmup_decay
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_linear_warmup_to_one(schedule):
    warmup = 10
    values = [warmup_decay(s, warmup, 110, schedule) for s in range(warmup)]
    diffs = [b - a for a, b in zip(values, values[1:])]
    assert values[0] > 0  # the first step already trains
    assert all(d == pytest.approx(1 / warmup) for d in diffs)
    assert values[-1] == pytest.approx(1.0)
    assert warmup_decay(warmup, warmup, 110, schedule) == pytest.approx(1.0)


def test_linear_decay_reaches_min_lr_ratio():
    warmup, total, floor = 10, 110, 0.1
    assert warmup_decay(60, warmup, total, "linear", floor) == pytest.approx(floor + (1 - floor) * 0.5)
    assert warmup_decay(total, warmup, total, "linear", floor) == pytest.approx(floor)
    assert warmup_decay(total + 50, warmup, total, "linear", floor) == pytest.approx(floor)  # clamped
    values = [warmup_decay(s, warmup, total, "linear", floor) for s in range(warmup, total + 1)]
    assert all(b < a for a, b in zip(values, values[1:]))
    assert warmup_decay(total, warmup, total, "linear") == pytest.approx(0.0)


def test_cosine_decay():
    warmup, total = 10, 110
    assert warmup_decay(60, warmup, total, "cosine", 0.0) == pytest.approx(0.5)
    assert warmup_decay(35, warmup, total, "cosine", 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert warmup_decay(total, warmup, total, "cosine", 0.0) == pytest.approx(0.0, abs=1e-12)
    assert warmup_decay(total, warmup, total, "cosine", 0.2) == pytest.approx(0.2)
    assert warmup_decay(60, warmup, total, "cosine", 0.2) == pytest.approx(0.2 + 0.8 * 0.5)


def test_constant_after_warmup():
    assert all(warmup_decay(s, 10, 110, "constant", 0.3) == 1.0 for s in range(10, 200, 7))


def test_no_warmup():
    assert warmup_decay(0, 0, 100, "linear") == pytest.approx(1.0)
    assert warmup_decay(50, 0, 100, "linear") == pytest.approx(0.5)


def test_unknown_schedule_raises_after_warmup():
    with pytest.raises(ValueError, match="cosin"):
        warmup_decay(20, 10, 110, "cosin")


def test_unknown_schedule_raises_during_warmup():
    with pytest.raises(ValueError):
        warmup_decay(0, 10, 110, "cosin")
