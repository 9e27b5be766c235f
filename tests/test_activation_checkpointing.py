"""Activation checkpointing (model.gradient_checkpointing=true): the same loss and gradients as the plain model
for BERT, GPT and the encoder-decoder, with dropout too (the RNG state is replayed); it really recomputes and
really keeps fewer activations; eval, no-grad and generation bypass it; old config dicts still load."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from torch.utils.checkpoint import checkpoint as torch_checkpoint

import bertlite.nn.stack as stack_module
from bertlite.cli.common import CONFIG_DIR, register_model_presets
from bertlite.models import config_from_dict, preset
from bertlite.models.decoder import GPTForCausalLM
from bertlite.models.encoder import BertForMaskedLM
from bertlite.models.seq2seq import TransformerForSeq2Seq

VOCAB, B, T = 60, 3, 16
TINY = dict(vocab_size=VOCAB, d_model=32, n_heads=2, d_ff=64, max_seq_len=32, dropout=0.0, attention_dropout=0.0)
ARCHS = ["bert", "gpt", "transformer"]
MODELS = {"bert": BertForMaskedLM, "gpt": GPTForCausalLM, "transformer": TransformerForSeq2Seq}


def build(arch: str, checkpointing: bool, **overrides):
    """A tiny 2-layer model (2 + 2 for the encoder-decoder); seed 0 gives the same weights with the flag on or off."""
    torch.manual_seed(0)
    config = preset(f"{arch}-tiny", **{**TINY, "n_layers": 2, **overrides, "gradient_checkpointing": checkpointing})
    if arch == "transformer":
        config = dataclasses.replace(config, n_decoder_layers=2)
    return MODELS[arch](config)


def batch(arch: str) -> dict:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 11:] = 0  # one padded row, so the key mask goes through the checkpointed layers too
    ids[1, 11:] = 0
    if arch == "bert":
        positions = torch.tensor([0, 3, 7, T + 2, T + 10, 2 * T + 15])
        return dict(input_ids=ids, attention_mask=mask, mlm_positions=positions,
                    mlm_labels=torch.randint(5, VOCAB, (positions.numel(),), generator=g))
    if arch == "gpt":
        return dict(input_ids=ids, attention_mask=mask)
    tgt = torch.randint(5, VOCAB, (B, T), generator=g)
    labels = tgt.roll(-1, dims=1)
    labels[:, -1] = -100
    return dict(src_ids=ids, tgt_ids=tgt, labels=labels, src_mask=mask)


def loss_of(model, arch: str, inputs: dict) -> torch.Tensor:
    if arch == "bert":
        return model(**inputs).loss
    return model.loss(**inputs)[0]


def train_step(model, arch: str, seed: int = 123) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward + backward in training mode from a fixed RNG state -> (loss, gradient per parameter)."""
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same dropout masks for every model that draws them in the same order
    loss = loss_of(model, arch, batch(arch))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.fixture
def checkpoint_calls(monkeypatch):
    """Counts the layers the stack hands to torch.utils.checkpoint (the real one still runs)."""
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return torch_checkpoint(*args, **kwargs)

    monkeypatch.setattr(stack_module, "checkpoint", spy)
    return calls


def assert_same_step(arch: str, **overrides) -> None:
    plain = build(arch, False, **overrides)
    ckpt = build(arch, True, **overrides)
    ckpt.load_state_dict(plain.state_dict())
    loss_a, grads_a = train_step(plain, arch)
    loss_b, grads_b = train_step(ckpt, arch)
    torch.testing.assert_close(loss_b, loss_a, atol=1e-6, rtol=0)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], atol=1e-6, rtol=0, msg=name)


# --------------------------------------------------------------------------------------------
# The same numbers as the plain model
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_same_loss_and_gradients_without_dropout(arch, checkpoint_calls):
    assert_same_step(arch)
    layers = 4 if arch == "transformer" else 2  # encoder + decoder layers
    assert len(checkpoint_calls) == layers  # only the checkpointed model went through checkpoint(), once per layer
    assert all(call == {"use_reentrant": False} for call in checkpoint_calls)


