"""Token classification (NER): readers, WordPiece alignment, the model and its checkpoints, predictions with
character offsets, Hugging Face interop, and one tiny end-to-end CLI run (the metric: test_entity_metrics.py)."""

from __future__ import annotations

import json
import random

import pytest
import torch

import bertlite
from bertlite.checkpoints import save_checkpoint
from bertlite.data.token_classification import (IGNORE, TokenClassificationDataModule, align_tags, inside_tags,
                                                read_conll)
from bertlite.data.tokenizer import train_wordpiece
from bertlite.errors import CheckpointError, ConfigError, DataError
from bertlite.inference import TokenClassifier
from bertlite.models.config import preset
from bertlite.models.encoder import BertForTokenClassification
from bertlite.sources import read_checkpoint
from tests.conftest import TableModel, predictor_checkpoint, run_cli

FIRST = ["Angela", "Peter", "Maria", "Johann", "Kofi", "Boris", "Helmut", "Jacques"]
LAST = ["Merkel", "Blackburn", "Schmidt", "Annan", "Yeltsin", "Rodriguez", "Kohl", "Chirac"]
CITIES = ["Paris", "Berlin", "Moscow", "Nairobi", "Lisbon", "Toronto", "Brussels", "Vienna", "New York",
          "Buenos Aires"]
ORGS = [["European", "Commission"], ["United", "Nations"], ["Reuters"], ["Bundesbank"]]
LABELS = ["B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER", "O"]


