"""Rotary position embeddings: the fast path against the formula, relative positions only, cached decoding,
the padding-free path, every architecture, checkpoints, the CLI and the HF export refusal."""

from __future__ import annotations

import math

import pytest
import torch

import bertlite
from bertlite.checkpoints import save_checkpoint
from bertlite.data.tokenizer import train_wordpiece
from bertlite.errors import ConfigError
from bertlite.interop.hf_bert import config_to_hf
from bertlite.models import BertModel, preset
from bertlite.models.registry import PRETRAINING_MODELS
from bertlite.nn.packing import PackedSequences
from bertlite.nn.rotary import apply_rotary, apply_rotary_reference, rotary_tables
from tests.conftest import TINY_RUN, predictor_checkpoint, run_cli, synthetic_sentences

TINY = dict(vocab_size=60, d_model=32, n_heads=4, d_ff=64, n_layers=2, max_seq_len=32, dropout=0.0,
            attention_dropout=0.0, position="rope")


def _model(arch: str, **overrides):
    torch.manual_seed(0)
    config = preset(f"{arch}-tiny", **{**TINY, **overrides})
    return PRETRAINING_MODELS[arch](config).eval()


def test_rotation_pairs_the_two_halves_of_the_head_as_hf_does():
    """Element i and element i + d/2 turn together by m * theta^(-2i/d): the GPT-NeoX / HF rotate_half layout."""
    d, theta = 8, 100.0
    x = torch.randn(5, d)
    out = apply_rotary_reference(x, torch.arange(5), theta)
    for m in range(5):
        for i in range(d // 2):
            angle = m * theta ** (-2 * i / d)
            c, s = math.cos(angle), math.sin(angle)
            a, b = x[m, i].item(), x[m, i + d // 2].item()
            assert out[m, i].item() == pytest.approx(a * c - b * s, abs=1e-5)
            assert out[m, i + d // 2].item() == pytest.approx(b * c + a * s, abs=1e-5)


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_fast_path_matches_the_reference(layout):
    g = torch.Generator().manual_seed(0)
    if layout == "padded":
        x, positions = torch.randn(2, 4, 12, 16, generator=g), torch.arange(3, 15)  # (B, h, T, d), (T,)
    else:
        x, positions = torch.randn(12, 4, 16, generator=g), torch.randint(0, 32, (12, 1), generator=g)  # (N, h, d)
    cos, sin = rotary_tables(positions, 16, 10000.0, x.dtype)
    torch.testing.assert_close(apply_rotary(x, cos, sin), apply_rotary_reference(x, positions, 10000.0),
                               atol=1e-6, rtol=0)


def test_tables_are_cast_to_the_activations_dtype():
    x = torch.randn(1, 2, 6, 8, dtype=torch.bfloat16)
    cos, sin = rotary_tables(torch.arange(6), 8, 10000.0, x.dtype)
    assert cos.dtype == sin.dtype == torch.bfloat16 and apply_rotary(x, cos, sin).dtype == torch.bfloat16


@pytest.mark.parametrize("offset", [1, 7, 100])
def test_scores_depend_only_on_the_distance(offset):
    """q at m against k at n: shifting both positions by the same offset leaves every score unchanged."""
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, 2, 10, 16, generator=g), torch.randn(1, 2, 10, 16, generator=g)
    q_pos, k_pos = torch.randint(0, 20, (10,), generator=g), torch.randint(0, 20, (10,), generator=g)

    def scores(shift: int):
        rq = apply_rotary_reference(q, q_pos + shift, 10000.0)
        rk = apply_rotary_reference(k, k_pos + shift, 10000.0)
        return rq @ rk.transpose(-2, -1)  # (1, h, 10, 10)

    torch.testing.assert_close(scores(offset), scores(0), atol=1e-5, rtol=0)
    unrotated = q @ k.transpose(-2, -1)
    assert not torch.allclose(scores(0), unrotated, atol=1e-3)


def test_rope_bert_has_no_position_vectors_and_sees_relative_positions_only():
    model = _model("bert").bert
    assert model.embeddings.position is None
    assert not any("position" in name for name in model.state_dict())
    alibi = BertModel(preset("bert-tiny", **{**TINY, "position": "alibi"}))
    assert model.state_dict().keys() == alibi.state_dict().keys()  # no new keys: checkpoints stay loadable
    ids = torch.randint(5, 60, (1, 9))
    shifted = torch.cat([torch.zeros(1, 4, dtype=torch.long), ids], dim=1)  # left padding: positions 4 .. 12
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 9, dtype=torch.long)], dim=1)
    with torch.no_grad():
        for unpad in (False, True):
            model.config.unpad = unpad
            torch.testing.assert_close(model(shifted, mask)[:, 4:], model(ids), atol=1e-5, rtol=0)
        sinusoidal = BertModel(preset("bert-tiny", **{**TINY, "position": "sinusoidal"})).eval()
        assert not torch.allclose(sinusoidal(shifted, mask)[:, 4:], sinusoidal(ids), atol=1e-3)