@pytest.mark.parametrize("arch", ARCHS)
def test_same_loss_and_gradients_with_dropout(arch, checkpoint_calls):
    assert_same_step(arch, dropout=0.1, attention_dropout=0.1)
    assert len(checkpoint_calls) == (4 if arch == "transformer" else 2)


@pytest.mark.parametrize("arch", ["bert", "gpt"])
def test_dropout_check_would_catch_lost_rng_state(arch, monkeypatch):
    """Negative control: a recomputation that does not replay the RNG state draws new dropout masks, and the
    gradients drift. So the dropout test above does detect the failure it guards against."""
    monkeypatch.setattr(stack_module, "checkpoint", functools.partial(torch_checkpoint, preserve_rng_state=False))
    with pytest.raises(AssertionError):
        assert_same_step(arch, dropout=0.1, attention_dropout=0.1)


# --------------------------------------------------------------------------------------------
# It saves memory, and only where a backward pass follows
# --------------------------------------------------------------------------------------------
def saved_activation_bytes(model, arch: str) -> int:
    """Bytes autograd keeps for the backward pass (tensors packed outside any checkpointed region)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_of(model, arch, batch(arch))
    return total


@pytest.mark.parametrize("arch", ARCHS)
def test_keeps_fewer_activations(arch):
    plain = saved_activation_bytes(build(arch, False, n_layers=4), arch)
    ckpt = saved_activation_bytes(build(arch, True, n_layers=4), arch)
    assert ckpt < plain / 2, (ckpt, plain)


def test_eval_and_no_grad_are_not_checkpointed(checkpoint_calls):
    model = build("bert", True)
    inputs = batch("bert")
    model.eval()
    model(**inputs).loss.backward()  # eval with grad (e.g. saliency): plain path
    model.train()
    with torch.no_grad():
        model(**inputs)
    assert checkpoint_calls == []


@pytest.mark.parametrize("arch", ["gpt", "transformer"])
@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("train_mode", [False, True])
def test_generation_with_flag_on(arch, use_cache, train_mode, checkpoint_calls):
    """Generation gives the same tokens with the flag on, in eval or train mode, with or without a KV cache."""
    plain, ckpt = build(arch, False), build(arch, True)
    ckpt.load_state_dict(plain.state_dict())
    outputs = []
    for model in (plain, ckpt):
        model.train(train_mode)  # dropout is 0: train mode changes nothing but the checkpointing condition
        prompt = torch.randint(5, VOCAB, (2, 5), generator=torch.Generator().manual_seed(2))
        if arch == "gpt":
            outputs.append(model.generate(prompt, 8, greedy=True, use_cache=use_cache))
        else:
            outputs.append(model.generate(prompt, 2, 8, greedy=True, use_cache=use_cache))
    assert outputs[0].shape[1] == (5 + 8 if arch == "gpt" else 1 + 8)  # greedy, no eos: every step ran
    assert torch.equal(outputs[0], outputs[1])
    # generation runs under inference_mode (the encoder-decoder's source encoding included): never checkpointed
    assert len(checkpoint_calls) == 0


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_old_config_dict_without_the_field_loads(arch):
    values = dataclasses.asdict(preset(f"{arch}-tiny", **TINY))
    del values["gradient_checkpointing"]  # as in checkpoints saved before the field existed
    config = config_from_dict(values)
    assert config.gradient_checkpointing is False
    assert config_from_dict({**values, "gradient_checkpointing": True}).gradient_checkpointing is True


@pytest.mark.parametrize("arch", ARCHS)
def test_flag_reaches_every_stack(arch):
    for flag in (False, True):
        model = build(arch, flag)
        stacks = [m for m in model.modules() if isinstance(m, stack_module.TransformerStack)]
        assert len(stacks) == (2 if arch == "transformer" else 1)
        assert all(s.gradient_checkpointing is flag for s in stacks)


def test_hydra_override_sets_the_flag():
    register_model_presets()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="pretrain", overrides=["model=bert-large", "model.gradient_checkpointing=true"])
    GlobalHydra.instance().clear()
    assert cfg.model.gradient_checkpointing is True
    assert config_from_dict(OmegaConf.to_container(cfg.model)).gradient_checkpointing is True
