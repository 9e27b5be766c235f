"""Entity-level precision, recall and F1 for tagged sequences, the conlleval / seqeval convention.

An entity counts as correct only when its type and its exact span (first and last word) match a gold entity.
Spans are read as seqeval's default (non-strict) mode reads them: ``B-X`` starts an entity, ``I-X`` continues an
entity of type X, and an ``I-X`` after ``O`` or after an entity of another type starts a new entity (as conlleval
does for IOB1 data); ``E-``/``S-`` tags (IOBES) end / form an entity. Scores are micro-averaged over all entities;
each type also gets its own precision, recall and F1. An undefined ratio (nothing predicted, nothing to find) is 0,
as seqeval's default ``zero_division`` gives.

Plain Python, so it needs neither seqeval nor torch; ``EntityScores`` wraps the counts as a torchmetrics Metric
(summed across devices) for the Lightning task.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

import torch
from torchmetrics import Metric


def _split(tag: str) -> tuple[str, str]:
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
        tag, type_ = _split(chunk)
        if _ends(prev_tag, tag, prev_type, type_):
            entities.append((prev_type, begin, i - 1))
        if _starts(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return entities


def entity_types(label_names: Iterable[str]) -> list[str]:
    """The entity types a tag set names ('B-PER', 'I-PER', 'O' -> ['PER']), sorted."""
    return sorted({_split(t)[1] for t in label_names if t != "O" and _split(t)[0] != "O"})


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def _f1(p: float, r: float) -> float:
    return _ratio(2 * p * r, p + r)


def scores_from_counts(types: Sequence[str], correct: Sequence[int], predicted: Sequence[int],
                       gold: Sequence[int]) -> dict[str, float]:
    """Micro precision/recall/F1 over all types, and precision/recall/F1 per type."""
    p, r = _ratio(sum(correct), sum(predicted)), _ratio(sum(correct), sum(gold))
    out = {"entity_precision": p, "entity_recall": r, "entity_f1": _f1(p, r)}
    for t, c, n_pred, n_gold in zip(types, correct, predicted, gold):
        tp, tr = _ratio(c, n_pred), _ratio(c, n_gold)
        out.update({f"precision_{t}": tp, f"recall_{t}": tr, f"f1_{t}": _f1(tp, tr)})
    return out


def count_entities(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]
                   ) -> tuple[Counter, Counter, Counter]:
    """Per type: correct, predicted and gold entity counts over sentences (each a list of tags)."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    correct, n_pred, n_gold = Counter(), Counter(), Counter()
    for g, p in zip(gold, predicted):
        if len(g) != len(p):
            raise ValueError(f"a sentence has {len(g)} gold tags but {len(p)} predicted")
        true_set, pred_set = set(get_entities(g)), set(get_entities(p))
        n_gold.update(t for t, _, _ in true_set)
        n_pred.update(t for t, _, _ in pred_set)
        correct.update(t for t, _, _ in true_set & pred_set)
    return correct, n_pred, n_gold


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level scores of predicted tag sequences against gold ones (the types found in either)."""
    correct, n_pred, n_gold = count_entities(gold, predicted)
    types = sorted(set(n_pred) | set(n_gold))
    return scores_from_counts(types, [correct[t] for t in types], [n_pred[t] for t in types],
                              [n_gold[t] for t in types])


class EntityScores(Metric):
    """Entity counts per type, accumulated over batches of tag ids and summed across processes.

    ``update(preds, target, mask)``: (B, T) predicted and gold tag ids; ``mask`` (B, T) marks the positions that
    are words (the first piece of each), in order. ``compute()``: the dict of ``scores_from_counts``.
    """

    full_state_update = False

    def __init__(self, label_names: Sequence[str]):
        super().__init__()
        self.label_names = list(label_names)
        self.types = entity_types(self.label_names)
        self._index = {t: i for i, t in enumerate(self.types)}
        for name in ("correct", "predicted", "gold"):
            self.add_state(name, default=torch.zeros(len(self.types), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        gold, predicted = [], []
        for p, t, m in zip(preds.tolist(), target.tolist(), mask.bool().tolist()):
            gold.append([self.label_names[x] for x, keep in zip(t, m) if keep])
            predicted.append([self.label_names[x] for x, keep in zip(p, m) if keep])
        for state, counts in zip((self.correct, self.predicted, self.gold), count_entities(gold, predicted)):
            for t, n in counts.items():
                state[self._index[t]] += n

    def compute(self) -> dict[str, torch.Tensor]:
        scores = scores_from_counts(self.types, self.correct.tolist(), self.predicted.tolist(), self.gold.tolist())
        return {k: torch.tensor(v) for k, v in scores.items()}
