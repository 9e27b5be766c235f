"""scripts/gpu_check.sh, the one prepared GPU script, checked on the CPU: its shell parses, and every bertlite run in
it composes a valid config (DRY_RUN=1 prints each config instead of training)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_gpu_check_script_parses_and_its_runs_compose(tmp_path):
    script = REPO / "scripts" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(tmp_path), "RUNS": str(tmp_path / "runs"), "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = (tmp_path / "summary.txt").read_text().splitlines()
    assert [line.split()[0] for line in summary] == ["pretrain_base", "pretrain_modern", "ddp", "fsdp"]
    assert all(line.split()[2] == "0" for line in summary), summary
    base = (tmp_path / "pretrain_base.log").read_text()
    assert "d_model: 768" in base and "batch_size: 256" in base and "precision: bf16-mixed" in base
    modern = (tmp_path / "pretrain_modern.log").read_text()  # ModernBERT-base's blocks, at the same batch
    assert "n_layers: 22" in modern and "activation: geglu" in modern and "local_attention: 128" in modern
    assert "batch_size: 256" in modern and "precision: bf16-mixed" in modern
    assert "FSDP" in (tmp_path / "fsdp.log").read_text() or "fsdp" in (tmp_path / "fsdp.log").read_text()


def test_gpu_check_script_runs_modules_that_exist():
    """Every ``$PY -m <module>`` of the script, the benchmark among them (DRY_RUN skips it), names a module that
    Python finds from the checkout's root, where the script runs."""
    modules = re.findall(r"\$PY -m ([\w.]+)", (REPO / "scripts" / "gpu_check.sh").read_text())
    assert "scripts.benchmark" in modules
    find = "import importlib.util, sys; print([m for m in sys.argv[1:] if importlib.util.find_spec(m) is None])"
    result = subprocess.run([sys.executable, "-c", find, *modules], cwd=REPO, capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_gpu_check_script_skips_the_steps_past_its_budget(tmp_path):
    """With no time left in the budget, every step is skipped and said so in the summary, nothing runs."""
    env = {**os.environ, "DRY_RUN": "1", "BUDGET_S": "0", "OUT": str(tmp_path), "RUNS": str(tmp_path / "runs"),
           "PYTHON": "false"}  # a step that ran would fail
    result = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = (tmp_path / "summary.txt").read_text().splitlines()
    assert [line.split()[:2] for line in summary] == [[name, "skipped:"] for name in
                                                      ("pretrain_base", "pretrain_modern", "ddp", "fsdp")]
