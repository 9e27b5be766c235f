"""BERT models: the tied MLM head, the positions-only loss path, presets and configs, parameter count,
post-LN vs pre-LN blocks, and state_dict round trips."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from bertlite.models import PRESETS, BertConfig, BertForMaskedLM, BertModel, config_from_dict, preset
from bertlite.nn import TransformerBlock, TransformerStack

ATOL = 1e-5
VOCAB = 100


def tiny_config(**overrides) -> BertConfig:
    values = dict(d_model=64, n_heads=2, d_ff=128, n_layers=2, vocab_size=VOCAB, max_seq_len=32, dropout=0.0,
                  attention_dropout=0.0)
    values.update(overrides)
    return preset("bert-tiny", **values)


def tiny_mlm(seed: int = 0, **overrides) -> BertForMaskedLM:
    torch.manual_seed(seed)
    return BertForMaskedLM(tiny_config(**overrides)).eval()


def _inputs(seed: int = 0, b: int = 3, t: int = 16):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (b, t), generator=g)
    attention_mask = torch.ones(b, t, dtype=torch.long)
    attention_mask[1, 11:] = 0
    ids[1, 11:] = 0
    positions = torch.tensor([0, 3, 7, t + 2, t + 10, 2 * t + 15])  # flat indices into B*T, all real tokens
    labels = torch.randint(5, VOCAB, (positions.numel(),), generator=g)
    return ids, attention_mask, positions, labels


# --------------------------------------------------------------------------------------------
# Masked-LM head
# --------------------------------------------------------------------------------------------
def test_decoder_weight_is_tied_to_input_embedding():
    model = tiny_mlm()
    assert model.mlm_head.decoder.weight is model.bert.embeddings.token.weight
    assert model.mlm_head.decoder.weight.shape == (VOCAB, 64)
    # Tied means one parameter: a gradient through the decoder reaches the embedding.
    names = [n for n, _ in model.named_parameters()]
    assert "mlm_head.decoder.weight" not in names and "bert.embeddings.token.weight" in names
    with torch.no_grad():
        model.bert.embeddings.token.weight[5, 0] += 1.0
    assert model.mlm_head.decoder.weight[5, 0] == model.bert.embeddings.token.weight[5, 0]


def test_pad_embedding_row_is_zero_after_init():
    model = tiny_mlm()
    pad = model.config.pad_token_id
    assert torch.all(model.bert.embeddings.token.weight[pad] == 0)


def test_positions_path_loss_matches_full_logits():
    model = tiny_mlm(1)
    ids, attention_mask, positions, labels = _inputs(1)
    b, t = ids.shape
    with torch.no_grad():
        full = model(ids, attention_mask)
        sparse = model(ids, attention_mask, mlm_positions=positions, mlm_labels=labels)
    assert full.loss is None
    assert full.logits.shape == (b, t, VOCAB)
    assert sparse.logits.shape == (positions.numel(), VOCAB)
    gathered = full.logits.reshape(b * t, VOCAB)[positions]
    torch.testing.assert_close(sparse.logits, gathered, atol=ATOL, rtol=0)
    expected = F.cross_entropy(gathered, labels)
    torch.testing.assert_close(sparse.loss, expected, atol=ATOL, rtol=0)
    # Row-major flat indexing: position p is (p // T, p % T).
    rows, cols = positions // t, positions % t
    torch.testing.assert_close(sparse.logits, full.logits[rows, cols], atol=ATOL, rtol=0)


def test_positions_path_never_builds_full_logits():
    model = tiny_mlm(2)
    ids, attention_mask, positions, labels = _inputs(2)
    shapes = []
    handle = model.mlm_head.decoder.register_forward_hook(lambda mod, inp, out: shapes.append(tuple(out.shape)))
    try:
        out = model(ids, attention_mask, mlm_positions=positions, mlm_labels=labels)
    finally:
        handle.remove()
    assert shapes == [(positions.numel(), VOCAB)]
    out.loss.backward()
    assert model.bert.embeddings.token.weight.grad is not None


def test_token_type_default_is_segment_zero():
    cfg = tiny_config()
    torch.manual_seed(3)
    bert = BertModel(cfg).eval()
    ids, attention_mask, _, _ = _inputs(3)
    with torch.no_grad():
        a = bert(ids, attention_mask)
        b = bert(ids, attention_mask, torch.zeros_like(ids))
        c = bert(ids, attention_mask, torch.ones_like(ids))
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    assert not torch.allclose(a, c, atol=1e-3)


# --------------------------------------------------------------------------------------------
# Presets and configs
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,layers,hidden", [
    ("bert-tiny", 2, 128), ("bert-mini", 4, 256), ("bert-small", 4, 512),
    ("bert-medium", 8, 512), ("bert-base", 12, 768), ("bert-large", 24, 1024),
])
def test_presets(name, layers, hidden):
    cfg = preset(name)
    assert (cfg.n_layers, cfg.d_model) == (layers, hidden)
    assert cfg.n_heads == hidden // 64 and cfg.d_ff == 4 * hidden


def test_six_presets_per_architecture_and_four_modernberts():
    sizes = ["tiny", "mini", "small", "medium", "base", "large"]
    classic = {f"{arch}-{size}" for arch in ("bert", "gpt", "transformer") for size in sizes}
    assert set(PRESETS) == classic | {f"modernbert-{size}" for size in ("tiny", "mini", "base", "large")}


def test_preset_overrides_do_not_mutate_the_preset():
    cfg = preset("bert-tiny", dropout=0.0, vocab_size=123)
    assert (cfg.dropout, cfg.vocab_size) == (0.0, 123)
    assert PRESETS["bert-tiny"].dropout == 0.1 and PRESETS["bert-tiny"].vocab_size == 30522


def test_unknown_preset_lists_available_names():
    with pytest.raises(KeyError) as info:
        preset("bert-foo")
    message = str(info.value)
    assert "bert-foo" in message
    for name in PRESETS:
        assert name in message


def test_config_dict_round_trip():
    cfg = tiny_config(norm_first=True, position="sinusoidal", activation="relu")
    values = dataclasses.asdict(cfg)
    assert config_from_dict(values) == cfg
    assert values == dataclasses.asdict(cfg)  # the input dict is not modified


def test_config_rejects_unknown_fields_and_architectures():
    values = dataclasses.asdict(tiny_config())
    with pytest.raises(ValueError, match="hidden_size"):
        config_from_dict({**values, "hidden_size": 64})
    with pytest.raises(ValueError, match="gpt"):
        config_from_dict({**values, "arch": "gpt"})
    with pytest.raises(ValueError):
        BertConfig(d_model=64, n_heads=3)


def test_bert_base_parameter_count():
    cfg = preset("bert-base", vocab_size=30522)
    with torch.device("meta"):
        model = BertForMaskedLM(cfg)
    n = sum(p.numel() for p in model.parameters())
    v, d, f, n_layers, pos, types = 30522, 768, 3072, 12, 512, 2
    embeddings = v * d + pos * d + types * d + 2 * d
    layer = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 2 * 2 * d
    head = (d * d + d) + 2 * d + v  # dense, LayerNorm, decoder bias (decoder weight is tied)
    assert n == embeddings + n_layers * layer + head == 109_514_298
    assert abs(n - 110e6) / 110e6 < 0.01


# --------------------------------------------------------------------------------------------
# Post-LN vs pre-LN
# --------------------------------------------------------------------------------------------
def _block(norm_first: bool) -> TransformerBlock:
    torch.manual_seed(4)
    block = TransformerBlock(32, 4, 64, norm_first=norm_first).eval()
    with torch.no_grad():  # non-trivial LayerNorm parameters, so the structure check is meaningful
        for norm in (block.self_attn_norm, block.feed_forward_norm):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    return block


def _block_input() -> torch.Tensor:
    return 3.0 + 2.0 * torch.randn(2, 10, 32, generator=torch.Generator().manual_seed(4))


def test_post_ln_block_structure():
    block = _block(norm_first=False)
    x = _block_input()
    with torch.no_grad():
        h = block.self_attn_norm(x + block.self_attn(x))
        expected = block.feed_forward_norm(h + block.feed_forward(h))
        out = block(x)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)


def test_pre_ln_block_structure():
    block = _block(norm_first=True)
    x = _block_input()
    with torch.no_grad():
        h = x + block.self_attn(block.self_attn_norm(x))
        expected = h + block.feed_forward(block.feed_forward_norm(h))
        out = block(x)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)


def test_post_ln_output_is_normalised_pre_ln_is_not():
    x = _block_input()
    post = TransformerBlock(32, 4, 64, norm_first=False).eval()  # default LayerNorm: weight 1, bias 0
    pre = TransformerBlock(32, 4, 64, norm_first=True).eval()
    with torch.no_grad():
        out_post, out_pre = post(x), pre(x)
    torch.testing.assert_close(out_post.mean(-1), torch.zeros(2, 10), atol=ATOL, rtol=0)
    torch.testing.assert_close(out_post.var(-1, unbiased=False), torch.ones(2, 10), atol=1e-4, rtol=0)
    # Pre-LN keeps the residual stream: the input's offset of 3 survives.
    assert out_pre.mean(-1).abs().min() > 1.0


def test_stack_final_norm_only_for_pre_ln():
    pre = TransformerStack(2, d_model=32, n_heads=4, d_ff=64, norm_first=True, layer_norm_eps=1e-6)
    post = TransformerStack(2, d_model=32, n_heads=4, d_ff=64, norm_first=False)
    assert isinstance(pre.final_norm, torch.nn.LayerNorm) and pre.final_norm.eps == 1e-6
    assert post.final_norm is None
    x = _block_input()
    with torch.no_grad():
        out = pre.eval()(x)
        h = x
        for layer in pre.layers:
            h = layer(h)
    torch.testing.assert_close(out, pre.final_norm(h), atol=ATOL, rtol=0)


# --------------------------------------------------------------------------------------------
# state_dict round trip
# --------------------------------------------------------------------------------------------
def test_state_dict_round_trip(tmp_path):
    model = tiny_mlm(5)
    ids, attention_mask, positions, labels = _inputs(5)
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)

    fresh = tiny_mlm(6)
    with torch.no_grad():
        before = fresh(ids, attention_mask).logits
        reference = model(ids, attention_mask)
    assert not torch.allclose(before, reference.logits, atol=1e-3)

    missing, unexpected = fresh.load_state_dict(torch.load(path, weights_only=True))
    assert not missing and not unexpected
    assert fresh.mlm_head.decoder.weight is fresh.bert.embeddings.token.weight  # still tied after loading
    with torch.no_grad():
        restored = fresh(ids, attention_mask)
        sparse_a = model(ids, attention_mask, mlm_positions=positions, mlm_labels=labels)
        sparse_b = fresh(ids, attention_mask, mlm_positions=positions, mlm_labels=labels)
    assert torch.equal(restored.logits, reference.logits)
    assert torch.equal(sparse_a.loss, sparse_b.loss)
