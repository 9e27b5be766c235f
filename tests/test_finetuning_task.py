"""The fine-tuning base every labelled task builds on, the options its data modules share, and the configs that
hold the shared optimizer keys and read a user's own NER files."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import yaml
from hydra.utils import instantiate
from torch.utils.data import DataLoader
from torchmetrics import MeanAbsoluteError, MeanMetric

from bertlite.cli.common import CONFIG_DIR
from bertlite.data.classification import ClassificationDataModule
from bertlite.data.token_classification import TokenClassificationDataModule
from bertlite.errors import ConfigError
from bertlite.models import preset
from bertlite.models.registry import build_classifier
from bertlite.tasks import ClassificationTask, TokenClassificationTask
from bertlite.tasks.base import BertliteTask
from bertlite.tasks.finetuning import FineTuningTask
from tests.test_configs import compose_resolved

CONFIG = dataclasses.asdict(preset("bert-tiny", d_model=32, n_heads=2, d_ff=64, n_layers=2, vocab_size=60,
                                   max_seq_len=16))


class ScoreTask(FineTuningTask):
    """A head the base knows nothing of: one number per text, squared error, scored by mean absolute error."""

    task_name = "score"

    def __init__(self, model: dict, num_labels: int, label_names: list[str], **kwargs):
        super().__init__(model, num_labels, label_names, **kwargs)
        self.metric = "mae"
        self.val_mae = MeanAbsoluteError()
        self.test_mae = MeanAbsoluteError()

    def build_model(self, config):
        return build_classifier(config, 1, "mean", 0.0)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(logits.squeeze(-1), labels)

    def scores(self, stage: str) -> MeanAbsoluteError:
        return self.val_mae if stage == "val" else self.test_mae

    def evaluate(self, batch: dict, loss_metric: MeanMetric, scores: MeanAbsoluteError) -> None:
        predicted = self(batch).squeeze(-1)
        loss_metric.update(F.mse_loss(predicted, batch["labels"]), len(predicted))
        scores.update(predicted, batch["labels"])

    def log_scores(self, stage: str, loss: torch.Tensor, scores: MeanAbsoluteError) -> None:
        self.log_dict({f"{stage}/loss": loss, f"{stage}/mae": scores.compute()})


def score_batches(n: int = 4) -> DataLoader:
    """``n`` batches of 4 rows of 12 tokens, each row labelled with its mean token id / 60."""
    ids = torch.randint(5, 60, (n, 4, 12), generator=torch.Generator().manual_seed(0))
    batches = [{"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x.float().mean(-1) / 60} for x in ids]
    return DataLoader(batches, batch_size=None)


def test_a_new_head_trains_evaluates_and_checkpoints_on_the_shared_body(tmp_path):
    task = ScoreTask(CONFIG, 1, ["score"], lr=1e-2, freeze_embeddings=True, freeze_layers=1, layerwise_lr_decay=0.5,
                     max_seq_len=12)
    frozen = {n: p.detach().clone() for n, p in task.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("model.bert.embeddings", "model.bert.encoder.layers.0")) for n in frozen)
    rates = sorted({g["lr"] for g in task.parameter_groups()})
    assert rates == pytest.approx([1e-2 * 0.5, 1e-2])  # the unfrozen top layer a step below the head
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(task, score_batches(2))
    assert all(torch.equal(p, frozen[n]) for n, p in task.named_parameters() if n in frozen)
    assert task.monitor == "val/mae" and "train/loss" in trainer.callback_metrics
    metrics = trainer.validate(task, score_batches(2), verbose=False)[0]
    with torch.no_grad():
        task.eval()
        errors = [(task(b).squeeze(-1) - b["labels"]).abs() for b in score_batches(2)]
    assert metrics["val/mae"] == pytest.approx(float(torch.cat(errors).mean()), rel=1e-5)
    path = tmp_path / "score.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=False)
    assert {k: saved["bertlite"][k] for k in ("label_names", "metric", "max_seq_len")} == {
        "label_names": ["score"], "metric": "mae", "max_seq_len": 12}
    again = ScoreTask.load_from_checkpoint(path, weights_only=False)
    assert (again.hparams.layerwise_lr_decay, again.hparams.freeze_layers, again.hparams.lr) == (0.5, 1, 1e-2)


@pytest.mark.parametrize("task_class", [ClassificationTask, TokenClassificationTask, ScoreTask])
def test_every_fine_tuning_task_checks_its_label_count(task_class):
    with pytest.raises(ConfigError, match="1 label names for 2 labels"):
        task_class(CONFIG, 2, ["B-X"])


# --- data modules ------------------------------------------------------------------------------------------------

SHARED_DATA_OPTIONS = {"train_file": "t.txt", "validation_file": "v.txt", "test_file": None, "path": None,
                       "name": None, "validation_fraction": 0.3, "max_train_samples": 7, "max_seq_len": 64,
                       "batch_size": 4, "eval_batch_size": 8, "group_by_length": True, "pad_to_multiple_of": 1,
                       "num_workers": 2, "seed": 5}


@pytest.mark.parametrize("data_class", [ClassificationDataModule, TokenClassificationDataModule])
def test_data_modules_take_the_shared_options_by_keyword(data_class):
    dm = data_class(format="json", metric="auto", **SHARED_DATA_OPTIONS)
    assert dm.files == {"train": "t.txt", "validation": "v.txt", "test": None}
    for option, value in {**SHARED_DATA_OPTIONS, "format": "json", "metric": "auto"}.items():
        if not option.endswith("_file"):
            assert getattr(dm, option) == value, option
    with pytest.raises(TypeError, match="max_seq_length"):
        data_class(max_seq_length=64)  # a misspelt option is refused, not ignored


# --- configs -----------------------------------------------------------------------------------------------------

def shared_optimizer_keys() -> dict:
    return yaml.safe_load((Path(CONFIG_DIR) / "task" / "_optim.yaml").read_text())


def test_shared_optimizer_keys_are_arguments_every_task_takes():
    assert set(shared_optimizer_keys()) <= set(inspect.signature(BertliteTask).parameters)


@pytest.mark.parametrize("primary,task,own", [
    ("finetune", "classification", {}), ("finetune", "token_classification", {}),
    ("pretrain", "mlm", {"lr": 1e-3, "betas": [0.9, 0.98], "eps": 1e-6, "warmup_ratio": 0.06}),
    ("pretrain", "clm", {"lr": 1e-3, "betas": [0.9, 0.98], "eps": 1e-6, "warmup_ratio": 0.06}),
    ("pretrain", "seq2seq", {"lr": 1e-3, "betas": [0.9, 0.98], "eps": 1e-6, "warmup_ratio": 0.06})])
def test_task_configs_hold_the_shared_optimizer_keys_and_their_own_values_win(primary, task, own):
    model = {"clm": ["model=gpt-mini"], "seq2seq": ["model=transformer-mini"]}.get(task, [])
    _, config = compose_resolved(primary, [f"task={task}", *model])
    assert {k: config["task"][k] for k in shared_optimizer_keys()} == {**shared_optimizer_keys(), **own}


def write_ner_files(folder: Path) -> dict[str, str]:
    (folder / "train.txt").write_text("Kohl NNP B-PER\nvisited VBD O\nParis NNP B-LOC\n\nAnnan NNP B-PER\n")
    (folder / "train.jsonl").write_text(json.dumps({"tokens": ["Kohl", "visited", "Paris"],
                                                    "tags": ["B-PER", "O", "B-LOC"]}) + "\n"
                                        + json.dumps({"tokens": ["Annan"], "tags": ["B-PER"]}) + "\n")
    return {"conll": str(folder / "train.txt"), "ner_jsonl": str(folder / "train.jsonl")}


@pytest.mark.parametrize("data", ["conll", "ner_jsonl"])
def test_own_ner_files_need_only_a_data_option_and_the_file(data, tmp_path):
    files = write_ner_files(tmp_path)
    cfg, _ = compose_resolved("finetune", ["task=token_classification", f"data={data}",
                                           f"data.train_file={files[data]}", "data.validation_fraction=0.5"])
    dm = instantiate(cfg.data)
    assert isinstance(dm, TokenClassificationDataModule) and dm.metric == "entity_f1"
    raw = dm.load_raw()
    sentences = sorted((tuple(row["tokens"]), tuple(row["tags"])) for split in raw.values() for row in split)
    assert sentences == [(("Annan",), ("B-PER",)), (("Kohl", "visited", "Paris"), ("B-PER", "O", "B-LOC"))]
