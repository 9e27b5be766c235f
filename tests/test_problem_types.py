"""Regression and multi-label classification: the problem type read from the labels, the metrics against scipy,
a tiny run of each with known answers, predictions from Python and the CLI, and the round trip through HF."""

from __future__ import annotations

import json
import random

import pytest
import torch

from bertlite.data.classification import ClassificationDataModule
from bertlite.errors import BertliteError, ConfigError, DataError
from bertlite.inference import load
from bertlite.tasks.classification import ClassificationTask, build_metrics, resolve_metric
from tests.conftest import run_cli

TINY = ["data=csv", "pretrained=null", "model=bert-tiny", "model.d_model=64", "model.n_heads=2", "model.d_ff=128",
        "model.max_seq_len=32", "data.max_seq_len=32", "data.batch_size=16", "tokenizer.vocab_size=120",
        "trainer.max_steps=120", "trainer.max_epochs=-1", "trainer.val_check_interval=60",
        "trainer.check_val_every_n_epoch=null", "task.lr=3e-3", "callbacks.progress_bar=null", "dropout=0.0"]
TOPICS = {"ball": "sport", "vote": "politics", "song": "music"}  # a row has a label iff its text has the word
FILLER = ["the", "a", "day", "new", "old", "city", "man", "woman", "said", "after", "with", "from"]


