"""Helpers the entry points share (bertlite/cli/common.py)."""

from __future__ import annotations


def test_learned_positions_default_to_the_data_length():
    """What the CLI asks bertlite.positions for a new model: model.max_seq_len given on the command line
    (explicit_model_len, from common.overridden) is kept; otherwise learned positions take the data's length."""
    from bertlite.models.config import preset
    from bertlite.positions import sequence_lengths

    learned = preset("bert-tiny", max_seq_len=512)
    assert sequence_lengths("pretrain", learned, 128).model == 128  # rows 128..511 would never be trained
    for position in ("alibi", "sinusoidal"):
        config = preset("bert-tiny", max_seq_len=512, position=position)
        assert sequence_lengths("pretrain", config, 128).model == 512
    explicit = sequence_lengths("pretrain", learned, 128, explicit_model_len=True)
    assert explicit.model == 512  # model.max_seq_len=512 on the command line is kept
