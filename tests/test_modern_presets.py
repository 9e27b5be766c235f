"""ModernBERT presets (model=modernbert-*), the per-layer local/global attention wiring, the checks of the new
fields, their round trip through checkpoints and model folders, and experiment=modern_mini."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import bertlite
from bertlite.checkpoints import save_checkpoint
from bertlite.data.tokenizer import train_wordpiece
from bertlite.errors import ConfigError
from bertlite.models import BertForMaskedLM, config_from_dict, preset
from bertlite.models.encoder import BertForTokenClassification
from bertlite.models.registry import PRETRAINING_MODELS, build_classifier
from tests.conftest import predictor_checkpoint, synthetic_sentences
from tests.test_configs import compose_resolved

TINY = dict(vocab_size=60, d_model=32, n_heads=4, d_ff=48, n_layers=3, max_seq_len=32)


def test_modernbert_base_follows_the_transformers_config_defaults():
    from transformers import ModernBertConfig

    hf, ours = ModernBertConfig(), preset("modernbert-base")
    assert (ours.n_layers, ours.d_model, ours.n_heads, ours.d_ff) == (
        hf.num_hidden_layers, hf.hidden_size, hf.num_attention_heads, hf.intermediate_size)
    assert (ours.vocab_size, ours.max_seq_len, ours.pad_token_id, ours.layer_norm_eps) == (
        hf.vocab_size, hf.max_position_embeddings, hf.pad_token_id, hf.norm_eps)
    assert (ours.rope_theta, ours.rope_theta_local) == (hf.rope_parameters["full_attention"]["rope_theta"],
                                                        hf.rope_parameters["sliding_attention"]["rope_theta"])
    assert ours.local_attention == hf.local_attention
    kinds = ["full_attention" if i % ours.global_attn_every_n_layers == 0 else "sliding_attention"
             for i in range(ours.n_layers)]
    assert kinds == hf.layer_types
    assert ours.dropout == hf.embedding_dropout == hf.mlp_dropout and ours.attention_dropout == hf.attention_dropout
    assert ours.bias == any([hf.attention_bias, hf.mlp_bias, hf.norm_bias, hf.classifier_bias])
    assert ours.decoder_bias == hf.decoder_bias and ours.head_activation == hf.classifier_activation
    assert (ours.activation, hf.hidden_activation) == ("geglu", "gelu")


@pytest.mark.parametrize("name,paper", [("modernbert-base", 149e6), ("modernbert-large", 395e6)])
def test_modernbert_base_and_large_have_the_papers_parameter_counts(name, paper):
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = BertForMaskedLM(preset(name))
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(paper, rel=0.005)


@pytest.mark.parametrize("size", ["tiny", "mini"])
def test_small_modernberts_are_the_recipe_at_berts_small_shapes(size):
    small, base, bert = preset(f"modernbert-{size}"), preset("modernbert-base"), preset(f"bert-{size}")
    assert (small.n_layers, small.d_model, small.n_heads) == (bert.n_layers, bert.d_model, bert.n_heads)
    assert small.d_ff == 3 * small.d_model // 2 and base.d_ff == 3 * base.d_model // 2
    shape = {"n_layers", "d_model", "n_heads", "d_ff", "max_seq_len"}
    assert {k: v for k, v in dataclasses.asdict(small).items() if k not in shape} == \
        {k: v for k, v in dataclasses.asdict(base).items() if k not in shape}


def _attention(model) -> list:
    return [layer.self_attn for layer in model.bert.encoder.layers]


def test_every_nth_layer_is_global_and_the_others_local_with_their_own_rotary_base():
    config = preset("bert-tiny", **TINY, position="rope", rope_theta=8000.0, rope_theta_local=500.0,
                    local_attention=8, global_attn_every_n_layers=2)
    attention = _attention(BertForMaskedLM(config))
    assert [a.window for a in attention] == [None, 8, None]
    assert [a.rotary.theta for a in attention] == [8000.0, 500.0, 8000.0]
    same_base = _attention(BertForMaskedLM(dataclasses.replace(config, rope_theta_local=None)))
    assert [a.rotary.theta for a in same_base] == [8000.0] * 3
    assert [a.window for a in _attention(BertForMaskedLM(preset("bert-tiny", **TINY)))] == [None] * 3


def test_local_layers_see_only_their_window():
    torch.manual_seed(0)
    config = preset("bert-tiny", **{**TINY, "n_layers": 2}, dropout=0.0, attention_dropout=0.0, local_attention=4,
                    global_attn_every_n_layers=2)
    layer = BertForMaskedLM(config).bert.encoder.layers[1].eval()  # local: keys within 2 positions either side
    x = torch.randn(1, 16, 32)
    far = x.clone()
    far[0, 8:] += torch.randn(8, 32)  # positions 8.. change; position 5 sees 3..7 only
    with torch.no_grad():
        a, b = layer.self_attn(x), layer.self_attn(far)
    torch.testing.assert_close(a[0, :6], b[0, :6], rtol=0, atol=1e-6)
    assert not torch.allclose(a[0, 6], b[0, 6])


@pytest.mark.parametrize("fields,message", [
    (dict(local_attention=128), "global_attn_every_n_layers=1"),
    (dict(global_attn_every_n_layers=3), "local_attention=0 with global_attn_every_n_layers=3"),
    (dict(local_attention=-2, global_attn_every_n_layers=3), "window is 0"),
    (dict(local_attention=128, global_attn_every_n_layers=0), "n >= 1"),
])
def test_bad_local_attention_settings_are_one_clear_error(fields, message):
    with pytest.raises(ValueError, match=message):
        preset("bert-tiny", **TINY, **fields)
    with pytest.raises(ConfigError, match=message):  # what the CLI shows as one line
        config_from_dict({**dataclasses.asdict(preset("bert-tiny", **TINY)), **fields})


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(synthetic_sentences(200), vocab_size=120)


FLAGS = [
    ("mlm", dict(activation="geglu")),
    ("mlm", dict(activation="swiglu", head_activation="relu")),
    ("mlm", dict(bias=False, decoder_bias=False)),
    ("mlm", dict(norm_first=True, first_layer_attn_norm=False)),
    ("mlm", dict(position="rope", local_attention=6, global_attn_every_n_layers=2, rope_theta_local=300.0)),
    ("classification", dict(classifier_head="transform", bias=False)),
    ("token_classification", dict(classifier_head="transform", head_activation="silu")),
]


def _build(task: str, config):
    if task == "classification":
        return build_classifier(config, 2, "mean")
    if task == "token_classification":
        return BertForTokenClassification(config, 3)
    return PRETRAINING_MODELS["bert"](config)


def _outputs(model, ids, mask):
    out = model(ids, mask)
    return out.logits if hasattr(out, "logits") else out


@pytest.mark.parametrize("task,fields", FLAGS, ids=lambda x: "-".join(x) if isinstance(x, dict) else x)
def test_each_new_field_round_trips_through_a_checkpoint_and_a_model_folder(task, fields, tokenizer, tmp_path):
    torch.manual_seed(0)
    config = preset("bert-tiny", **{**TINY, "vocab_size": tokenizer.get_vocab_size(), **fields})
    model = _build(task, config).eval()
    meta = {"trained_seq_len": 32, "label_names": ["a", "b", "c"][:2 if task == "classification" else 3]}
    if task == "classification":
        meta["pooling"] = "mean"
    save_checkpoint(predictor_checkpoint(model, tokenizer, task, **meta), tmp_path / "model.ckpt")
    loaded = bertlite.load(tmp_path / "model.ckpt", device="cpu")
    again = bertlite.load(loaded.save_pretrained(tmp_path / "folder"), device="cpu")
    ids = torch.randint(5, tokenizer.get_vocab_size(), (2, 14))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    with torch.no_grad():
        expected = _outputs(model, ids, mask)
        for restored in (loaded.model, again.model):
            assert restored.config == config
            assert torch.equal(_outputs(restored.eval(), ids, mask), expected)


def test_modern_mini_changes_the_model_and_steps_alone_against_gutenberg_mini():
    _, classic = compose_resolved("pretrain", ["experiment=gutenberg_mini"])
    _, modern = compose_resolved("pretrain", ["experiment=modern_mini"])
    assert modern["model"] == {**dataclasses.asdict(preset("modernbert-mini")), "position": "rope"}
    assert modern["data"] == {**classic["data"], "mlm_probability": 0.3}  # same blocks and evaluation masks
    # the same wall-clock: modern_mini's steps are shorter, so it has more of them
    assert (classic["trainer"]["max_steps"], modern["trainer"]["max_steps"]) == (1300, 1600)
    assert {**modern["trainer"], "max_steps": 1300} == classic["trainer"]
    assert {k: v for k, v in modern.items() if k not in ("model", "task_name", "trainer")} == \
        {k: v for k, v in classic.items() if k not in ("model", "task_name", "trainer")}