def ner_sentences(n: int, seed: int) -> list[list[tuple[str, str]]]:
    """A learnable toy NER set: (word, tag) sentences in a few templates; people, cities and organisations."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        person = [(rng.choice(FIRST), "B-PER"), (rng.choice(LAST), "I-PER")]
        city = [(w, "B-LOC" if i == 0 else "I-LOC") for i, w in enumerate(rng.choice(CITIES).split())]
        org = rng.choice(ORGS)
        org = [(w, "B-ORG" if i == 0 else "I-ORG") for i, w in enumerate(org)]
        o = lambda *ws: [(w, "O") for w in ws]  # noqa: E731
        template = rng.randrange(3)
        if template == 0:
            words = person + o(rng.choice(["visited", "left", "praised"])) + city + o("on", "Monday", ".")
        elif template == 1:
            words = o("The") + org + o(rng.choice(["said", "denied"]), "that") + person + o("was", "in") + city + o(".")
        else:
            words = city + o("police", "questioned") + person + o(",", "the") + org + o("said", ".")
        sentences.append(words)
    return sentences


def write_conll(path, sentences, columns: int = 3, docstart: bool = True) -> None:
    lines = ["-DOCSTART- -X- O", ""] if docstart else []
    for sentence in sentences:
        lines += [" ".join([w, "NNP", t][:1] + (["NNP"] if columns == 3 else []) + [t]) for w, t in sentence] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def toy_texts() -> list[str]:
    return [" ".join(w for w, _ in s) for s in ner_sentences(300, seed=0)]


@pytest.fixture(scope="module")
def cased_tokenizer():
    return train_wordpiece(toy_texts(), vocab_size=120, lowercase=False)  # small: names split into several pieces


@pytest.fixture(scope="module")
def word_tokenizer():
    return train_wordpiece(toy_texts(), vocab_size=400, lowercase=False)  # the toy words are whole tokens


# --- alignment ---------------------------------------------------------------------------------------------------

def test_align_tags_labels_the_first_piece_only_or_every_piece():
    names = ["B-PER", "I-PER", "O"]
    word_ids = [None, 0, 0, 0, 1, 1, 2, None]  # [CLS] Blackburn=3 pieces, Merkel=2 pieces, . [SEP]
    tags = [0, 1, 2]  # B-PER I-PER O
    labels, starts = align_tags(word_ids, tags)
    assert labels == [IGNORE, 0, IGNORE, IGNORE, 1, IGNORE, 2, IGNORE]
    assert starts == [0, 1, 0, 0, 1, 0, 1, 0]
    labels, starts = align_tags(word_ids, tags, label_all_pieces=True, inside=inside_tags(names))
    assert labels == [IGNORE, 0, 1, 1, 1, 1, 2, IGNORE]  # B-PER's continuation pieces are I-PER
    assert starts == [0, 1, 0, 0, 1, 0, 1, 0]
    assert inside_tags(["B-MISC", "B-PER", "I-PER", "O"]) == [0, 2, 2, 3]  # no I-MISC: B-MISC stays


@pytest.mark.parametrize("all_pieces", [False, True])
def test_datamodule_aligns_tags_to_wordpieces(all_pieces, cased_tokenizer, tmp_path):
    sentence = [("Kohl", "B-PER"), ("Annanson", "I-PER"), ("visited", "O"), ("Parisian", "B-LOC"), (".", "O")]
    write_conll(tmp_path / "train.txt", [sentence] + ner_sentences(20, seed=1))
    dm = TokenClassificationDataModule(train_file=str(tmp_path / "train.txt"), validation_fraction=0.2,
                                       label_all_pieces=all_pieces, max_seq_len=32)
    dm.set_tokenizer(cased_tokenizer)
    dm.setup()
    names = dm.find_label_names()
    assert names == LABELS
    encoding = cased_tokenizer.encode([w for w, _ in sentence], is_pretokenized=True)
    row = next(r for split in ("train", "validation") for r in dm.datasets[split] if r["input_ids"] == encoding.ids)
    pieces = [encoding.word_ids.count(w) for w in range(len(sentence))]
    assert pieces[1] > 1 and pieces[3] > 1 and tok_unk(cased_tokenizer) not in encoding.ids, encoding.tokens
    expected = [IGNORE]
    for (word, tag), n in zip(sentence, pieces):
        rest = tag.replace("B-", "I-") if all_pieces else None
        expected += [names.index(tag)] + [IGNORE if rest is None else names.index(rest)] * (n - 1)
    assert row["labels"] == expected + [IGNORE]
    assert row["word_starts"] == [0] + [x for n in pieces for x in [1] + [0] * (n - 1)] + [0]
    batch = dm.collate([row, dm.datasets["train"][0]])
    assert batch["labels"].shape == batch["input_ids"].shape and (batch["labels"][:, -1] == IGNORE).all()


def tok_unk(tokenizer) -> int:
    return tokenizer.token_to_id("[UNK]")


def test_long_sentences_become_windows_that_label_every_word_once(cased_tokenizer, tmp_path):
    long = [(c, "B-LOC") for c in CITIES[:8] * 6]
    write_conll(tmp_path / "train.txt", [long] + ner_sentences(5, seed=2))
    dm = TokenClassificationDataModule(train_file=str(tmp_path / "train.txt"), validation_file=str(tmp_path /
                                       "train.txt"), max_seq_len=16)
    dm.set_tokenizer(cased_tokenizer)
    dm.setup()
    windows = [r for r in dm.datasets["train"] if r["sentence"] == 0]
    assert len(windows) > 3 and max(r["length"] for r in dm.datasets["train"]) <= 16
    assert sum(sum(r["word_starts"]) for r in windows) == len(long)  # each word labelled in one window


# --- readers and bad input --------------------------------------------------------------------------------------

def test_conll_reader_skips_docstart_and_picks_the_tag_column(tmp_path):
    path = tmp_path / "x.conll"
    path.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\nPeter NNP B-NP B-PER\n")
    assert read_conll(str(path)) == {"tokens": [["EU", "rejects"], ["Peter"]], "tags": [["B-ORG", "O"], ["B-PER"]]}
    assert read_conll(str(path), tag_column=2)["tags"] == [["B-NP", "B-VP"], ["B-NP"]]


def test_jsonl_with_named_columns(cased_tokenizer, tmp_path):
    rows = [{"words": [w for w, _ in s], "ner": [t for _, t in s]} for s in ner_sentences(12, seed=3)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dm = TokenClassificationDataModule(train_file=str(tmp_path / "train.jsonl"), tokens_column="words",
                                       tags_column="ner", validation_fraction=0.25)
    assert dm.find_label_names() == LABELS
    assert sorted(map(tuple, list(dm.load_raw()["train"]["tokens"]) + list(dm.load_raw()["validation"]["tokens"]))) == \
        sorted(tuple(r["words"]) for r in rows)
    with pytest.raises(DataError, match="column 'tags' not found; available columns: words, ner"):
        TokenClassificationDataModule(train_file=str(tmp_path / "train.jsonl"), tokens_column="words").load_raw()


def test_missing_tag_column_is_one_clear_error(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("EU\nrejects\n\nPeter\n")  # words only: no tag column
    with pytest.raises(DataError, match=r"line 1: 'EU' has 1 column\(s\).*set data.tag_column"):
        TokenClassificationDataModule(train_file=str(path)).load_raw()
    write_conll(path, ner_sentences(3, seed=4))  # word POS tag: column 1 is the POS tag, not an entity tag
    with pytest.raises(DataError, match=r"'NNP' in column 1 of the CoNLL file is not an entity tag"):
        TokenClassificationDataModule(train_file=str(path), tag_column=1).load_raw()
    with pytest.raises(DataError, match="has 3 column"):
        TokenClassificationDataModule(train_file=str(path), tag_column=5).load_raw()


def test_bad_data_errors(cased_tokenizer, tmp_path):
    with pytest.raises(DataError, match="train file not found"):
        TokenClassificationDataModule(train_file=str(tmp_path / "nope.txt")).load_raw()
    (tmp_path / "empty.txt").write_text("-DOCSTART- -X- O\n\n")
    with pytest.raises(DataError, match="the train split holds no sentences"):
        TokenClassificationDataModule(train_file=str(tmp_path / "empty.txt")).load_raw()
    write_conll(tmp_path / "train.txt", ner_sentences(10, seed=5))
    write_conll(tmp_path / "dev.txt", [[("Paris", "B-GPE")]])
    dm = TokenClassificationDataModule(train_file=str(tmp_path / "train.txt"), validation_file=str(tmp_path /
                                       "dev.txt"))
    dm.set_tokenizer(cased_tokenizer)
    with pytest.raises(DataError, match=r"validation split has tags never seen in training: \['B-GPE'\]"):
        dm.setup()
    with pytest.raises(ConfigError, match="data.format"):
        TokenClassificationDataModule(format="csv")
    (tmp_path / "ragged.txt").write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nGerman JJ B-NP\n")
    with pytest.raises(DataError, match=r"ragged.txt, line 4: 'German JJ B-NP' has 3 column\(s\) but line 1 has 4"):
        read_conll(str(tmp_path / "ragged.txt"))


def test_cli_refuses_bad_input_in_one_line(tmp_path):
    (tmp_path / "train.txt").write_text("EU\nrejects\n")
    result = run_cli("bertlite.finetune", "task=token_classification", "data=conll2003",
                     f"data.train_file={tmp_path / 'train.txt'}", "data.validation_file=null", "data.test_file=null",
                     f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "data.tag_column" in result.stderr and "Traceback" not in result.stderr
    write_conll(tmp_path / "train.txt", ner_sentences(10, seed=6))
    result = run_cli("bertlite.finetune", "data=conll2003", f"data.train_file={tmp_path / 'train.txt'}",
                     f"hydra.run.dir={tmp_path / 'run2'}")  # NER data with the default classification task
    assert result.returncode == 2 and "add task=token_classification" in result.stderr
    result = run_cli("bertlite.finetune", "task=token_classification",  # and the NER task with the default data
                     f"hydra.run.dir={tmp_path / 'run3'}")
    assert result.returncode == 2
    assert "data=conll data.train_file=" in result.stderr and "data=ner_jsonl" in result.stderr


# --- model, checkpoints, predictions, interop -------------------------------------------------------------------------

def tiny_model(tokenizer, num_labels: int = len(LABELS)) -> BertForTokenClassification:
    torch.manual_seed(0)
    config = preset("bert-tiny", vocab_size=tokenizer.get_vocab_size(), d_model=32, n_heads=2, d_ff=64,
                    max_seq_len=32)
    return BertForTokenClassification(config, num_labels).eval()


def test_checkpoints_must_carry_label_names(cased_tokenizer, tmp_path):
    ckpt = predictor_checkpoint(tiny_model(cased_tokenizer), cased_tokenizer, "token_classification",
                                label_names=LABELS)
    save_checkpoint(ckpt, tmp_path / "ok.ckpt")
    assert read_checkpoint(tmp_path / "ok.ckpt")["bertlite"]["label_names"] == LABELS
    del ckpt["bertlite"]["label_names"]
    save_checkpoint(ckpt, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match="label_names must be a non-empty list of strings in a "
                                              "token_classification checkpoint"):
        read_checkpoint(tmp_path / "bad.ckpt")


def test_predict_returns_entities_with_character_offsets(word_tokenizer, tmp_path):
    tok = word_tokenizer
    ckpt = predictor_checkpoint(tiny_model(tok), tok, "token_classification", label_names=LABELS)
    save_checkpoint(ckpt, tmp_path / "ner.ckpt")
    tagger = bertlite.load(tmp_path / "ner.ckpt")
    assert isinstance(tagger, TokenClassifier)
    table = torch.full((tok.get_vocab_size(), len(LABELS)), -5.0)
    table[:, LABELS.index("O")] = 5.0
    rules = {"Angela": "B-PER", "Merkel": "I-PER", "Kohl": "B-PER", "Annan": "I-PER", "Paris": "B-LOC",
             "Reuters": "B-ORG"}
    for word, tag in rules.items():
        (piece,) = tok.encode(word, add_special_tokens=False).ids
        table[piece] = -5.0
        table[piece, LABELS.index(tag)] = 5.0 if word != "Paris" else 3.0
    pieces = tok.encode("Annanson", add_special_tokens=False).ids
    assert len(pieces) > 1 and tok_unk(tok) not in pieces
    for piece in pieces[1:]:
        table[piece] = -5.0
        table[piece, LABELS.index("B-LOC")] = 5.0  # continuation pieces' logits are not read
    tagger.model = TableModel(table)
    texts = ["Angela Merkel visited Paris.", "  Kohl Annanson met\tAngela  Merkel (Reuters)", "nothing here"]
    entities = tagger.predict(texts)
    for text, found in zip(texts, entities):
        for e in found:
            assert text[e["start"]:e["end"]] == e["text"]
    p_paris = torch.tensor([3.0, *[-5.0] * 6]).softmax(-1).max().item()
    assert [(e["type"], e["text"], e["start"], e["end"]) for e in entities[0]] == [
        ("PER", "Angela Merkel", 0, 13), ("LOC", "Paris", 22, 27)]
    assert entities[0][1]["score"] == pytest.approx(p_paris, rel=1e-5)
    assert [(e["type"], e["text"]) for e in entities[1]] == [("PER", "Kohl Annanson"), ("PER", "Angela  Merkel"),
                                                             ("ORG", "Reuters")]
    assert entities[2] == []
    words = tagger.predict_words(texts[:1])[0]
    assert [w["word"] for w in words] == ["Angela", "Merkel", "visited", "Paris", "."]  # the pre-tokenizer's words
    # a model folder keeps the task and the labels
    tagger.model = BertForTokenClassification(tagger.config, len(LABELS)).eval()
    before = tagger.predict(texts)
    again = bertlite.load(tagger.save_pretrained(tmp_path / "folder"))
    assert isinstance(again, TokenClassifier) and again.labels == LABELS and again.predict(texts) == before


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


def test_export_to_hf_gives_transformers_logits(transformers, cased_tokenizer, tmp_path):
    from bertlite.interop import export_hf_bert, import_hf_bert

    model = tiny_model(cased_tokenizer)
    with torch.no_grad():
        model.head.classifier.bias.normal_()  # not zero: the bias must travel too
    save_checkpoint(predictor_checkpoint(model, cased_tokenizer, "token_classification", label_names=LABELS),
                    tmp_path / "ner.ckpt")
    export_hf_bert(tmp_path / "ner.ckpt", tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"]
    assert config["id2label"] == {str(i): t for i, t in enumerate(LABELS)}
    hf = transformers.AutoModelForTokenClassification.from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == "BertForTokenClassification"
    torch.manual_seed(0)
    ids = torch.randint(5, cased_tokenizer.get_vocab_size(), (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask).logits
        ours = model(ids, mask)
    torch.testing.assert_close(ours[mask.bool()], theirs[mask.bool()], atol=1e-5, rtol=0)
    # and back: the HF folder imports as a token classification checkpoint with the same labels and logits
    checkpoint, report = import_hf_bert(tmp_path / "hf")
    assert report.task == "token_classification" and report.missing == [] and report.unexpected == []
    assert checkpoint["bertlite"]["label_names"] == LABELS
    tagger = bertlite.load(f"hf:{tmp_path / 'hf'}")
    assert isinstance(tagger, TokenClassifier)
    with torch.no_grad():
        torch.testing.assert_close(tagger.model(ids, mask)[mask.bool()], theirs[mask.bool()], atol=1e-5, rtol=0)


def test_config_monitors_entity_f1():
    from tests.test_configs import compose_resolved

    _, c = compose_resolved("finetune", ["task=token_classification", "data=conll2003"])
    assert c["task"]["_target_"] == "bertlite.tasks.TokenClassificationTask"
    assert c["data"]["train_file"].endswith("conll2003/train.txt") and c["data"]["tag_column"] == -1
    assert c["callbacks"]["best_checkpoint"]["monitor"] == "val/entity_f1"


# --- end to end -----------------------------------------------------------------------------------------------------

TINY_NER = ["task=token_classification", "data=conll2003", "pretrained=null", "model=bert-tiny", "model.d_model=64",
            "model.n_heads=2", "model.d_ff=128", "model.max_seq_len=32", "data.max_seq_len=32", "data.batch_size=16",
            "tokenizer.vocab_size=300", "tokenizer.lowercase=false", "trainer.max_steps=80", "trainer.max_epochs=-1",
            "trainer.val_check_interval=40", "trainer.check_val_every_n_epoch=null", "task.lr=3e-3",
            "callbacks.progress_bar=null", "dropout=0.0"]


@pytest.mark.slow
def test_finetune_cli_learns_ner_and_predicts(tmp_path):
    for name, n, seed in [("train.txt", 300, 10), ("dev.txt", 60, 11), ("test.txt", 60, 12)]:
        write_conll(tmp_path / name, ner_sentences(n, seed))
    run_dir = tmp_path / "run"
    result = run_cli("bertlite.finetune", *TINY_NER, f"data.train_file={tmp_path / 'train.txt'}",
                     f"data.validation_file={tmp_path / 'dev.txt'}", f"data.test_file={tmp_path / 'test.txt'}",
                     f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((run_dir / "metrics.json").read_text())
    assert report["metric"] == "entity_f1" and report["labels"] == LABELS
    for split, prefix in [("validation", "val"), ("test", "test")]:
        scores = report[split]
        assert {f"{prefix}/entity_precision", f"{prefix}/entity_recall", f"{prefix}/f1_PER", f"{prefix}/f1_LOC",
                f"{prefix}/f1_ORG", f"{prefix}/loss"} <= scores.keys()
    assert report["validation"]["val/entity_f1"] > 0.8, report  # the toy task is easy once trained
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    meta = read_checkpoint(ckpt)["bertlite"]
    assert meta["task"] == "token_classification" and meta["label_names"] == LABELS
    tagger = bertlite.load(ckpt)
    assert tagger.tokenizer.encode("Paris").tokens != tagger.tokenizer.encode("paris").tokens  # cased
    text = "Angela Merkel visited Paris on Monday ."
    entities = tagger.predict([text])[0]
    assert all(text[e["start"]:e["end"]] == e["text"] for e in entities)
    assert {(e["type"], e["text"]) for e in entities} == {("PER", "Angela Merkel"), ("LOC", "Paris")}

    out = tmp_path / "preds.jsonl"
    (tmp_path / "in.txt").write_text(text + "\nThe United Nations said that Kofi Annan was in Vienna .\n")
    result = run_cli("bertlite.predict", f"checkpoint={ckpt}", f"input={tmp_path / 'in.txt'}", f"output={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert same_entities(rows[0]["entities"], entities)
    assert ("ORG", "United Nations") in {(e["type"], e["text"]) for e in rows[1]["entities"]}
    result = run_cli("bertlite.predict", f"checkpoint={ckpt}", f"text={text}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert same_entities(json.loads(result.stdout.strip().splitlines()[-1])["entities"], entities)


def same_entities(a: list[dict], b: list[dict]) -> bool:
    spans = [[(e["type"], e["text"], e["start"], e["end"]) for e in x] for x in (a, b)]
    return spans[0] == spans[1] and [e["score"] for e in a] == pytest.approx([e["score"] for e in b], abs=1e-5)
