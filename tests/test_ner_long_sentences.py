"""NER on sentences longer than data.max_seq_len and on words the normalizer empties: every gold entity is scored.

Long sentences become overlapping windows of whole words (bertlite/data/word_windows.py); the metric puts them back
together before counting entities; a word with no word piece is predicted O. Inference reads long texts the same way.
The models here are lookup tables (logits by token id), so the right answer is known without training.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random

import pytest
import torch

import bertlite
from bertlite.checkpoints import save_checkpoint
from bertlite.data.token_classification import IGNORE, TokenClassificationDataModule
from bertlite.data.tokenizer import train_wordpiece
from bertlite.errors import ConfigError
from bertlite.models.config import preset
from bertlite.models.encoder import BertForTokenClassification
from bertlite.tasks.entity_metrics import entity_scores
from bertlite.tasks.token_classification import TokenClassificationTask
from tests.conftest import TableModel, predictor_checkpoint

LABELS = ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]
ENTITY_WORDS = {"Angela": "B-PER", "Merkel": "I-PER", "Paris": "B-LOC", "Kohl": "B-PER", "Vienna": "B-LOC"}
FILLER = ["the", "minister", "said", "on", "Monday", "that", "talks", "went", "well", "and", "would", "go", "on"]
EMPTY_WORDS = ["\u200b", "\xad", "\ufeff", "\x00"]  # the BERT normalizer removes each: no word piece


@pytest.fixture(scope="module")
def tokenizer():
    text = " ".join(list(ENTITY_WORDS) + FILLER)
    return train_wordpiece([text] * 50, vocab_size=120, lowercase=False)  # every word above is one piece


def write_jsonl(path, sentences: list[list[tuple[str, str]]]) -> str:
    path.write_text("".join(json.dumps({"tokens": [w for w, _ in s], "tags": [t for _, t in s]}) + "\n"
                            for s in sentences))
    return str(path)


def table_model(tokenizer, rules: dict[str, str]) -> torch.nn.Module:
    """Logits by token id: each word of ``rules`` gets its tag, every other token O."""
    table = torch.full((tokenizer.get_vocab_size(), len(LABELS)), -5.0)
    table[:, LABELS.index("O")] = 5.0
    for word, tag in rules.items():
        (piece,) = tokenizer.encode(word, add_special_tokens=False).ids
        table[piece] = -5.0
        table[piece, LABELS.index(tag)] = 5.0
    return TableModel(table)


def validation_scores(dm: TokenClassificationDataModule, model: torch.nn.Module, tokenizer,
                      batches=None) -> dict[str, float]:
    """The task's validation metric over the data module's validation loader, with ``model`` as the network."""
    config = preset("bert-tiny", vocab_size=tokenizer.get_vocab_size(), d_model=16, n_heads=2, d_ff=32,
                    n_layers=1, max_seq_len=dm.max_seq_len)
    task = TokenClassificationTask(dataclasses.asdict(config), len(LABELS), LABELS)
    task.model = model
    for i, batch in enumerate(batches if batches is not None else dm.val_dataloader()):
        task.validation_step(batch, i)
    return {k: float(v) for k, v in task.val_scores.compute().items()}


def setup_data(tmp_path, tokenizer, validation, max_seq_len=32, **options) -> TokenClassificationDataModule:
    train = [[("Angela", "B-PER"), ("Merkel", "I-PER"), ("visited", "O"), ("Paris", "B-LOC"), ("Vienna", "I-LOC")]] * 4
    dm = TokenClassificationDataModule(train_file=write_jsonl(tmp_path / "train.jsonl", train),
                                       validation_file=write_jsonl(tmp_path / "dev.jsonl", validation),
                                       max_seq_len=max_seq_len, eval_batch_size=2, **options)
    dm.set_tokenizer(tokenizer)
    dm.setup()
    return dm


def test_entities_past_the_length_and_on_words_without_pieces_are_counted(tokenizer, tmp_path):
    # four gold entities: two at the start, one on a zero-width space, one far past 32 tokens
    sentence = ([("Angela", "B-PER"), ("Merkel", "I-PER"), ("visited", "O"), ("Paris", "B-LOC"),
                 ("\u200b", "B-LOC")] + [(w, "O") for w in FILLER * 3] + [("Kohl", "B-PER"), (".", "O")])
    assert len(tokenizer.encode([w for w, _ in sentence], is_pretokenized=True).ids) > 40
    dm = setup_data(tmp_path, tokenizer, [sentence])
    # the table tags every word that has a piece with its gold tag
    scores = validation_scores(dm, table_model(tokenizer, ENTITY_WORDS), tokenizer)
    assert scores["entity_precision"] == 1.0  # Angela Merkel, Paris and Kohl: all found, all right
    assert scores["entity_recall"] == pytest.approx(3 / 4)  # the LOC on '\u200b' cannot be found
    assert scores["recall_PER"] == 1.0 and scores["recall_LOC"] == pytest.approx(1 / 2)


def random_sentences(n: int, seed: int) -> list[list[tuple[str, str]]]:
    """Long sentences of random words and random tags, some words without pieces (entities that span window cuts,
    I- after O, and entities on empty words all occur)."""
    rng = random.Random(seed)
    words = list(ENTITY_WORDS) + FILLER + EMPTY_WORDS
    return [[(rng.choice(words), rng.choice(LABELS)) for _ in range(rng.randint(1, 60))] for _ in range(n)]


def word_predictions(model: TableModel, tokenizer, sentence: list[tuple[str, str]]) -> list[str]:
    """What a token-only model predicts for each word, reading its first piece; O for a word without pieces."""
    tags = []
    for word, _ in sentence:
        ids = tokenizer.encode(word, add_special_tokens=False).ids
        tags.append(LABELS[int(model.table[ids[0]].argmax())] if ids else "O")
    return tags


def test_windows_put_back_together_score_as_whole_sentences_and_as_seqeval(tokenizer, tmp_path):
    seqeval = pytest.importorskip("seqeval.metrics")
    sentences = random_sentences(12, seed=0)
    torch.manual_seed(0)
    model = TableModel(torch.randn(tokenizer.get_vocab_size(), len(LABELS)))  # a tag per token, many entities
    windowed = setup_data(tmp_path, tokenizer, sentences, max_seq_len=12, stride=3)
    whole = setup_data(tmp_path, tokenizer, sentences, max_seq_len=128)
    assert len(windowed.datasets["validation"]) > 2 * len(sentences) and len(whole.datasets["validation"]) == 12
    gold = [[t for _, t in s] for s in sentences]
    predicted = [word_predictions(model, tokenizer, s) for s in sentences]
    expected = entity_scores(gold, predicted)
    assert expected["entity_f1"] == pytest.approx(seqeval.f1_score(gold, predicted, zero_division=0), abs=1e-12)
    assert 0 < expected["entity_f1"] < 1
    for dm in (windowed, whole):
        assert validation_scores(dm, model, tokenizer) == pytest.approx(expected, abs=1e-6)


def test_windows_scored_on_different_devices_or_twice_are_put_together_once(tokenizer, tmp_path):
    sentences = random_sentences(6, seed=1)
    torch.manual_seed(1)
    model = TableModel(torch.randn(tokenizer.get_vocab_size(), len(LABELS)))
    dm = setup_data(tmp_path, tokenizer, sentences, max_seq_len=10, stride=2)
    batches = list(dm.val_dataloader())
    expected = validation_scores(dm, model, tokenizer, batches)
    # two devices, each with every other batch: the windows of one sentence land on both
    config = preset("bert-tiny", vocab_size=tokenizer.get_vocab_size(), d_model=16, n_heads=2, d_ff=32, n_layers=1)
    devices = [TokenClassificationTask(dataclasses.asdict(config), len(LABELS), LABELS) for _ in range(2)]
    for rank, task in enumerate(devices):
        task.model = model
        for i, batch in enumerate(batches[rank::2]):
            task.validation_step(batch, i)
    devices[0].val_scores.merge_state(devices[1].val_scores)  # what gathering across processes does
    assert {k: float(v) for k, v in devices[0].val_scores.compute().items()} == pytest.approx(expected)
    # a padding distributed sampler repeats samples: each word still counts once
    assert validation_scores(dm, model, tokenizer, batches + batches[:2]) == pytest.approx(expected)


def test_every_word_is_labelled_in_exactly_one_window(tokenizer, tmp_path):
    sentences = random_sentences(10, seed=2)
    dm = setup_data(tmp_path, tokenizer, sentences, max_seq_len=12, stride=4)
    for split in ("train", "validation"):
        for row in dm.datasets[split]:
            assert row["length"] <= 12 and row["input_ids"][0] == tokenizer.token_to_id("[CLS]")
    labelled = {}  # (sentence, word) -> times labelled
    for row in dm.datasets["validation"]:
        for w, label in zip(row["word_index"], row["labels"]):
            if w >= 0:
                assert label != IGNORE
                labelled[row["sentence"], w] = labelled.get((row["sentence"], w), 0) + 1
    with_pieces = {(i, w) for i, s in enumerate(sentences) for w, (word, _) in enumerate(s)
                   if tokenizer.encode(word, add_special_tokens=False).ids}
    assert set(labelled) == with_pieces and set(labelled.values()) == {1}
    unseen = {(r["sentence"], w) for r in dm.datasets["validation"] for w in r.get("unseen_words", [])}
    assert unseen == {(i, w) for i, s in enumerate(sentences) for w in range(len(s))} - with_pieces
    train_labels = sum(label != IGNORE for r in dm.datasets["train"] for label in r["labels"])
    assert train_labels == 20  # four 5-word training sentences, each word labelled once


@pytest.mark.parametrize("seed", range(20))
def test_planned_windows_fit_overlap_by_stride_and_score_each_word_once(seed):
    from bertlite.data.word_windows import SPECIAL_TOKENS, plan_windows, scored_words

    rng = random.Random(seed)
    counts = [rng.choice([0, 1, 1, 1, 2, 3]) for _ in range(rng.randint(0, 80))] + [rng.choice([0, 25])]
    max_seq_len = rng.randint(4, 20)
    stride = rng.randint(0, max_seq_len - SPECIAL_TOKENS - 1)
    windows = plan_windows(counts, max_seq_len, stride)
    budget = max_seq_len - SPECIAL_TOKENS
    for window in windows:
        assert window == sorted(window) and (len(window) == 1 or sum(counts[w] for w in window) <= budget)
    for a, b in zip(windows, windows[1:]):
        shared = set(a) & set(b)
        assert b[0] > a[0] and sum(counts[w] for w in shared) <= stride and set(b) - set(a)
    scored = scored_words(windows, counts)
    flat = [w for words in scored for w in words]
    assert sorted(flat) == [w for w, n in enumerate(counts) if n > 0]  # each word with pieces once
    assert all(set(words) <= set(window) for words, window in zip(scored, windows))


def test_stride_must_leave_room_to_move_on(tmp_path):
    with pytest.raises(ConfigError, match=r"data.stride=14: .* integer from 0 to 13"):
        TokenClassificationDataModule(max_seq_len=16, stride=14)
    assert TokenClassificationDataModule(max_seq_len=128).stride == 32  # null: a quarter of max_seq_len


def test_log_counts_windowed_sentences_and_words_without_pieces(tokenizer, tmp_path, caplog):
    long = [(w, "O") for w in FILLER * 4]
    with caplog.at_level(logging.INFO, logger="bertlite.data.token_classification"):
        setup_data(tmp_path, tokenizer, [long, long[:3], [("\u200b", "B-PER"), ("\xad", "O"), ("Paris", "B-LOC")]])
    text = caplog.text
    assert "validation: 2 sentences longer than data.max_seq_len=32 tokens were split into" not in text
    assert "validation: 1 sentences longer than data.max_seq_len=32 tokens were split into 2 overlapping" in text
    assert "validation: 2 words (1 of them tagged as entities) have no word piece" in text
    assert "cut to data.max_seq_len" not in text


def test_predict_tags_every_word_of_a_long_text(tokenizer, tmp_path):
    config = preset("bert-tiny", vocab_size=tokenizer.get_vocab_size(), d_model=16, n_heads=2, d_ff=32, n_layers=1,
                    max_seq_len=512)
    save_checkpoint(predictor_checkpoint(BertForTokenClassification(config, len(LABELS)), tokenizer,
                                         "token_classification", label_names=LABELS, max_seq_len=512),
                    tmp_path / "ner.ckpt")
    tagger = bertlite.load(tmp_path / "ner.ckpt")
    torch.manual_seed(2)
    tagger.model = TableModel(torch.randn(tokenizer.get_vocab_size(), len(LABELS)))
    words = [w for w, _ in random_sentences(1, seed=3)[0] if w not in EMPTY_WORDS] * 3
    text = " ".join(words + ["Angela", "Merkel", "visited", "Vienna", "\u200b", "."])
    whole = tagger.predict_words([text, "Kohl"])
    assert [w["word"] for w in whole[0]] == words + ["Angela", "Merkel", "visited", "Vienna", "."]
    tagger.max_seq_len = 12  # the text is now many windows (sharing 12 // 4 = 3 pieces)
    assert tagger.predict_words([text, "Kohl"]) == whole
    assert tagger.predict_words([text, "Kohl"], stride=0) == whole
    tagger.model = table_model(tokenizer, ENTITY_WORDS)
    entities = tagger.predict([text])[0]
    assert [(e["type"], e["text"]) for e in entities[-2:]] == [("PER", "Angela Merkel"), ("LOC", "Vienna")]
    assert all(text[e["start"]:e["end"]] == e["text"] for e in entities)
