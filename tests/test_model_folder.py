"""Model folders (config.json, model.safetensors, tokenizer.json): every architecture round-trips exactly, the
folder is written atomically, and a damaged one is one clear error."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import bertlite
from bertlite.checkpoints import save_checkpoint
from bertlite.data.tokenizer import train_wordpiece
from bertlite.errors import CheckpointError, ConfigError
from bertlite.models import preset
from bertlite.models.registry import PRETRAINING_MODELS, build_classifier
from bertlite.sources import read_checkpoint
from tests.conftest import predictor_checkpoint, synthetic_sentences

TINY = dict(d_model=32, n_heads=2, d_ff=64, n_layers=2, max_seq_len=32, dropout=0.0, attention_dropout=0.0)
TEXTS = ["the value was valid and correct .", "a name"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(synthetic_sentences(200), vocab_size=120)


def _checkpoint(kind: str, tokenizer) -> dict:
    torch.manual_seed(0)
    vocab = tokenizer.get_vocab_size()
    if kind == "classifier":
        model = build_classifier(preset("bert-tiny", vocab_size=vocab, **TINY), 3)
        return predictor_checkpoint(model, tokenizer, "classification", label_names=["a", "b", "c"], pooling="cls",
                                    max_seq_len=32)
    if kind == "mlm-alibi":
        return predictor_checkpoint(PRETRAINING_MODELS["bert"](preset("bert-tiny", vocab_size=vocab, **TINY,
                                                                      position="alibi")), tokenizer, "mlm")
    arch, task = {"gpt": ("gpt", "clm"), "encoder-decoder": ("transformer", "seq2seq")}[kind]
    config = preset(f"{arch}-tiny", vocab_size=vocab, **TINY)
    return predictor_checkpoint(PRETRAINING_MODELS[arch](config), tokenizer, task, trained_seq_len=32)


def _outputs(predictor, kind: str):
    if kind == "classifier":
        return predictor.predict_proba(TEXTS)
    if kind == "mlm-alibi":
        return [(c["token"], c["score"]) for c in predictor.fill_mask("the [MASK] was valid .", top_k=5)]
    return predictor.generate("the value", max_new_tokens=8, greedy=True, stop_at_sep=False)


@pytest.mark.parametrize("kind", ["classifier", "mlm-alibi", "gpt", "encoder-decoder"])
def test_round_trip_through_a_model_folder_is_exact(kind, tokenizer, tmp_path):
    ckpt = tmp_path / "model.ckpt"
    save_checkpoint(_checkpoint(kind, tokenizer), ckpt)
    original = bertlite.load(ckpt, device="cpu")
    folder = original.save_pretrained(tmp_path / "folder")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    again = bertlite.load(folder, device="cpu")
    assert type(again) is type(original)
    for name, tensor in original.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[name], tensor), name
    first, second = _outputs(original, kind), _outputs(again, kind)
    if isinstance(first, torch.Tensor):
        assert torch.equal(first, second)
    else:
        assert first == second


def test_tied_weights_are_stored_once_and_tied_again(tokenizer, tmp_path):
    ckpt = tmp_path / "mlm.ckpt"
    save_checkpoint(_checkpoint("mlm-alibi", tokenizer), ckpt)
    folder = bertlite.load(ckpt).save_pretrained(tmp_path / "folder")
    config = json.loads((folder / "config.json").read_text())
    assert config["tied_weights"] == {"mlm_head.decoder.weight": "bert.embeddings.token.weight"}
    assert config["task"] == "mlm" and config["model_config"]["position"] == "alibi"
    model = bertlite.load(folder).model
    assert model.mlm_head.decoder.weight is model.bert.embeddings.token.weight


def test_convert_to_folder_and_back_into_training(tokenizer, tmp_path, monkeypatch, capsys):
    from bertlite.cli import convert

    ckpt = tmp_path / "clf.ckpt"
    save_checkpoint(_checkpoint("classifier", tokenizer), ckpt)
    monkeypatch.setattr(sys, "argv", ["bertlite-convert", "to-folder", str(ckpt), f"out={tmp_path / 'shared'}"])
    convert.main()
    loaded = read_checkpoint(tmp_path / "shared")
    assert loaded["bertlite"]["label_names"] == ["a", "b", "c"] and loaded["bertlite"]["pooling"] == "cls"
    from_folder = bertlite.load(tmp_path / "shared").predict_proba(TEXTS)
    assert torch.equal(from_folder, bertlite.load(ckpt).predict_proba(TEXTS))


def test_a_failed_write_leaves_the_old_folder(tokenizer, tmp_path, monkeypatch):
    ckpt = tmp_path / "clf.ckpt"
    save_checkpoint(_checkpoint("classifier", tokenizer), ckpt)
    predictor = bertlite.load(ckpt)
    folder = predictor.save_pretrained(tmp_path / "folder")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(ConfigError, match="exists and is not empty.*overwrite"):
        predictor.save_pretrained(folder)

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", disk_full)
    with pytest.raises(OSError, match="No space"):
        predictor.save_pretrained(folder, overwrite=True)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left


@pytest.mark.parametrize("damage, message", [
    ("no-weights", "model.safetensors is missing"),
    ("truncated-weights", "cannot read the model folder"),
    ("hf-folder", "not a bertlite model folder.*give hf:"),
    ("no-model-config", "has no 'model_config' field"),
])
def test_a_damaged_folder_is_one_clear_error(damage, message, tokenizer, tmp_path):
    ckpt = tmp_path / "clf.ckpt"
    save_checkpoint(_checkpoint("classifier", tokenizer), ckpt)
    folder = bertlite.load(ckpt).save_pretrained(tmp_path / "folder")
    weights, config = folder / "model.safetensors", folder / "config.json"
    if damage == "no-weights":
        weights.unlink()
    elif damage == "truncated-weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "hf-folder":
        config.write_text(json.dumps({"model_type": "bert"}))
    else:
        values = json.loads(config.read_text())
        del values["model_config"]
        config.write_text(json.dumps(values))
    with pytest.raises(CheckpointError, match=message):
        bertlite.load(folder)


def test_pretrain_init_from_and_finetune_pretrained_accept_a_model_folder(pretrain_run, tiny_corpus, sentiment_csv,
                                                                          tmp_path):
    """The pretraining checkpoint as a folder: init_from= continues from its exact weights (lr 0 keeps them), and
    pretrained= fine-tunes from its encoder."""
    from tests.conftest import TINY_RUN, run_cli

    source = pretrain_run / "checkpoints" / "last.ckpt"
    folder = bertlite.load(source).save_pretrained(tmp_path / "mlm-folder")
    result = run_cli("bertlite.pretrain", *TINY_RUN, "data=text_files", f"data.train_files={tiny_corpus}",
                     "trainer.max_steps=2", "task.lr=0", f"init_from={folder}", f"hydra.run.dir={tmp_path / 'pre'}")
    assert result.returncode == 0, result.stderr[-3000:]
    before = read_checkpoint(source)["state_dict"]
    after = read_checkpoint(tmp_path / "pre" / "checkpoints" / "last.ckpt")["state_dict"]
    for name, weight in before.items():
        assert torch.equal(after[name], weight), name

    train, dev = sentiment_csv
    result = run_cli("bertlite.finetune", "data=csv", f"data.train_file={train}", f"data.validation_file={dev}",
                     "data.text_column=review", "data.label_column=sentiment", "data.max_seq_len=32",
                     "trainer.max_steps=2", "trainer.max_epochs=-1", "callbacks.progress_bar=null",
                     f"pretrained={folder}", f"hydra.run.dir={tmp_path / 'ft'}")
    assert result.returncode == 0, result.stderr[-3000:]
    tuned = bertlite.load(tmp_path / "ft" / "checkpoints" / "last.ckpt")
    assert tuned.tokenizer.to_str() == bertlite.load(folder).tokenizer.to_str()


@pytest.mark.parametrize("tied", [["mlm_head.decoder.weight"], "bert.embeddings.token.weight", 3,
                                  {"mlm_head.decoder.weight": 7}, {"mlm_head.decoder.weight": None}])
def test_malformed_tied_weights_are_one_error_naming_the_file_and_field(tied, tokenizer, tmp_path):
    ckpt = tmp_path / "mlm.ckpt"
    save_checkpoint(_checkpoint("mlm-alibi", tokenizer), ckpt)
    folder = bertlite.load(ckpt).save_pretrained(tmp_path / "folder")
    values = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**values, "tied_weights": tied}))
    with pytest.raises(CheckpointError, match=r"config\.json .*\"tied_weights\" must be an object"):
        bertlite.load(folder)


@pytest.mark.parametrize("config, message", [
    ([1, 2], "holds a JSON list, not an object"),
    ("bertlite-model-folder", "holds a JSON str, not an object"),
    (None, "holds a JSON NoneType, not an object"),
    ({"task": "mlm"}, "its \"format\" is None"),
    ({"format": ["bertlite-model-folder"]}, "its \"format\" is \\['bertlite-model-folder'\\]"),
])
def test_read_model_folder_refuses_a_config_that_is_not_bertlites(config, message, tokenizer, tmp_path):
    from bertlite.model_folder import read_model_folder

    ckpt = tmp_path / "clf.ckpt"
    save_checkpoint(_checkpoint("classifier", tokenizer), ckpt)
    folder = bertlite.load(ckpt).save_pretrained(tmp_path / "folder")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        read_model_folder(folder)