def synthetic_rows(n: int, seed: int) -> list[dict]:
    """Texts of filler words with 0 to 3 topic words: the labels (a set) and a score (1.5 per topic word, 0.5 per
    "very") follow from the words alone."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        topics = [w for w in TOPICS if rng.random() < 0.4]
        very = rng.randint(0, 2)
        words = rng.choices(FILLER, k=rng.randint(4, 8)) + topics + ["very"] * very
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "topics": sorted(TOPICS[w] for w in topics),
                     "topic_string": "|".join(sorted(TOPICS[w] for w in topics)),
                     "score": 1.5 * len(topics) + 0.5 * very})
    return rows


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def synthetic_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("problem_types")
    return (write_jsonl(folder / "train.jsonl", synthetic_rows(480, 0)),
            write_jsonl(folder / "dev.jsonl", synthetic_rows(120, 1)))


def datamodule(train, label_column, **kwargs) -> ClassificationDataModule:
    return ClassificationDataModule(train_file=train, label_column=label_column, **kwargs)


# --- the problem type and its bad input -----------------------------------------------------------------------------

def test_auto_reads_the_problem_type_from_the_labels(synthetic_files, tmp_path, caplog):
    train, _ = synthetic_files
    caplog.set_level("INFO")
    regression = datamodule(train, "score")
    assert regression.find_label_names() == ["score"] and regression.problem_type == "regression"
    assert "holds numbers (a float column), so regression" in caplog.text
    lists = datamodule(train, "topics")
    assert lists.find_label_names() == ["music", "politics", "sport"] and lists.problem_type == "multi_label"
    split = datamodule(train, "topic_string", label_separator="|")
    assert split.find_label_names() == ["music", "politics", "sport"] and split.problem_type == "multi_label"
    csv = tmp_path / "int.csv"
    csv.write_text("text,label\n" + "a b,1\nc d,0\n" * 10)
    single = datamodule(str(csv), "label")
    assert single.find_label_names() == ["0", "1"] and single.problem_type == "single_label"


def test_an_empty_label_list_means_no_labels(synthetic_files):
    from tokenizers import Tokenizer, models, pre_tokenizers

    train, _ = synthetic_files
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *FILLER, *TOPICS, "very"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    dm = datamodule(train, "topics", tokenizer=tokenizer, validation_fraction=0.1)
    dm.setup()
    rows = dm.load_raw()["train"]
    labels = dm.datasets["train"]["label"]  # multi-hot, in the order of the label names
    for raw, hot in zip(rows.select(range(50)), labels[:50]):
        assert hot == [float(name in raw["topics"]) for name in dm.label_names]
    assert any(not r for r in rows["topics"]) and [0.0, 0.0, 0.0] in labels
    assert dm.collate([dm.datasets["train"][0]])["labels"].dtype == torch.float32


def test_bad_labels_each_get_one_clear_error(synthetic_files, tmp_path):
    train, _ = synthetic_files
    with pytest.raises(DataError, match=r"problem_type=single_label but column 'score' holds numbers such as .*"
                                        r"Set data.problem_type=regression"):
        datamodule(train, "score", problem_type="single_label").find_label_names()
    with pytest.raises(DataError, match="holds lists of labels: set data.problem_type=multi_label"):
        datamodule(train, "topics", problem_type="single_label").find_label_names()
    with pytest.raises(DataError, match="set data.label_separator"):
        datamodule(train, "topic_string", problem_type="multi_label").find_label_names()
    with pytest.raises(DataError, match="not a number"):
        datamodule(train, "text", problem_type="regression").find_label_names()
    with pytest.raises(DataError, match="data.problem_type='binary'"):
        datamodule(train, "topics", problem_type="binary")
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"text": "a b", "tags": []}, {"text": "c", "tags": []}])
    with pytest.raises(DataError, match="every training row has an empty label list"):
        datamodule(empty, "tags").find_label_names()
    unseen = write_jsonl(tmp_path / "unseen.jsonl", [{"text": "a ball", "topics": ["sport", "weather"]}])
    dm = datamodule(train, "topics", validation_file=unseen)
    with pytest.raises(DataError, match=r"validation split has labels never seen in training: \['weather'\]"):
        dm.check_labels("validation", dm.load_raw()["validation"], dm.find_label_names())
    with pytest.raises(ConfigError, match="class_weights weigh the classes of single-label data"):
        datamodule(train, "topics").label_counts()
    with pytest.raises(ConfigError, match="does not apply to regression"):
        resolve_metric("acc", 1, "regression")


# --- metrics -------------------------------------------------------------------------------------------------------

def test_pearson_and_spearman_equal_scipy():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 26, (300,), generator=g).float() / 5  # scores 0..5 in steps of 0.2: many ties
    preds = labels + torch.randn(300, generator=g) * 1.5
    metrics = build_metrics(1, "regression")
    for start in range(0, 300, 64):  # in batches, as validation feeds them
        metrics.update(preds[start:start + 64], labels[start:start + 64])
    values = metrics.compute()
    assert abs(values["pearson"].item() - stats.pearsonr(preds.numpy(), labels.numpy())[0]) < 1e-6
    assert abs(values["spearman"].item() - stats.spearmanr(preds.numpy(), labels.numpy())[0]) < 1e-6


def test_multi_label_metrics_and_losses_by_hand():
    task = ClassificationTask({"arch": "bert", "vocab_size": 50, "d_model": 32, "n_layers": 1, "n_heads": 2,
                               "d_ff": 64, "max_seq_len": 16}, num_labels=3, label_names=["a", "b", "c"],
                               problem_type="multi_label", threshold=0.3)
    logits = torch.tensor([[2.0, -1.0, -0.5], [-2.0, 0.1, -3.0]])  # sigmoid: [.88 .27 .38], [.12 .52 .05]
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    bce = -(labels * logits.sigmoid().log() + (1 - labels) * (1 - logits.sigmoid()).log()).mean()
    torch.testing.assert_close(task.loss(logits, labels), bce)
    task.val_metrics.update(task.predictions(logits), labels.long())
    values = task.val_metrics.compute()  # predicted sets at 0.3: {a, c}, {b}; true: {a}, {b, c}: tp 2, fp 1, fn 1
    assert values["val/micro_f1"].item() == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert values["val/exact_match"].item() == 0.0
    regression = ClassificationTask(task.hparams.model, num_labels=1, label_names=["score"], problem_type="regression")
    torch.testing.assert_close(regression.loss(torch.tensor([[1.0], [3.0]]), torch.tensor([2.0, 2.0])),
                               torch.tensor(1.0))


# --- end to end ----------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("problem", ["multi_label", "regression"])
def test_learns_known_answers_predicts_and_exports_to_hf(problem, synthetic_files, tmp_path):
    """A tiny model learns the synthetic rule; predictions from Python and bertlite-predict agree; the HF export
    carries the problem type and gives transformers the same outputs, and importing it back predicts the same."""
    transformers = pytest.importorskip("transformers")
    train, dev = synthetic_files
    label = {"multi_label": "topics", "regression": "score"}[problem]
    run_dir = tmp_path / "run"
    result = run_cli("bertlite.finetune", *TINY, f"data.train_file={train}", f"data.validation_file={dev}",
                     f"data.label_column={label}", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())["validation"]
    if problem == "multi_label":
        assert metrics["val/micro_f1"] >= 0.95 and metrics["val/macro_f1"] >= 0.95, metrics
    else:
        assert metrics["val/pearson"] >= 0.9 and metrics["val/spearman"] >= 0.9, metrics

    ckpt = run_dir / "checkpoints" / "best.ckpt"
    model = load(ckpt)
    texts = ["the ball and the song", "a new day", "very very vote from the city"]
    predicted = model.predict(texts)
    if problem == "multi_label":
        assert predicted == [["music", "sport"], [], ["politics"]]
    else:
        assert predicted == pytest.approx([3.0, 0.0, 2.5], abs=0.4)
        with pytest.raises(BertliteError, match="use predict"):
            model.predict_proba(texts)
    result = run_cli("bertlite.predict", f"checkpoint={ckpt}", "text=the ball and the song")
    row = json.loads(result.stdout.strip().splitlines()[-1])
    if problem == "multi_label":
        assert row["labels"] == ["music", "sport"] and row["p_sport"] > 0.5 > row["p_politics"]
    else:
        assert row["score"] == pytest.approx(predicted[0], abs=1e-5)

    out = tmp_path / "hf"
    result = run_cli("bertlite.cli.convert", "to-hf", str(ckpt), f"out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert hf.config.problem_type == {"multi_label": "multi_label_classification", "regression": "regression"}[problem]
    enc = transformers.AutoTokenizer.from_pretrained(out)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = hf(**enc).logits
    theirs = theirs.sigmoid() if problem == "multi_label" else theirs
    torch.testing.assert_close(model.scores(texts), theirs, atol=1e-5, rtol=0)
    back = load(f"hf:{out}")  # imported: the problem type read from config.json
    assert back.problem_type == problem
    assert back.predict(texts) == (pytest.approx(predicted, abs=1e-5) if problem == "regression" else predicted)
