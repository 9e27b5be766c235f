"""Data parallelism changes nothing but speed: two CPU processes (gloo) with batch B each end a few steps
with the parameters of one process with batch 2B on the same data order, for DDP and for torch's
fully_shard (FSDP2) through Lightning's ModelParallelStrategy. (Lightning's FSDPStrategy refuses CPU; the
ModelParallelStrategy path is the FSDP-style one that runs here.)"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def train(mode: str, batch_per_process: int, out) -> dict:
    result = run_cli("tests.distributed_worker", mode, str(batch_per_process), str(out), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out, weights_only=False)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return train("single", 16, tmp_path_factory.mktemp("single") / "params.pt")


@pytest.mark.parametrize("mode", ["ddp_spawn", "fully_shard"])
def test_two_processes_match_one_with_the_doubled_batch(mode, single, tmp_path):
    two = train(mode, 8, tmp_path / "params.pt")
    assert two["params"].keys() == single["params"].keys()
    diff = max((two["params"][k] - single["params"][k]).abs().max().item() for k in single["params"])
    moved = max((single["params"][k] - single["initial"][k]).abs().max().item() for k in single["params"])
    print(f"{mode}: max parameter difference {diff:.2e} (parameters moved by up to {moved:.2e})")
    assert moved > 1e-3  # training happened, so agreement means something
    assert diff < 1e-5
