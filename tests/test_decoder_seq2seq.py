"""The causal decoder (GPT) and the encoder-decoder: causality by perturbation, KV caches, sampling, sizes."""

from __future__ import annotations

import pytest
import torch

from bertlite.models import preset
from bertlite.models.decoder import GPTForCausalLM, GPTForSequenceClassification
from bertlite.models.encoder import BertModel
from bertlite.models.generation import filter_logits
from bertlite.models.registry import PRETRAINING_MODELS
from bertlite.models.seq2seq import TransformerForSeq2Seq, TransformerForSequenceClassification

TINY = dict(vocab_size=60, d_model=32, n_heads=2, d_ff=64, max_seq_len=32, dropout=0.0, attention_dropout=0.0)


def gpt(**kw):
    torch.manual_seed(0)
    return GPTForCausalLM(preset("gpt-tiny", **{**TINY, **kw})).eval()


def seq2seq(**kw):
    torch.manual_seed(0)
    return TransformerForSeq2Seq(preset("transformer-tiny", **{**TINY, "n_layers": 2, "n_decoder_layers": 2,
                                                                 **kw})).eval()


@pytest.mark.parametrize("norm_first", [True, False])
def test_gpt_is_causal_by_perturbation(norm_first):
    model = gpt(norm_first=norm_first)
    ids = torch.randint(5, 60, (2, 20))
    t = 9
    changed = ids.clone()
    changed[:, t + 1:] = torch.randint(5, 60, (2, 20 - t - 1))
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert (a[:, : t + 1] - b[:, : t + 1]).abs().max() <= 1e-6
    assert (a[:, t + 1:] - b[:, t + 1:]).abs().max() > 1e-3


def test_encoder_is_bidirectional_by_perturbation():
    torch.manual_seed(0)
    model = BertModel(preset("bert-tiny", **TINY)).eval()
    ids = torch.randint(5, 60, (1, 12))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1 - 5) % 55 + 5
    with torch.no_grad():
        assert (model(ids)[:, 0] - model(changed)[:, 0]).abs().max() > 1e-3  # the first position sees the last


def test_seq2seq_decoder_is_causal_and_reads_the_source():
    model = seq2seq()
    src, tgt = torch.randint(5, 60, (2, 10)), torch.randint(5, 60, (2, 12))
    changed = tgt.clone()
    changed[:, 6:] = torch.randint(5, 60, (2, 6))
    other_src = (src + 7 - 5) % 55 + 5  # every source token different
    with torch.no_grad():
        a, b, c = model(src, tgt), model(src, changed), model(other_src, tgt)
    assert (a[:, :6] - b[:, :6]).abs().max() <= 1e-6
    assert (a[:, 0] - c[:, 0]).abs().max() > 1e-4  # cross-attention: even the first target position reads the source


@pytest.mark.parametrize("sampling", [False, True])
def test_gpt_kv_cache_gives_the_same_tokens(sampling):
    model = gpt()
    prompt = torch.randint(5, 60, (3, 4))
    kw = dict(temperature=0.9, top_k=20, top_p=0.9) if sampling else dict(greedy=True)
    a = model.generate(prompt, 20, use_cache=True, generator=torch.Generator().manual_seed(1), **kw)
    b = model.generate(prompt, 20, use_cache=False, generator=torch.Generator().manual_seed(1), **kw)
    assert a.shape == (3, 24) and torch.equal(a, b)
    assert torch.equal(a[:, :4], prompt)


@pytest.mark.parametrize("sampling", [False, True])
def test_seq2seq_caches_give_the_same_tokens(sampling):
    model = seq2seq()
    src = torch.randint(5, 60, (2, 9))
    kw = dict(temperature=1.2, top_k=30) if sampling else dict(greedy=True)
    a = model.generate(src, 2, 15, use_cache=True, generator=torch.Generator().manual_seed(3), **kw)
    b = model.generate(src, 2, 15, use_cache=False, generator=torch.Generator().manual_seed(3), **kw)
    assert a.shape == (2, 16) and torch.equal(a, b)


def test_generation_stops_at_max_seq_len():
    model = gpt(max_seq_len=10)
    out = model.generate(torch.randint(5, 60, (1, 6)), 50, greedy=True)
    assert out.shape == (1, 10)


def test_top_k_and_top_p_filters():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    kept = torch.isfinite(filter_logits(logits, top_k=2))
    assert kept.tolist() == [[True, True, False, False, False]]
    kept = torch.isfinite(filter_logits(logits, top_p=0.8))  # 0.5 + 0.2 < 0.8 <= 0.5 + 0.2 + 0.15
    assert kept.tolist() == [[True, True, True, False, False]]
    shuffled = logits[:, [3, 0, 4, 2, 1]]
    assert torch.isfinite(filter_logits(shuffled, top_p=0.8)).tolist() == [[False, True, False, True, True]]


@pytest.mark.parametrize("vocab", [8192, 30522])
@pytest.mark.parametrize("size", ["tiny", "mini", "small", "medium", "base", "large"])
def test_presets_match_bert_parameter_counts(size, vocab):
    """Counted over the pretraining network, every weight once (tied embeddings once), embeddings included."""
    counts = {}
    with torch.device("meta"):
        for arch in ("bert", "gpt", "transformer"):
            model = PRETRAINING_MODELS[arch](preset(f"{arch}-{size}", vocab_size=vocab))
            counts[arch] = sum(p.numel() for p in model.parameters())
    for arch in ("gpt", "transformer"):
        assert abs(counts[arch] / counts["bert"] - 1) <= 0.10, (arch, counts)


def test_classifiers_pool_the_last_real_token():
    for cls, name in [(GPTForSequenceClassification, "gpt-tiny"), (TransformerForSequenceClassification,
                                                                     "transformer-tiny")]:
        torch.manual_seed(0)
        model = cls(preset(name, **TINY), num_labels=3).eval()
        ids = torch.randint(5, 60, (1, 7))
        padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)
        mask = torch.cat([torch.ones(1, 7), torch.zeros(1, 3)], 1).long()
        with torch.no_grad():
            torch.testing.assert_close(model(ids), model(padded, mask), atol=1e-5, rtol=0)