def test_cached_decoding_rotates_each_new_token_by_its_absolute_position():
    model = _model("gpt")
    ids = torch.randint(5, 60, (2, 14))
    with torch.no_grad():
        full = model(ids)  # (B, T, V): every position recomputed, no cache
        cache = model.gpt.new_cache()
        steps = [model(ids[:, :5], cache=cache, start=0)]  # the prompt, then one token at a time
        steps += [model(ids[:, t:t + 1], cache=cache, start=t) for t in range(5, 14)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    prompt = ids[:, :4]
    assert torch.equal(model.generate(prompt, 10, greedy=True, use_cache=True),
                       model.generate(prompt, 10, greedy=True, use_cache=False))


@pytest.mark.parametrize("nested", [False, True], ids=["repadded-attention", "nested-tensors"])
@pytest.mark.parametrize("left", [False, True], ids=["right-padding", "left-padding"])
def test_padding_free_path_matches_the_padded_path(nested, left):
    """Each packed sentence takes its positions from its own row, so they restart at 0 (right padding)."""
    model = _model("bert").bert
    g = torch.Generator().manual_seed(2)
    lengths = torch.tensor([16, 5, 11, 3])
    columns = torch.arange(16)[None, :]
    mask = (columns >= 16 - lengths[:, None]) if left else (columns < lengths[:, None])
    ids = torch.randint(5, 60, (4, 16), generator=g).masked_fill(~mask, 0)
    with torch.no_grad():
        model.config.unpad = False
        packed = PackedSequences.from_mask(mask.long(), nested=nested)
        padded = packed.pack(model(ids, mask.long()))
        unpadded = model.encoder(packed.pack(model.embeddings(ids)), mask=packed)
    torch.testing.assert_close(unpadded, padded, atol=1e-5, rtol=0)
    if not left:
        assert packed.positions()[16:21].tolist() == [0, 1, 2, 3, 4]  # the second sentence starts again at 0


def test_every_architecture_rotates_self_attention_and_never_cross_attention():
    for arch in ("bert", "gpt", "transformer"):
        model = _model(arch)
        attention = [m for name, m in model.named_modules() if name.endswith(("self_attn", "cross_attn"))]
        for name, module in model.named_modules():
            if name.endswith("self_attn"):
                assert module.rotary is not None and module.rotary.theta == 10000.0, (arch, name)
            if name.endswith("cross_attn"):
                assert module.rotary is None, (arch, name)
        assert attention and not any("position" in n for n in model.state_dict()), arch
    seq2seq = _model("transformer", rope_theta=500.0)
    assert {m.rotary.theta for n, m in seq2seq.named_modules() if n.endswith("self_attn")} == {500.0}
    src, bos = torch.randint(5, 60, (2, 9)), 2
    assert torch.equal(seq2seq.generate(src, bos, 8, greedy=True, use_cache=True),
                       seq2seq.generate(src, bos, 8, greedy=True, use_cache=False))


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(synthetic_sentences(200), vocab_size=120)


@pytest.mark.parametrize("arch,task", [("bert", "mlm"), ("gpt", "clm"), ("transformer", "seq2seq")])
def test_checkpoint_and_model_folder_round_trip_give_equal_outputs(arch, task, tokenizer, tmp_path):
    model = _model(arch, vocab_size=tokenizer.get_vocab_size(), rope_theta_local=2500.0)
    save_checkpoint(predictor_checkpoint(model, tokenizer, task, trained_seq_len=32), tmp_path / "model.ckpt")
    loaded = bertlite.load(tmp_path / "model.ckpt", device="cpu")
    again = bertlite.load(loaded.save_pretrained(tmp_path / "folder"), device="cpu")
    ids = torch.randint(5, tokenizer.get_vocab_size(), (2, 12))
    with torch.no_grad():
        outputs = [m.model(ids) if arch == "gpt" else m.model(ids, ids) if arch == "transformer"
                   else m.model(ids).logits for m in (loaded, again)]
        original = model(ids) if arch == "gpt" else model(ids, ids) if arch == "transformer" else model(ids).logits
    for restored in (loaded.model, again.model):
        assert restored.config.position == "rope" and restored.config.rope_theta_local == 2500.0
    assert torch.equal(outputs[0], original) and torch.equal(outputs[1], original)


def test_bad_rope_settings_are_refused():
    with pytest.raises(ValueError, match="even head size"):
        preset("bert-tiny", **{**TINY, "d_model": 36, "n_heads": 4})
    with pytest.raises(ValueError, match="rotary base"):
        preset("bert-tiny", **{**TINY, "rope_theta": 0.0})


def test_rope_encoder_does_not_export_to_hf_bert():
    with pytest.raises(ConfigError, match="position='rope'"):
        config_to_hf(preset("bert-tiny", **TINY), "BertModel")


def test_pretraining_cli_accepts_rope(tiny_corpus, tmp_path):
    run_dir = tmp_path / "run"
    args = [*TINY_RUN, "trainer.max_steps=2", "trainer.val_check_interval=2", "data=text_files",
            f"data.train_files={tiny_corpus}", "model.position=rope", "model.rope_theta=5000",
            "model.rope_theta_local=null", f"hydra.run.dir={run_dir}"]
    result = run_cli("bertlite.pretrain", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    model = bertlite.load(next(run_dir.rglob("*.ckpt")), device="cpu").model
    assert model.config.position == "rope" and model.config.rope_theta == 5000.0
    assert model.bert.encoder.layers[0].self_attn.rotary.theta == 5000.0


def test_a_rope_model_takes_inputs_past_its_trained_length_and_warns_once(tokenizer, tmp_path, caplog,
                                                                          monkeypatch):
    from bertlite.models.encoder import BertForMaskedLM

    monkeypatch.setattr("bertlite.positions._warned_lengths", set())  # other tests of this process may have warned

    model = BertForMaskedLM(preset("bert-tiny", **{**TINY, "vocab_size": tokenizer.get_vocab_size(),
                                                   "max_seq_len": 16}))
    save_checkpoint(predictor_checkpoint(model, tokenizer, "mlm", trained_seq_len=16), tmp_path / "model.ckpt")
    loaded = bertlite.load(tmp_path / "model.ckpt", device="cpu")
    loaded.max_seq_len = 48  # past the 16 positions it was built and trained for: no table to run out of
    long_text = " ".join(synthetic_sentences(6))
    with caplog.at_level("WARNING", logger="bertlite.positions"):
        for _ in range(3):
            encodings = loaded.encode_inputs([long_text])
    assert len(encodings[0].ids) > 16
    warnings = [r for r in caplog.records if "extrapolate" in r.getMessage()]
    assert len(warnings) == 1 and "at most 16" in warnings[0].getMessage()
    with torch.no_grad():
        logits = loaded.model(torch.tensor([encodings[0].ids])).logits
    assert logits.shape[1] == len(encodings[0].ids) and torch.isfinite(logits).all()
