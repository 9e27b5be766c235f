"""The sequence-length rule (bertlite/positions.py): model, trained and truncation lengths for pretraining,
fine-tuning and prediction, and the one error for data longer than the model can take."""

from __future__ import annotations

import pytest

from bertlite.errors import ConfigError
from bertlite.models.config import preset
from bertlite.positions import SequenceLengths, sequence_lengths


def model(position: str = "learned", max_seq_len: int = 512):
    return preset("bert-tiny", position=position, max_seq_len=max_seq_len)


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_a_new_model_with_learned_positions_takes_the_data_length(stage):
    assert sequence_lengths(stage, model("learned"), 128) == SequenceLengths(model=128, trained=128,
                                                                             max_positions=128, truncation=128)


@pytest.mark.parametrize("position", ["sinusoidal", "alibi"])
def test_positions_that_need_no_training_keep_the_model_length(position):
    lengths = sequence_lengths("pretrain", model(position), 128)
    assert lengths == SequenceLengths(model=512, trained=128, max_positions=512, truncation=128)


def test_an_explicit_model_length_is_kept_and_inputs_stay_within_the_trained_rows():
    lengths = sequence_lengths("finetune", model("learned"), 128, explicit_model_len=True)
    assert (lengths.model, lengths.trained, lengths.max_positions, lengths.truncation) == (512, 128, 128, 128)


def test_a_second_pretraining_phase_grows_the_model_to_the_longer_data():
    phase1 = model("learned", max_seq_len=128)
    lengths = sequence_lengths("pretrain", phase1, 256, source="phase1.ckpt", trained_len=128)
    assert (lengths.model, lengths.trained, lengths.truncation) == (256, 256, 256)
    # shorter blocks keep the checkpoint's model, and the furthest trained position
    shorter = sequence_lengths("pretrain", model("learned", max_seq_len=256), 64, source="p.ckpt", trained_len=256)
    assert (shorter.model, shorter.trained, shorter.truncation) == (256, 256, 64)
    # an older checkpoint without a recorded trained length: the data's
    assert sequence_lengths("pretrain", phase1, 64, source="old.ckpt").trained == 64


def test_an_explicit_model_length_does_not_apply_to_a_checkpoints_model():
    lengths = sequence_lengths("pretrain", model("learned", 128), 64, source="p.ckpt", explicit_model_len=False)
    assert lengths.model == 128  # the checkpoint's table stays: it is not cut to the data's length


def test_fine_tuning_past_the_trained_learned_positions_is_one_error():
    pretrained = model("learned", max_seq_len=32)
    with pytest.raises(ConfigError, match=r"data.max_seq_len=32 goes past the 16 positions run.ckpt was "
                                          r"pretrained on.*Set data.max_seq_len=16"):
        sequence_lengths("finetune", pretrained, 32, source="run.ckpt", trained_len=16)
    lengths = sequence_lengths("finetune", pretrained, 16, source="run.ckpt", trained_len=16)
    assert (lengths.model, lengths.trained, lengths.max_positions, lengths.truncation) == (32, 16, 16, 16)
    # ALiBi and sinusoidal positions need no training; an HF import records no trained length
    assert sequence_lengths("finetune", model("alibi", 32), 32, source="run.ckpt", trained_len=16).truncation == 32
    assert sequence_lengths("finetune", pretrained, 32, source="hf:bert").trained is None


def test_data_longer_than_the_model_is_one_error():
    with pytest.raises(ConfigError, match="data.max_seq_len=600 exceeds model.max_seq_len=512; lower the first"):
        sequence_lengths("pretrain", model("sinusoidal"), 600)
    with pytest.raises(ConfigError, match="data.max_seq_len=600 exceeds model.max_seq_len=512"):
        sequence_lengths("finetune", model("learned"), 600, explicit_model_len=True)
    with pytest.raises(ConfigError, match=r"data.max_seq_len=64 exceeds the model's max_seq_len=32 \(run.ckpt\); "
                                          r"set data.max_seq_len=32"):
        sequence_lengths("finetune", model("alibi", 32), 64, source="run.ckpt")


def test_prediction_cuts_texts_to_the_recorded_length_within_the_trained_positions():
    learned = model("learned", max_seq_len=32)
    assert sequence_lengths("predict", learned, None, trained_len=16) == SequenceLengths(32, 16, 16, 16)
    assert sequence_lengths("predict", learned, 12, trained_len=16).truncation == 12
    assert sequence_lengths("predict", learned, 64, trained_len=None).truncation == 32  # never an error
    assert sequence_lengths("predict", model("alibi", 32), None, trained_len=16).max_positions == 32


def test_fine_tuning_a_rope_model_past_its_trained_and_model_length_warns_instead_of_refusing(caplog, monkeypatch):
    monkeypatch.setattr("bertlite.positions._warned_lengths", set())
    with caplog.at_level("WARNING", logger="bertlite.positions"):
        lengths = sequence_lengths("finetune", model("rope", max_seq_len=64), 128, source="rope.ckpt",
                                   trained_len=64)
    assert (lengths.model, lengths.truncation) == (128, 128)
    assert [r.getMessage() for r in caplog.records if "extrapolate" in r.getMessage()]
    with pytest.raises(ConfigError, match="exceeds the model's max_seq_len=64"):  # learned positions: still refused
        sequence_lengths("finetune", model("learned", max_seq_len=64), 128, source="learned.ckpt", trained_len=64)
