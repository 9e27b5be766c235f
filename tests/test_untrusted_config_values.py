"""A model config read from a file is data: a value Hydra would act on (a dict with ``_target_``, a ``${...}``
interpolation) is refused in one line naming the file and the field, and no code from the file runs. Checked for
every way a file's config comes in: bertlite.load, pretrained= (a model folder or hf:<folder>) and init_from=."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import bertlite
from bertlite.checkpoints import save_checkpoint
from bertlite.data.tokenizer import train_wordpiece
from bertlite.errors import CheckpointError, ConfigError
from bertlite.models import config_from_dict, preset
from bertlite.models.registry import PRETRAINING_MODELS
from tests.conftest import TINY_RUN, predictor_checkpoint, run_cli, synthetic_sentences

TINY = dict(d_model=32, n_heads=2, d_ff=64, n_layers=2, max_seq_len=32)


@pytest.fixture(scope="module")
def mlm_checkpoint(tmp_path_factory):
    """A tiny MLM checkpoint file (BERT, learned positions: it exports to an HF folder too)."""
    torch.manual_seed(0)
    tokenizer = train_wordpiece(synthetic_sentences(200), vocab_size=120)
    model = PRETRAINING_MODELS["bert"](preset("bert-tiny", vocab_size=tokenizer.get_vocab_size(), **TINY))
    path = tmp_path_factory.mktemp("mlm") / "mlm.ckpt"
    save_checkpoint(predictor_checkpoint(model, tokenizer, "mlm", trained_seq_len=32), path)
    return path


def hostile_values(marker) -> dict[str, object]:
    return {"_target_": {"_target_": "pathlib.Path.touch", "_args_": [str(marker)]},
            "interpolation": "${oc.env:HOME}"}


def tampered_folder(mlm_checkpoint, tmp_path, value):
    """A bertlite model folder whose config.json sets model_config.init_std to ``value``."""
    folder = bertlite.load(mlm_checkpoint).save_pretrained(tmp_path / "evil")
    config = json.loads((folder / "config.json").read_text())
    config["model_config"]["init_std"] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def tampered_hf_folder(mlm_checkpoint, tmp_path, value):
    """A Hugging Face BERT folder (exported from the checkpoint) whose config.json sets initializer_range."""
    from bertlite.interop import export_hf_bert

    folder = export_hf_bert(mlm_checkpoint, tmp_path / "evil-hf")
    config = json.loads((folder / "config.json").read_text())
    config["initializer_range"] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("kind", ["_target_", "interpolation"])
def test_load_refuses_a_model_folder_whose_config_holds_config_code(kind, mlm_checkpoint, tmp_path):
    marker = tmp_path / "PWNED"
    folder = tampered_folder(mlm_checkpoint, tmp_path, hostile_values(marker)[kind])
    with pytest.raises(CheckpointError, match=r"evil/config\.json: model_config is malformed: init_std=.*"
                                              r"(a dict with _target_|an interpolation).*plain data") as info:
        bertlite.load(folder)
    assert len(str(info.value).splitlines()) == 1
    assert not marker.exists()


def test_load_refuses_an_hf_folder_whose_config_holds_config_code(mlm_checkpoint, tmp_path):
    marker = tmp_path / "PWNED"
    folder = tampered_hf_folder(mlm_checkpoint, tmp_path, hostile_values(marker)["_target_"])
    with pytest.raises(CheckpointError, match=r"evil-hf/config\.json: initializer_range=.*dict with _target_"):
        bertlite.load(f"hf:{folder}")
    assert not marker.exists()


def _entry(entry: str, source: str, corpus, sentiment) -> tuple[str, list[str]]:
    train, dev = sentiment
    finetune_data = ["data=csv", f"data.train_file={train}", f"data.validation_file={dev}",
                     "data.text_column=review", "data.label_column=sentiment", "data.max_seq_len=32"]
    if entry == "init_from=":
        return "bertlite.pretrain", [*TINY_RUN, "data=text_files", f"data.train_files={corpus}", f"init_from={source}"]
    return "bertlite.finetune", [*finetune_data, f"pretrained={source}"]


@pytest.mark.parametrize("kind", ["_target_", "interpolation"])
@pytest.mark.parametrize("entry", ["pretrained=", "init_from=", "pretrained=hf:"])
def test_training_from_a_folder_whose_config_holds_config_code_is_one_error(entry, kind, mlm_checkpoint, tiny_corpus,
                                                                             sentiment_csv, tmp_path):
    """bertlite-finetune pretrained=<folder> and pretrained=hf:<folder>, bertlite-pretrain init_from=<folder>: exit
    status 2, one line naming config.json and the field, and nothing from the file called."""
    marker = tmp_path / "PWNED"
    value = hostile_values(marker)[kind]
    if entry == "pretrained=hf:":
        source, field = f"hf:{tampered_hf_folder(mlm_checkpoint, tmp_path, value)}", "initializer_range"
    else:
        source, field = str(tampered_folder(mlm_checkpoint, tmp_path, value)), "init_std"
    module, args = _entry(entry, source, tiny_corpus, sentiment_csv)
    result = run_cli(module, *args, f"hydra.run.dir={tmp_path / 'run'}")
    assert not marker.exists(), f"{entry} ran code from config.json"
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "config.json" in lines[0] and f"{field}=" in lines[0], lines[0]


@pytest.mark.parametrize("value, message", [
    (True, "dropout=True is a bool, not a float"),
    ("0.1", "dropout='0.1' is a str, not a float"),
    ([0.1], r"dropout=\[0.1\] is a list, not a float"),
    (12.0, None),  # an int field below
])
def test_config_values_are_checked_against_their_field_types(value, message):
    values = dataclasses.asdict(preset("bert-tiny"))
    if message is None:
        with pytest.raises(ConfigError, match="n_layers=12.0 is a float, not an int"):
            config_from_dict({**values, "n_layers": value})
        return
    with pytest.raises(ConfigError, match=message):
        config_from_dict({**values, "dropout": value})
    with pytest.raises(ValueError):  # what callers of config_from_dict caught before it checked types
        config_from_dict({**values, "dropout": value})


def test_an_int_fits_a_float_field_and_the_config_is_unchanged():
    values = {**dataclasses.asdict(preset("bert-tiny")), "dropout": 0}
    assert config_from_dict(values, source="config.json").dropout == 0


def test_a_checkpoints_optional_fields_are_checked_too(mlm_checkpoint, tmp_path):
    checkpoint = torch.load(mlm_checkpoint, weights_only=True)
    checkpoint["bertlite"]["trained_seq_len"] = {"_target_": "os.getcwd"}
    save_checkpoint(checkpoint, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match=r"bertlite.trained_seq_len=.* is a dict with _target_, not an int"):
        bertlite.load(tmp_path / "bad.ckpt")
