"""Entity-level precision, recall and F1 (bertlite/tasks/entity_metrics.py) against seqeval, the reference
implementation of the conlleval convention, on tricky tag sequences and on random ones."""

from __future__ import annotations

import random

import pytest
import torch

from bertlite.tasks.entity_metrics import EntityScores, entity_scores, get_entities

TRICKY_GOLD = [
    ["B-PER", "I-PER", "O", "B-LOC"],                      # an entity at the end of the sentence
    ["I-ORG", "I-ORG", "O", "B-MISC", "I-MISC"],           # I- without B- starts an entity
    ["B-PER", "I-LOC", "I-LOC", "O", "B-ORG", "B-ORG"],    # a type change mid-entity; two adjacent entities
    ["O", "O", "O"],
    ["B-LOC", "I-LOC", "I-LOC"],
    ["B-MISC"],
]
TRICKY_PRED = [
    ["B-PER", "I-PER", "O", "I-LOC"],                      # right span at the end, as I-
    ["B-ORG", "I-ORG", "O", "B-MISC", "O"],                # a span too short
    ["B-PER", "I-PER", "I-LOC", "O", "B-ORG", "I-ORG"],    # merged where gold has two
    ["B-PER", "O", "I-PER"],                               # spurious entities
    ["B-LOC", "I-LOC", "I-ORG"],                           # the type changes at the last word
    ["O"],                                                 # a missed entity
]


def seqeval_scores(gold, pred) -> dict[str, float]:
    metrics = pytest.importorskip("seqeval.metrics")
    report = metrics.classification_report(gold, pred, output_dict=True, zero_division=0)
    out = {"entity_precision": metrics.precision_score(gold, pred, zero_division=0),
           "entity_recall": metrics.recall_score(gold, pred, zero_division=0),
           "entity_f1": metrics.f1_score(gold, pred, zero_division=0)}
    for name, row in report.items():
        if not name.endswith(" avg"):
            out.update({f"precision_{name}": row["precision"], f"recall_{name}": row["recall"],
                        f"f1_{name}": row["f1-score"]})
    return out


def test_entity_scores_equal_seqeval_on_tricky_cases():
    from seqeval.metrics.sequence_labeling import get_entities as seqeval_entities

    for tags in TRICKY_GOLD + TRICKY_PRED:
        assert get_entities(tags) == seqeval_entities(tags), tags
    ours, theirs = entity_scores(TRICKY_GOLD, TRICKY_PRED), seqeval_scores(TRICKY_GOLD, TRICKY_PRED)
    assert ours.keys() == theirs.keys()
    for key in theirs:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-12), key
    # by hand: 10 gold entities, 11 predicted, 3 exact matches (PER and LOC of sentence 1, ORG of sentence 2)
    assert (ours["entity_precision"], ours["entity_recall"]) == pytest.approx((3 / 11, 3 / 10))
    assert ours["f1_MISC"] == 0.0 and ours["recall_ORG"] == pytest.approx(1 / 3)


def test_entity_scores_equal_seqeval_on_random_tags():
    rng = random.Random(0)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG", "B-MISC"]
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(300)]
    pred = [[t if rng.random() < 0.7 else rng.choice(tags) for t in sentence] for sentence in gold]
    ours, theirs = entity_scores(gold, pred), seqeval_scores(gold, pred)
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_the_torchmetrics_metric_counts_words_only():
    names = sorted({t for s in TRICKY_GOLD + TRICKY_PRED for t in s})
    metric = EntityScores(names)
    width = 2 * max(map(len, TRICKY_GOLD)) + 2
    for start in (0, 3):  # two batches; each word is followed by a continuation piece, which is masked
        gold = torch.zeros(3, width, dtype=torch.long)
        pred = torch.full((3, width), names.index("B-PER"))  # the masked positions would be entities
        mask = torch.zeros(3, width, dtype=torch.long)
        for row, (g, p) in enumerate(zip(TRICKY_GOLD[start:start + 3], TRICKY_PRED[start:start + 3])):
            for pos, gt, pt in zip(range(1, width, 2), g, p):
                gold[row, pos], pred[row, pos], mask[row, pos] = names.index(gt), names.index(pt), 1
        metric.update(pred, gold, mask)
    computed = {k: float(v) for k, v in metric.compute().items()}
    assert computed == pytest.approx(entity_scores(TRICKY_GOLD, TRICKY_PRED), abs=1e-6)
