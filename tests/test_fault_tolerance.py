"""No lost work: the data position survives a resume, checkpoint files are replaced atomically, a NaN loss
stops the run before any checkpoint of it is written, and the effective batch is kept across device counts."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from bertlite.checkpoints import load_torch_file
from bertlite.cli.common import apply_global_batch_size
from bertlite.data.resumable import ResumableDataLoader, ResumableSampler
from bertlite.errors import CheckpointError, ConfigError
from bertlite.tasks.resilience import AtomicCheckpointIO, NonFiniteLossGuard, TrainingDivergedError
from tests.conftest import REPO

DATA = TensorDataset(torch.arange(100))


def loader(batch_size=4, replicas=1, rank=0):
    return ResumableDataLoader(DATA, batch_size, ResumableSampler(DATA, num_replicas=replicas, rank=rank, seed=3))


def ids(batches) -> list[int]:
    return [int(i) for (b,) in batches for i in b]


def test_resumed_loader_continues_with_the_next_unseen_batch():
    whole = ids(loader())
    first = loader()
    it = iter(first)
    seen = ids(next(it) for _ in range(7))
    state = first.state_dict()
    assert state["samples_done"] == 28 and state["epoch"] == 0
    again = loader()
    again.load_state_dict(state)
    assert seen + ids(again) == whole  # nothing repeated, nothing skipped, same order
    # the next epoch is a new permutation, started from its beginning
    again.sampler.set_epoch(1)
    assert sorted(ids(again)) == sorted(whole) and ids(again) != whole


def test_resume_on_another_number_of_ranks_still_sees_each_sample_once():
    two = [loader(4, 2, r) for r in range(2)]
    iters = [iter(dl) for dl in two]
    seen = [i for _ in range(5) for it in iters for i in ids([next(it)])]  # 5 steps of 2 ranks x 4
    state = two[0].state_dict()
    assert state["samples_done"] == 40
    one = loader(8)  # resumed on one process with the doubled batch
    one.load_state_dict(state)
    rest = ids(one)
    assert not set(seen) & set(rest) and len(seen) + len(rest) == 96  # 100 rounded down to whole batches of 8
    assert sorted(seen + rest) == sorted(ids(loader(8)))


def test_a_position_saved_at_the_end_of_an_epoch_does_not_skip_the_next():
    first = loader()
    list(first)
    state = first.state_dict()
    again = loader()
    again.load_state_dict(state)
    again.sampler.set_epoch(1)  # what Lightning does when the next epoch starts
    assert len(ids(again)) == 100


CKPT = {"bertlite": {"task": "mlm"}, "state_dict": {"w": torch.ones(3)}}


def test_atomic_checkpoint_survives_an_exception_mid_write(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint(CKPT, path)

    def crash(obj, f):  # half a checkpoint reaches the disk, then the writer dies
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        io.save_checkpoint({**CKPT, "state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(load_torch_file(path)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind

    # the same crash with a plain write in place destroys the previous checkpoint: what the plugin prevents
    with open(path, "wb") as f:
        f.write(b"PK\x03\x04 half a zip")
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_torch_file(path)


def test_atomic_checkpoint_survives_a_killed_process(tmp_path):
    """A real crash: the writing process is killed (SIGKILL) in the middle of writing the new checkpoint."""
    path, started = tmp_path / "last.ckpt", tmp_path / "started"
    AtomicCheckpointIO().save_checkpoint(CKPT, path)
    script = f"""
import time, torch
from bertlite.tasks.resilience import AtomicCheckpointIO
def slow(obj, f):
    f.write(b"x" * 65536); f.flush()
    open({str(started)!r}, "w").close()
    time.sleep(60)
torch.save = slow
AtomicCheckpointIO().save_checkpoint({{"state_dict": {{}}}}, {str(path)!r})
"""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    deadline = time.monotonic() + 120
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert any(p.name.startswith(".last.ckpt.tmp") for p in tmp_path.iterdir())  # it died mid-write
    assert torch.equal(load_torch_file(path)["state_dict"]["w"], torch.ones(3))


class Diverging(L.LightningModule):
    """A linear model whose loss turns NaN at step ``nan_at``."""

    def __init__(self, nan_at: int):
        super().__init__()
        self.layer, self.nan_at = torch.nn.Linear(2, 1), nan_at

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        return loss * float("nan") if self.global_step >= self.nan_at else loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.layer(batch[0]).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.parametrize("check_every", [4, 100])  # caught at the check interval, or before the validation's save
def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, check_every):
    data = DataLoader(TensorDataset(torch.randn(64, 2)), batch_size=2)
    trainer = L.Trainer(max_steps=30, val_check_interval=5, limit_val_batches=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        plugins=[AtomicCheckpointIO()],
                        callbacks=[ModelCheckpoint(tmp_path, filename="last", save_top_k=1),
                                   NonFiniteLossGuard(check_every_n_steps=check_every)])
    with pytest.raises(TrainingDivergedError) as exc:
        trainer.fit(Diverging(nan_at=7), data, data)
    message = str(exc.value)
    assert "\n" not in message and "NaN or inf" in message and str(tmp_path / "last.ckpt") in message
    assert f"between steps 6 and {8 if check_every == 4 else 10}" in message  # checked last at the step-5 validation
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 5  # the validation at step 10 saved nothing
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())


class FakeTrainer:
    def __init__(self, devices, nodes=1, accumulate=1):
        self.num_devices, self.num_nodes, self.accumulate_grad_batches, self.loggers = devices, nodes, accumulate, []
        self.val_check_interval = 1.0


class FakeData:
    batch_size = 32


@pytest.mark.parametrize("devices,nodes,per_device,accumulate", [(1, 1, 32, 8), (2, 1, 32, 4), (8, 2, 16, 1),
                                                                 (4, 3, 32, 2)])
def test_global_batch_size_is_kept_whatever_the_devices(devices, nodes, per_device, accumulate):
    trainer, data = FakeTrainer(devices, nodes), FakeData()
    gbs = 256 if devices * nodes != 12 else 768
    figures = apply_global_batch_size(trainer, data, gbs)
    assert (data.batch_size, trainer.accumulate_grad_batches) == (per_device, accumulate)
    assert figures["effective_batch_size"] == gbs == per_device * accumulate * devices * nodes


def test_global_batch_size_not_divisible_is_one_clear_error():
    with pytest.raises(ConfigError, match="not divisible by the 3 processes"):
        apply_global_batch_size(FakeTrainer(3), FakeData(), 256)
