"""Helpers the entry points share (bertlite/cli/common.py)."""

from __future__ import annotations


def test_learned_positions_default_to_the_data_length(monkeypatch):
    from bertlite.cli import common

    monkeypatch.setattr(common, "overridden", lambda key: False)
    learned = {"position": "learned", "max_seq_len": 512}
    common.fit_learned_positions(learned, 128)
    assert learned["max_seq_len"] == 128  # rows 128..511 would never be trained
    for position in ("alibi", "sinusoidal"):
        config = {"position": position, "max_seq_len": 512}
        common.fit_learned_positions(config, 128)
        assert config["max_seq_len"] == 512
    monkeypatch.setattr(common, "overridden", lambda key: key == "model.max_seq_len")
    explicit = {"position": "learned", "max_seq_len": 512}
    common.fit_learned_positions(explicit, 128)
    assert explicit["max_seq_len"] == 512  # model.max_seq_len=512 on the command line is kept
