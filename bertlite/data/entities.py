"""Entities from a sentence's tags, read as seqeval's default (non-strict) mode reads them.

``B-X`` starts an entity, ``I-X`` continues an entity of type X, and an ``I-X`` after ``O`` or after an entity of
another type starts a new entity (as conlleval does for IOB1 data); ``E-``/``S-`` tags (IOBES) end / form an entity.
Plain Python: the metric (bertlite/tasks/entity_metrics.py) and inference (bertlite/inference.py) both read
entities here, and inference must not pull in Lightning.
"""

from __future__ import annotations

from typing import Iterable, Sequence


def split_tag(tag: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', '_'), as seqeval splits a tag (prefix first)."""
    return tag[0], tag[1:].split("-", maxsplit=1)[-1] or "_"


def _ends(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """Whether the entity that holds the previous word ends before this one."""
    return (prev_tag in ("E", "S") or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
            or (prev_tag not in ("O", ".") and prev_type != type_))


def _starts(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """Whether an entity starts at this word."""
    return (tag in ("B", "S") or (prev_tag in ("E", "S", "O") and tag in ("E", "I"))
            or (tag not in ("O", ".") and prev_type != type_))


def get_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The entities of one sentence's tags: (type, first word, last word), inclusive, in order."""
    entities = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, chunk in enumerate([*tags, "O"]):
        tag, type_ = split_tag(chunk)
        if _ends(prev_tag, tag, prev_type, type_):
            entities.append((prev_type, begin, i - 1))
        if _starts(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return entities


def entity_types(label_names: Iterable[str]) -> list[str]:
    """The entity types a tag set names ('B-PER', 'I-PER', 'O' -> ['PER']), sorted."""
    return sorted({split_tag(t)[1] for t in label_names if t != "O" and split_tag(t)[0] != "O"})
