"""scripts/benchmark.py --quick runs every section end to end and writes well-formed JSON.

No timing assertions: timings belong in the benchmark's own output, never in tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("BERTLITE_DATA_DIR", REPO.parent / "shared" / "data"))
SECTIONS = {"mlm", "finetune", "inference", "clm", "loader"}

pytest.importorskip("transformers")


@pytest.mark.slow
@pytest.mark.skipif(not (DATA_DIR / "glue_sst2" / "train.tsv").is_file(), reason="SST-2 is not in the data dir")
def test_quick_benchmark_writes_every_section(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BERTLITE_DATA_DIR": str(DATA_DIR)}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), "--quick", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["sections"]) == SECTIONS
    for name, tables in report["sections"].items():
        assert tables, name
        for t in tables:
            assert t["rows"], t["title"]
            for row in t["rows"]:
                assert row["median"] > 0 and all(r > 0 for r in row["rates"]), (name, row["case"])
    for row in (r for t in report["sections"]["mlm"] + report["sections"]["clm"] for r in t["rows"]):
        assert len(row["step_rates"]) == 2 * 2, row["case"]  # --quick: each of 2 steps, in 2 repetitions
    mlm_cases = [r["case"] for t in report["sections"]["mlm"] for r in t["rows"]]
    assert any(c.startswith("transformers") for c in mlm_cases) and any("default recipe" in c for c in mlm_cases)
    assert report["sections"]["inference"][0]["rows"][0]["agreement_with_pipeline"] == 1.0  # the same weights
    assert "| case |" in proc.stdout  # the markdown table
