"""Inference (bertlite/inference.py): generation stops where training documents ended, sampling settings outside
their range are refused, and inputs stay within the positions training reached."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bertlite.data.tokenizer import special_ids, train_wordpiece
from bertlite.errors import BertliteError, ConfigError
from bertlite.inference import MaskedLM, TextGenerator
from bertlite.models import preset
from bertlite.models.decoder import GPTForCausalLM
from bertlite.models.encoder import BertForMaskedLM
from tests.conftest import predictor_checkpoint, synthetic_sentences

TINY = dict(d_model=32, n_heads=2, d_ff=64, n_layers=2, max_seq_len=32, dropout=0.0, attention_dropout=0.0)


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(synthetic_sentences(200), vocab_size=120)


def gpt_that_always_says_sep(tokenizer) -> GPTForCausalLM:
    """A GPT whose every next token is [SEP]: the last LayerNorm outputs [SEP]'s (tied, enlarged) embedding."""
    torch.manual_seed(0)
    model = GPTForCausalLM(preset("gpt-tiny", **TINY, vocab_size=tokenizer.get_vocab_size()))
    sep = special_ids(tokenizer)["sep"]
    with torch.no_grad():
        model.gpt.embeddings.token.weight[sep] = 3.0
        model.gpt.decoder.final_norm.weight.zero_()
        model.gpt.decoder.final_norm.bias.fill_(3.0)
    return model


def test_gpt_generation_stops_at_sep_unless_asked_to_go_on(tokenizer, monkeypatch):
    generator = TextGenerator(predictor_checkpoint(gpt_that_always_says_sep(tokenizer), tokenizer, "clm"))
    lengths = []
    generate = generator.model.generate

    def spy(*args, **kwargs):
        out = generate(*args, **kwargs)
        lengths.append(out.size(1))
        return out

    monkeypatch.setattr(generator.model, "generate", spy)
    prompt = "the cat sat"
    n_prompt = 1 + len(tokenizer.encode(prompt, add_special_tokens=False).ids)  # [CLS] + prompt
    generator.generate(prompt, max_new_tokens=10, greedy=True)
    generator.generate(prompt, max_new_tokens=10, greedy=True, stop_at_sep=False)
    assert lengths == [n_prompt + 1, n_prompt + 10]  # stopped at the first [SEP]; went on through ten


@pytest.mark.parametrize("options", [dict(top_p=0.0), dict(top_p=1.5), dict(top_p=-0.1), dict(top_k=0),
                                     dict(temperature=-1.0)])
def test_sampling_settings_outside_their_range_are_refused(tokenizer, options):
    generator = TextGenerator(predictor_checkpoint(gpt_that_always_says_sep(tokenizer), tokenizer, "clm"))
    with pytest.raises(ConfigError, match=next(iter(options))):
        generator.generate("the cat", max_new_tokens=3, **options)
    generator.generate("the cat", max_new_tokens=3, top_p=1.0, seed=0)  # the edge of the range is allowed


def test_inference_stays_within_the_positions_training_reached(tokenizer):
    torch.manual_seed(0)
    config = preset("bert-tiny", **TINY, vocab_size=tokenizer.get_vocab_size())  # learned, 32 position rows
    mlm = MaskedLM(predictor_checkpoint(BertForMaskedLM(config), tokenizer, "mlm", trained_seq_len=16))
    assert mlm.max_positions == 16
    mlm.fill_mask("the cat [MASK] on the mat .")
    with pytest.raises(BertliteError, match="trained on at most 16"):
        mlm.fill_mask(" ".join(["the"] * 20) + " [MASK]")  # 23 tokens: rows 16..22 were never trained
    # ALiBi needs no trained rows: its limit stays the config's
    alibi = dataclasses.replace(config, position="alibi")
    alibi_mlm = MaskedLM(predictor_checkpoint(BertForMaskedLM(alibi), tokenizer, "mlm", trained_seq_len=16))
    assert alibi_mlm.max_positions == 32
    # a checkpoint that does not record it (older ones, HF imports) keeps max_seq_len
    assert MaskedLM(predictor_checkpoint(BertForMaskedLM(config), tokenizer, "mlm")).max_positions == 32
