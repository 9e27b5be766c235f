"""The configs ship inside the wheel: an installed bertlite composes its config away from the checkout."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_installed_wheel_finds_its_configs(tmp_path):
    wheel_dir, site = tmp_path / "wheel", tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheel_dir), str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = wheel_dir.glob("bertlite-*.whl")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr

    # Run from an empty folder with only the installed copy first on the path.
    code = ("import sys, bertlite; print('FILE', bertlite.__file__); "
            "from bertlite.cli.pretrain import main; sys.argv = ['bertlite-pretrain', '--cfg', 'job']; main()")
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"FILE {site}" in result.stdout  # the wheel's copy, not the checkout
    assert "source: python_docs" in result.stdout and "n_layers: 2" in result.stdout
    assert (site / "bertlite" / "conf" / "pretrain.yaml").is_file()
