"""AdamW parameter groups (decay on matrices only) and the warm-up / decay learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import lightning as L

from bertlite.errors import ConfigError
from bertlite.models import BertForMaskedLM, preset
from bertlite.tasks.base import BertliteTask
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
    # per layer: stacked Q/K/V, output, up, down; plus the MLM transform
    assert n_linear == 2 * 4 + 1 and n_norm == 1 + 2 * 2 + 1
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


# --- the schedule across a resume and a run without an end ----------------------------------------------------
class _LinearTask(BertliteTask):
    """A BertliteTask over a one-layer regression: the optimizer, schedule and checkpoints are the real ones."""

    def build_model(self, config):
        return torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.model(x), y)


class _RecordLR(L.Callback):
    """The learning rate of each step; stops the run after step ``stop_at`` (an interruption)."""

    def __init__(self, stop_at: int | None = None):
        self.lrs: dict[int, float] = {}
        self.stop_at = stop_at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs[trainer.global_step] = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        trainer.should_stop = trainer.global_step == self.stop_at


def _fit(tmp_path, max_steps: int, ckpt_path=None, stop_at=None, **task_kwargs) -> tuple[dict, L.Trainer]:
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
    task = _LinearTask({"arch": "bert"}, lr=0.1, warmup_steps=2, **task_kwargs)
    record = _RecordLR(stop_at)
    trainer = L.Trainer(max_steps=max_steps, max_epochs=-1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[record],
                        default_root_dir=tmp_path)
    trainer.fit(task, torch.utils.data.DataLoader(data, batch_size=8), ckpt_path=ckpt_path)
    return record.lrs, trainer


def test_resume_continues_the_checkpoints_schedule(tmp_path):
    whole, _ = _fit(tmp_path, 12)
    _, first = _fit(tmp_path, 6)  # a run that ends at step 6 ...
    first.save_checkpoint(tmp_path / "six.ckpt")
    with pytest.raises(ConfigError, match=r"schedule ends at step 6 but this run ends at step 12.*extend_schedule"):
        _fit(tmp_path, 12, ckpt_path=tmp_path / "six.ckpt")  # ... resumed to 12: no silent jump of the rate

    _, interrupted = _fit(tmp_path, 12, stop_at=5)
    interrupted.save_checkpoint(tmp_path / "five.ckpt")  # the schedule's total travels in the checkpoint
    state = torch.load(tmp_path / "five.ckpt", weights_only=False)["lr_schedulers"][0]["lr_lambdas"][0]
    assert state["total_steps"] == 12 and state["warmup_steps"] == 2
    resumed, _ = _fit(tmp_path, 12, ckpt_path=tmp_path / "five.ckpt")
    assert resumed == {s: lr for s, lr in whole.items() if s >= 5}


def test_extend_schedule_rewarms_then_decays_to_the_new_end(tmp_path):
    lrs, first = _fit(tmp_path, 6)
    assert lrs[5] == pytest.approx(0.1 * 1 / 4)  # linear decay: step 5 of 6 after a 2-step warm-up
    first.save_checkpoint(tmp_path / "six.ckpt")
    extended, _ = _fit(tmp_path, 16, ckpt_path=tmp_path / "six.ckpt", extend_schedule=True)
    assert sorted(extended) == list(range(6, 16))
    # warm-up over 2 steps again from step 6, to the peak lr 0.1, then linear decay to zero at step 16
    assert [round(extended[s], 6) for s in (6, 7, 8, 15)] == [0.05, 0.1, 0.1, round(0.1 * 1 / 8, 6)]
    assert all(extended[s] > extended[s + 1] for s in range(8, 15))


def test_a_run_without_an_end_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"no end \(trainer.max_steps=-1 and trainer.max_epochs=-1\)"):
        _fit(tmp_path, -1)


@pytest.mark.parametrize("task_name", ["mlm", "classification"])
def test_weight_decay_survives_fsdp_flattening_the_parameters(task_name):
    """trainer=fsdp (use_orig_params=True) wraps the model before configure_optimizers: every parameter is then a
    flat 1-D view and its name carries the wrapper's prefix. Decay is decided by name, recorded before wrapping;
    the old rule (p.ndim >= 2) put every weight in the no-decay group there, silently."""
    from bertlite.tasks import ClassificationTask, MaskedLMTask
    from bertlite.tasks.optim import plain_name

    config = dict(arch="bert", vocab_size=100, d_model=32, n_heads=2, d_ff=64, n_layers=2, max_seq_len=32)
    task = (MaskedLMTask(config, weight_decay=0.05) if task_name == "mlm"
            else ClassificationTask(config, num_labels=2, label_names=["a", "b"], weight_decay=0.05))
    matrices = {id(p) for p in task.model.parameters() if p.ndim >= 2}
    assert matrices and len(matrices) < len(list(task.model.parameters()))
    with torch.no_grad():
        for p in task.model.parameters():
            p.data = p.data.flatten()  # what FSDP's flat parameter views look like
    decayed = {id(p) for g in task.parameter_groups() if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == matrices
    assert plain_name("bert.encoder.layers.0._fsdp_wrapped_module.self_attn.qkv_proj.weight") == \
        "bert.encoder.layers.0.self_attn.qkv_proj.weight"
