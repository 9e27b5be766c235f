"""Data parallelism changes nothing but speed: two CPU processes (gloo) with batch B each end a few steps
with the parameters of one process with batch 2B on the same data order (as does one process accumulating
two batches of B), for DDP and for torch's
fully_shard (FSDP2) through Lightning's ModelParallelStrategy. (Lightning's FSDPStrategy refuses CPU; the
ModelParallelStrategy path is the FSDP-style one that runs here.)"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import run_cli

# one xdist worker runs them all: each opens a gloo rendezvous on a free port
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("distributed")]


def train(mode: str, batch_per_process: int, out) -> dict:
    result = run_cli("tests.distributed_worker", mode, str(batch_per_process), str(out), timeout=300,
                     subprocess_run=True)  # its own process: ddp_spawn and fully_shard start workers
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out, weights_only=False)


# session-scoped: a module fixture is torn down whenever the worker's next test is from another file, and these runs
# take 10-20 s each
@pytest.fixture(scope="session")
def single(tmp_path_factory):
    return train("single", 16, tmp_path_factory.mktemp("single") / "params.pt")


@pytest.fixture(scope="session")
def sharded(tmp_path_factory):
    """The fully_shard run, shared by the two tests that read it: (its parameters file, what it holds)."""
    out = tmp_path_factory.mktemp("fully_shard") / "params.pt"
    return out, train("fully_shard", 8, out)


@pytest.mark.parametrize("mode", ["ddp_spawn", "fully_shard", "accumulate"])
def test_two_processes_match_one_with_the_doubled_batch(mode, single, tmp_path, request):
    """Also with 1 to 6 masked tokens per block: the loss is normalised by the masked tokens of the whole step,
    over the ranks (and over the accumulated batches of ``accumulate``), so the split changes nothing."""
    two = request.getfixturevalue("sharded")[1] if mode == "fully_shard" else train(mode, 8, tmp_path / "params.pt")
    assert two["params"].keys() == single["params"].keys()
    diff = max((two["params"][k] - single["params"][k]).abs().max().item() for k in single["params"])
    moved = max((single["params"][k] - single["initial"][k]).abs().max().item() for k in single["params"])
    print(f"{mode}: max parameter difference {diff:.2e} (parameters moved by up to {moved:.2e})")
    assert moved > 1e-3  # training happened, so agreement means something
    # Two processes sum the gradients in another order than one, and Adam divides by their root mean square, so
    # float32 rounding shows: under 1e-5 on a 2-core Intel Xeon, 1.0-1.4e-5 on a 2-core AMD EPYC (its kernels sum
    # otherwise). A loss normalised per rank instead of over the step moves the parameters by 4.8e-2.
    assert diff < 5e-5


def test_sharded_run_checkpoint_loads_on_one_device(sharded):
    """A fully_shard run's checkpoint (gathered by rank zero) is an ordinary bertlite checkpoint: bertlite.load
    and bertlite-finetune pretrained= read it on one process, with the trained parameters."""
    import bertlite

    out, two = sharded
    mlm = bertlite.load(out.parent / (out.name + ".ckpt"))
    for name, p in mlm.model.named_parameters():
        assert torch.equal(p.detach(), two["params"][name]), name
    assert mlm.fill_mask("the cat sat on the [MASK] .", top_k=2)
