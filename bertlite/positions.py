"""The sequence-length rule, in one place: how many positions a model has, how far training has taken them, and
where inputs are cut. Pretraining, fine-tuning and inference all ask ``sequence_lengths``.

Each length has one name:

- the model length, ``model.max_seq_len`` (``ModelConfig.max_seq_len``): the position rows the network has;
- the trained length, ``trained_seq_len`` (a checkpoint field): the furthest position training has reached.
  Learned position vectors beyond it were never trained; ALiBi and sinusoidal positions need no training;
- the truncation length, ``data.max_seq_len`` (recorded as ``max_seq_len`` in fine-tuned checkpoints): texts are
  cut to it;
- and from them ``max_positions``: the longest input the model takes.

Rotary positions have no table to run out of: a rotary model takes longer inputs than it was trained on (the
rotations extrapolate, less well the further they go), with one warning (``warn_if_extrapolating``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from bertlite.errors import ConfigError

if TYPE_CHECKING:
    from bertlite.models.config import ModelConfig

log = logging.getLogger(__name__)

Stage = Literal["pretrain", "finetune", "predict"]
STAGES = ("pretrain", "finetune", "predict")


@dataclass(frozen=True)
class SequenceLengths:
    """Token counts (see the module docstring)."""

    model: int  # model.max_seq_len: the position rows the network has
    trained: int | None  # trained_seq_len: the furthest position training has reached (None: not recorded)
    max_positions: int  # the longest input: the model length, or the trained length of learned positions
    truncation: int  # data.max_seq_len: texts are cut to this many tokens


def sequence_lengths(stage: Stage, config: ModelConfig, data_len: int | None, *, source: str | None = None,
                     trained_len: int | None = None, explicit_model_len: bool = False) -> SequenceLengths:
    """The lengths of a run (``stage`` pretrain or finetune) or of a loaded model (predict).

    ``config``: the model config (its ``position`` and ``max_seq_len``): the checkpoint's when ``source`` names one,
    else a new model's. ``data_len``: data.max_seq_len (for predict, the length the checkpoint recorded, or None).
    ``trained_len``: the checkpoint's trained_seq_len (None where it is not recorded: older checkpoints, HF imports).
    ``explicit_model_len``: model.max_seq_len was given on the command line.

    - A new model with learned positions gets model.max_seq_len = data.max_seq_len unless it was given: rows beyond
      the data's blocks would never be trained. Its trained length is the data's.
    - Pretraining from a checkpoint (a second phase) at longer blocks grows the model to them (the learned table
      grows too, see cli/pretrain.py); its trained length is the further of the two.
    - Fine-tuning keeps the checkpoint's model and trained length: data longer than the model, or than the learned
      positions pretraining reached, is a ``ConfigError``.
    - Prediction cuts texts to the recorded length, within ``max_positions``.
    """
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r}: one of {', '.join(STAGES)}")
    learned, model_len = config.position == "learned", config.max_seq_len
    if stage != "predict":
        if source is None:  # a new model
            if learned and model_len > data_len and not explicit_model_len:
                log.info("Learned positions: model.max_seq_len=%d, the data's block length (was %d)", data_len,
                         model_len)
                model_len = data_len
            trained_len = data_len
        elif stage == "pretrain":  # a second phase, from the checkpoint's weights
            if data_len > model_len:
                log.info("Positions: model.max_seq_len %d -> %d (data.max_seq_len)%s", model_len, data_len,
                         ", new learned rows start as copies of the trained ones" if learned else "")
                model_len = data_len
            trained_len = max(data_len, trained_len or 0)
        if config.position == "rope" and source is not None:
            warn_if_extrapolating(config, data_len, trained_len)
            model_len = max(model_len, data_len)  # no table to outgrow
        if data_len > model_len and source is None:
            raise ConfigError(f"data.max_seq_len={data_len} exceeds model.max_seq_len={model_len}; lower the first "
                              "or raise the second")
        if data_len > model_len:  # the checkpoint's model: its length is fixed
            raise ConfigError(f"data.max_seq_len={data_len} exceeds the model's max_seq_len={model_len} ({source}); "
                              f"set data.max_seq_len={model_len} (longer texts are truncated)")
        if learned and trained_len and data_len > trained_len:
            raise ConfigError(f"data.max_seq_len={data_len} goes past the {trained_len} positions "
                              f"{source} was pretrained on: its learned position vectors beyond them are "
                              f"untrained. Set data.max_seq_len={trained_len} (longer texts are truncated)")
    max_positions = min(model_len, trained_len) if learned and trained_len else model_len
    if stage != "predict":
        truncation = data_len
    else:  # a checkpoint's recorded length, within what the model takes
        truncation = max_positions if data_len is None else min(data_len, max_positions)
    return SequenceLengths(model_len, trained_len, max_positions, truncation)


_warned_lengths: set[tuple[int, int]] = set()


def warn_if_extrapolating(config: ModelConfig, length: int, trained_len: int | None) -> bool:
    """Log once (per trained length and per the first length past it) that a rotary model is asked for ``length``
    tokens, more than training reached (``trained_len``; not recorded: ``config.max_seq_len``). True if it is."""
    limit = trained_len or config.max_seq_len
    if config.position != "rope" or length <= limit:
        return False
    if not any(seen == limit for seen, _ in _warned_lengths):
        _warned_lengths.add((limit, length))
        log.warning("%d tokens, but this rotary-position model was trained on at most %d: rotary positions "
                    "extrapolate, with some loss of quality the further past the trained length", length, limit)
    return True
