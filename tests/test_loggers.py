"""Experiment trackers: one tiny pretraining logs to CSV, MLflow, W&B (offline) and TensorBoard at once, and each
tracker's own reader gives back the CSV logger's numbers."""

from __future__ import annotations

import csv
import json
import struct
import sys

import pytest

from tests.conftest import TINY_RUN

pytest.importorskip("mlflow")
pytest.importorskip("wandb")
pytest.importorskip("tensorboard")

METRIC = "train/loss"


@pytest.fixture(scope="session")
def tracked_run(tiny_corpus, tmp_path_factory):
    """bertlite-pretrain logger=[csv,mlflow,wandb,tensorboard], in this process."""
    from bertlite.cli import pretrain

    run_dir = tmp_path_factory.mktemp("tracked")
    argv = ["bertlite-pretrain", *TINY_RUN, "data=text_files", f"data.train_files={tiny_corpus}",
            "trainer.max_steps=6", "trainer.val_check_interval=3", "logger=[csv,mlflow,wandb,tensorboard]",
            "logger.wandb.offline=true", f"hydra.run.dir={run_dir}"]
    patch = pytest.MonkeyPatch()
    patch.setattr(sys, "argv", argv)
    patch.setenv("WANDB_SILENT", "true")
    try:
        pretrain.main()
    finally:
        patch.undo()
    return run_dir


def csv_history(run_dir, key: str) -> dict[int, float]:
    with open(run_dir / "logs" / "metrics.csv", newline="") as f:
        return {int(row["step"]): float(row[key]) for row in csv.DictReader(f) if row.get(key)}


def test_mlflow_client_reads_back_the_csv_metrics(tracked_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tracked_run / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("pretrain")
    (run,) = client.search_runs([experiment.experiment_id])
    expected = csv_history(tracked_run, METRIC)
    assert len(expected) >= 5
    assert {m.step: m.value for m in client.get_metric_history(run.info.run_id, METRIC)} == expected
    val = "val/loss"
    assert {m.step: m.value for m in client.get_metric_history(run.info.run_id, val)} == csv_history(tracked_run, val)


def wandb_history(run_file) -> list[dict]:
    """The history rows of an offline W&B run file, parsed with W&B's own protobuf messages. The file is a
    LevelDB-style log: 32 KiB blocks of chunks, each with a 7-byte header (checksum, length, type: 1 full,
    2 first, 3 middle, 4 last) and, once per file, a 7-byte W&B header at the start."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    block, pos, pending, rows = 32 * 1024, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


def test_wandb_offline_run_file_holds_the_csv_metrics(tracked_run):
    (run_file,) = (tracked_run / "wandb").glob("offline-run-*/run-*.wandb")
    logged = {int(row["trainer/global_step"]): row[METRIC] for row in wandb_history(run_file) if METRIC in row}
    assert logged == csv_history(tracked_run, METRIC)


def test_tensorboard_events_hold_the_csv_metrics(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tracked_run / "tensorboard"))
    events.Reload()
    logged = {e.step: e.value for e in events.Scalars(METRIC)}
    expected = csv_history(tracked_run, METRIC)
    assert logged.keys() == expected.keys()
    assert all(abs(logged[s] - expected[s]) <= 1e-6 * abs(expected[s]) for s in expected)  # stored as float32


def test_a_tracker_that_is_not_installed_is_one_clear_error(monkeypatch):
    import importlib.util

    from omegaconf import OmegaConf

    from bertlite.cli.common import instantiate_group
    from bertlite.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    config = OmegaConf.create({"wandb": {"_target_": "lightning.pytorch.loggers.WandbLogger"}})
    with pytest.raises(ConfigError, match=r"logger=wandb needs the wandb package: pip install 'bertlite\[wandb\]'"):
        instantiate_group(config)
