"""Entity-level precision, recall and F1 for tagged sequences, the conlleval / seqeval convention.

An entity counts as correct only when its type and its exact span (first and last word) match a gold entity.
Spans are read as seqeval's default (non-strict) mode reads them (bertlite/data/entities.py). Scores are
micro-averaged over all entities; each type also gets its own precision, recall and F1. An undefined ratio (nothing
predicted, nothing to find) is 0, as seqeval's default ``zero_division`` gives.

The counting is plain Python and needs no seqeval; ``EntityScores`` wraps it as a torchmetrics Metric for the
Lightning task, gathering across devices and putting windows of long sentences back together before counting.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from bertlite.data.entities import entity_types, get_entities

__all__ = ["EntityScores", "count_entities", "entity_scores", "entity_types", "get_entities", "scores_from_counts"]


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


UNSEEN = -1  # the predicted tag id of a word the model never saw (it has no word piece): read as O


class EntityScores(Metric):
    """Entity counts per type over an evaluation split, gathered across processes.

    ``update(preds, target, mask)``: (B, T) predicted and gold tag ids; ``mask`` (B, T) marks the positions that are
    words (the first piece of each), in order, and each row is a whole sentence: its entities are counted at once.

    ``update(preds, target, mask, sentence, word_index)``: rows may be windows of longer sentences. ``sentence``
    (B,) names each row's sentence (its index in the split) and ``word_index`` (B, T) the word (its index in the
    sentence) at each marked position. The tags are kept per word and the sentences are put back together in
    ``compute()``, after the words of every process are gathered: an entity across a window cut, or across windows
    scored on different devices, is one entity. ``add_unseen(sentence, word_index, target)`` adds gold words that
    have no word piece, so no prediction: they are tagged O. A word given twice (a sample evaluated twice) counts
    once. ``compute()``: the dict of ``scores_from_counts``.
    """

    full_state_update = False

    def __init__(self, label_names: Sequence[str]):
        super().__init__()
        self.label_names = list(label_names)
        self.types = entity_types(self.label_names)
        self._index = {t: i for i, t in enumerate(self.types)}
        for name in ("correct", "predicted", "gold"):
            self.add_state(name, default=torch.zeros(len(self.types), dtype=torch.long), dist_reduce_fx="sum")
        for name in ("word_sentence", "word_position", "word_gold", "word_pred"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
               sentence: torch.Tensor | None = None, word_index: torch.Tensor | None = None) -> None:
        if sentence is None:
            self._count_sentences(preds, target, mask)
            return
        keep = mask.bool()
        rows = sentence.view(-1, 1).expand_as(keep)[keep]
        self._keep_words(rows, word_index[keep], target[keep], preds[keep])

    def add_unseen(self, sentence: torch.Tensor, word_index: torch.Tensor, target: torch.Tensor) -> None:
        """Gold words the model could not tag: (B,) sentences, (B, K) word indices (-1: none) and gold tag ids."""
        keep = word_index >= 0
        rows = sentence.view(-1, 1).expand_as(keep)[keep]
        self._keep_words(rows, word_index[keep], target[keep], torch.full_like(rows, UNSEEN))

    def _keep_words(self, sentence: torch.Tensor, word: torch.Tensor, gold: torch.Tensor, pred: torch.Tensor) -> None:
        # stored in the metric's float dtype (exact below 2**24 sentences), because a process that saw no batch
        # sends torchmetrics' empty placeholder of that dtype, and all processes must gather one dtype
        for state, values in zip((self.word_sentence, self.word_position, self.word_gold, self.word_pred),
                                 (sentence, word, gold, pred)):
            state.append(values.to(self.dtype))

    def _count_sentences(self, preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        gold, predicted = [], []
        for p, t, m in zip(preds.tolist(), target.tolist(), mask.bool().tolist()):
            gold.append([self.label_names[x] for x, keep in zip(t, m) if keep])
            predicted.append([self.label_names[x] for x, keep in zip(p, m) if keep])
        for state, counts in zip((self.correct, self.predicted, self.gold), count_entities(gold, predicted)):
            for t, n in counts.items():
                state[self._index[t]] += n

    def stitched_sentences(self) -> tuple[list[list[str]], list[list[str]]]:
        """The gold and predicted tags of the sentences given word by word, in sentence order. A word missing from
        a sentence (its window was not evaluated) is O in both."""
        states = [self.word_sentence, self.word_position, self.word_gold, self.word_pred]
        if any(isinstance(s, list) and not s for s in states):
            return [], []
        sentence, word, gold, pred = (dim_zero_cat(s).long().cpu() for s in states)
        key = sentence * (int(word.max()) + 1 if len(word) else 1) + word
        order = torch.argsort(key, stable=True)
        first = torch.ones(len(key), dtype=torch.bool)
        first[1:] = key[order][1:] != key[order][:-1]  # each (sentence, word) once
        order = order[first]
        sentence, word, gold, pred = sentence[order], word[order].tolist(), gold[order].tolist(), pred[order].tolist()
        gold_tags, pred_tags, at = [], [], 0
        for n in torch.unique_consecutive(sentence, return_counts=True)[1].tolist():
            length = word[at + n - 1] + 1
            g, p = ["O"] * length, ["O"] * length
            for i in range(at, at + n):
                g[word[i]] = self.label_names[gold[i]]
                p[word[i]] = "O" if pred[i] == UNSEEN else self.label_names[pred[i]]
            gold_tags.append(g)
            pred_tags.append(p)
            at += n
        return gold_tags, pred_tags

    def compute(self) -> dict[str, torch.Tensor]:
        correct, predicted, gold = (s.tolist() for s in (self.correct, self.predicted, self.gold))
        for totals, counts in zip((correct, predicted, gold), count_entities(*self.stitched_sentences())):
            for t, n in counts.items():
                totals[self._index[t]] += n
        scores = scores_from_counts(self.types, correct, predicted, gold)
        return {k: torch.tensor(v) for k, v in scores.items()}
