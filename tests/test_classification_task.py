"""The classification LightningModule: metrics by GLUE's convention, layer-wise LR decay, freezing, pooling."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bertlite.errors import ConfigError
from bertlite.models import BertForSequenceClassification, preset
from bertlite.models.heads import pool
from bertlite.tasks import ClassificationTask
from bertlite.tasks.classification import resolve_metric

CONFIG = dataclasses.asdict(preset("bert-tiny", d_model=64, n_heads=2, d_ff=128, n_layers=2, vocab_size=100,
                                   max_seq_len=32))


def test_metric_convention():
    assert resolve_metric("auto", 2) == "acc" and resolve_metric("auto", 5) == "macro_f1"
    assert resolve_metric("accuracy", 2) == "acc" and resolve_metric("mcc", 2) == "mcc"
    with pytest.raises(ConfigError):
        resolve_metric("f1", 3)
    with pytest.raises(ConfigError):
        resolve_metric("bleu", 2)


def test_layerwise_lr_decay_gives_lower_layers_smaller_rates():
    task = ClassificationTask(CONFIG, num_labels=2, label_names=["a", "b"], lr=1e-3, layerwise_lr_decay=0.5)
    groups = task.parameter_groups()
    rate = {}
    for g in groups:
        for p in g["params"]:
            rate[id(p)] = g["lr"]
    m = task.model
    assert rate[id(m.head.classifier.weight)] == pytest.approx(1e-3)
    assert rate[id(m.bert.encoder.layers[1].feed_forward.up.weight)] == pytest.approx(0.5e-3)
    assert rate[id(m.bert.encoder.layers[0].feed_forward.up.weight)] == pytest.approx(0.25e-3)
    assert rate[id(m.bert.embeddings.token.weight)] == pytest.approx(0.125e-3)
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))


def test_freezing():
    task = ClassificationTask(CONFIG, num_labels=2, label_names=["a", "b"], freeze_embeddings=True, freeze_layers=1)
    m = task.model
    assert not any(p.requires_grad for p in m.bert.embeddings.parameters())
    assert not any(p.requires_grad for p in m.bert.encoder.layers[0].parameters())
    assert all(p.requires_grad for p in m.bert.encoder.layers[1].parameters())
    trainable = {id(p) for g in task.parameter_groups() for p in g["params"]}
    assert id(m.bert.embeddings.token.weight) not in trainable
    with pytest.raises(ConfigError):
        ClassificationTask(CONFIG, num_labels=2, label_names=["a", "b"], freeze_layers=3)


def test_pooling():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float).view(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    assert torch.equal(pool(hidden, mask, "cls"), hidden[:, 0])
    assert torch.allclose(pool(hidden, mask, "mean")[1], hidden[1, :2].mean(0))
    assert torch.equal(pool(hidden, mask, "last"), torch.stack([hidden[0, 3], hidden[1, 1]]))


def test_classifier_ignores_padding():
    model = BertForSequenceClassification(preset("bert-tiny", **{k: CONFIG[k] for k in
                                                                ("d_model", "n_heads", "d_ff", "n_layers",
                                                                 "vocab_size", "max_seq_len")}), 3, "mean").eval()
    ids = torch.randint(5, 100, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(1, 6), torch.zeros(1, 4)], 1).long()
    with torch.no_grad():
        torch.testing.assert_close(model(ids), model(padded, mask), atol=1e-5, rtol=0)


def test_class_weights_weigh_the_training_loss_by_hand():
    """task.class_weights: the training loss is sum_i w[y_i] * CE_i / sum_i w[y_i], computed here by hand."""
    import math

    from bertlite.tasks.classification import class_weights

    task = ClassificationTask(CONFIG, num_labels=3, label_names=["a", "b", "c"], class_weights=[1.0, 3.0, 0.5])
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]])
    labels = torch.tensor([0, 1, 2, 1])
    w = [1.0, 3.0, 0.5]
    ce = [math.log(sum(math.exp(v) for v in row)) - row[y] for row, y in zip(logits.tolist(), labels.tolist())]
    expected = sum(w[y] * c for y, c in zip(labels.tolist(), ce)) / sum(w[y] for y in labels.tolist())
    assert task.loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    unweighted = ClassificationTask(CONFIG, num_labels=3, label_names=["a", "b", "c"])
    assert unweighted.loss(logits, labels).item() == pytest.approx(sum(ce) / 4, rel=1e-6)
    # auto: n / (k * n_c), scikit-learn's "balanced"
    assert class_weights("auto", {"neg": 6, "pos": 2}, ["neg", "pos"]) == [8 / 12, 8 / 4]
    assert class_weights([2, 1], {"neg": 6, "pos": 2}, ["neg", "pos"]) == [2.0, 1.0]
    assert class_weights(None, {}, ["neg", "pos"]) is None
    for bad in ([1.0], [1.0, -1.0], "often"):
        with pytest.raises(ConfigError, match="task.class_weights"):
            class_weights(bad, {"neg": 6, "pos": 2}, ["neg", "pos"])
