"""python -m scripts.benchmark --quick runs its default sections (bertlite against transformers) end to end and
writes well-formed JSON; the modern section (bertlite against itself) runs in process on a tiny corpus.

No timing assertions: timings belong in the benchmark's own output, never in tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("BERTLITE_DATA_DIR", REPO.parent / "shared" / "data"))
SECTIONS = {"mlm", "finetune", "inference", "clm", "loader"}  # the default: every section against transformers

pytest.importorskip("transformers")


@pytest.mark.slow
@pytest.mark.skipif(not (DATA_DIR / "glue_sst2" / "train.tsv").is_file(), reason="SST-2 is not in the data dir")
def test_quick_benchmark_writes_every_section(tmp_path):
    out = tmp_path / "bench.json"
    # run outside the checkout, so that nothing it writes lands there; PYTHONPATH finds the scripts package
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BERTLITE_DATA_DIR": str(DATA_DIR), "PYTHONPATH": python_path}
    proc = subprocess.run([sys.executable, "-m", "scripts.benchmark", "--quick", "--out", str(out)],
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
    for row in report["sections"]["finetune"][0]["rows"]:  # fine-tuning passes, interleaved in chunks
        assert len(row["rates"]) == 1 and len(row["step_rates"]) == 1, row["case"]  # --quick: 2 batches, 1 chunk
    assert report["sections"]["finetune"][0]["rows"][0]["vs_dynamic"] > 0  # paired with dynamic padding
    for row in (r for t in report["sections"]["mlm"] for r in t["rows"] if "Trainer.fit" in r["case"]):
        assert row["of_bare_step"] > 0 and len(row["of_interleaved_range"]) == 2  # paired step by step
    mlm_cases = [r["case"] for t in report["sections"]["mlm"] for r in t["rows"]]
    assert any(c.startswith("transformers") for c in mlm_cases) and any("default recipe" in c for c in mlm_cases)
    assert report["sections"]["inference"][0]["rows"][0]["agreement_with_pipeline"] == 1.0  # the same weights
    assert "| case |" in proc.stdout  # the markdown table


def test_compare_reports_every_ratio_and_its_change(tmp_path, capsys):
    """python -m scripts.benchmark.compare: the ratios of two runs side by side, the Trainer.fit share and the
    fine-tuning row against dynamic padding included, with changes over the tolerance marked."""
    from scripts.benchmark import compare as benchmark_compare

    def report(mlm_ratio: float, share: float, ours: float) -> dict:
        mlm = [{"case": "bertlite, default recipe", "ratio": mlm_ratio, "median": 2.0},
               {"case": "the same through Trainer.fit", "ratio": mlm_ratio * share, "of_bare_step": share, "median": 1},
               {"case": "transformers BertForMaskedLM", "ratio": 1.0, "reference": True, "median": 1.0}]
        finetune = [{"case": "bertlite", "ratio": ours / 50, "median": ours},
                    {"case": "transformers, padded to 128", "ratio": 1.0, "reference": True, "median": 50.0},
                    {"case": "transformers, DataCollatorWithPadding (dynamic)", "ratio": 2.0, "median": 100.0}]
        return {"sections": {"mlm": [{"title": "MLM training step, bert-mini, batch 32", "rows": mlm}],
                             "finetune": [{"title": "SST-2 fine-tuning, bert-mini: one pass", "rows": finetune}]}}

    before, after = tmp_path / "before.json", tmp_path / "after.json"
    before.write_text(json.dumps(report(2.5, 0.96, 120.0)))
    after.write_text(json.dumps(report(2.6, 0.96, 114.0)))
    rows = {key: change for key, _, _, change in benchmark_compare.main([str(before), str(after)])}
    assert rows["MLM training step, bert-mini / bertlite, default recipe"] == pytest.approx(0.04)
    assert rows["MLM training step, bert-mini / the same through Trainer.fit: share of the bare step"] == 0
    assert rows["SST-2 fine-tuning, bert-mini: one pass / bertlite: against dynamic padding"] == pytest.approx(-0.05)
    assert not any("transformers BertForMaskedLM" in key for key in rows)  # the reference is not a ratio
    out = capsys.readouterr().out
    assert "| SST-2 fine-tuning, bert-mini: one pass / bertlite | 2.400 | 2.280 | -5.0% |" in out  # 5%: not over
    assert "**over**" not in out and "6 of 6 figures within 5%" in out
    benchmark_compare.main([str(before), str(after), "--tolerance", "0.01"])
    assert capsys.readouterr().out.count("**over**") == 4  # MLM, the fit row's ratio, SST-2, against dynamic
    paired = report(2.6, 0.96, 114.0)
    paired["sections"]["finetune"][0]["rows"][0]["vs_dynamic"] = 1.14 * 1.05  # paired by the run: taken as it is
    after.write_text(json.dumps(paired))
    rows = {key: change for key, _, _, change in benchmark_compare.main([str(before), str(after)])}
    assert rows["SST-2 fine-tuning, bert-mini: one pass / bertlite: against dynamic padding"] == pytest.approx(-0.0025)


def test_whole_case_takes_turns_with_its_partner_step_by_step():
    """run_cases: a whole case (a Trainer.fit) with ``interleave`` runs the partner's step before each of its own
    steps, and its share of the partner is the median of those pairs; the partner's row is not changed."""
    from scripts.benchmark.harness import Case, run_cases

    order: list[str] = []

    def bare_step():
        order.append("bare")
        return 10, 1.0  # 10 units/s

    def fit(between=None):
        steps = []
        for seconds in (0.5, 0.4, 0.5):  # 20, 25 and 20 units/s
            if between:
                between()
            order.append("fit")
            steps.append((10, seconds))
        return steps

    env = SimpleNamespace(args=SimpleNamespace(cases=None, steps=2), sync=lambda: None, peak=None,
                          device=torch.device("cpu"))
    factories = {"bertlite, default recipe": lambda: Case(None, lambda: None, step=bare_step),
                 "the same through Trainer.fit": lambda: Case(fit, lambda: None, interleave="default")}
    bare, whole = run_cases(env, factories, reps=2, memory=False)
    assert order == (["bare"] * 2 + ["bare", "fit"] * 3) * 2  # the bare rounds, then the fit taking turns
    assert whole["of_interleaved"] == pytest.approx(2.0) and whole["step_rates"] == [20, 25, 20] * 2
    assert "of_interleaved" not in bare and bare["step_rates"] == [10] * 4


def test_modern_section_times_both_recipes_and_what_local_attention_pays(tmp_path, monkeypatch, tiny_corpus):
    """--sections modern: modernbert-mini's MLM step against bert-mini's, each configured by its experiment, and
    inference with local attention against the same model all global and against bert-mini, paired round by round;
    the local layers' FLOPs are counted as local."""
    from bertlite.data.tokenizer import train_wordpiece
    from scripts.benchmark import modern, text
    from scripts.benchmark.__main__ import parse_args
    from scripts.benchmark.harness import Env

    monkeypatch.setattr(text, "WORK", tmp_path)  # the corpus the pretraining blocks are cut from
    (tmp_path / "corpus.txt").write_text(tiny_corpus.read_text())
    args = parse_args(["--quick", "--no-memory", "--sections", "modern", "--device", "cpu", "--precision", "fp32"])
    args.steps, args.warmup = 1, 0  # two rounds of one step each: enough to pair them
    tokenizer = train_wordpiece(tiny_corpus.read_text().splitlines(), vocab_size=300)
    (train_title, _, training), (inference_title, _, inference) = modern.modern_sections(Env(args), tokenizer)

    assert "modernbert-mini vs bert-mini" in train_title and "64 tokens" in inference_title
    classic, ours = training
    assert classic["case"].startswith("bert-mini, experiment=gutenberg_mini") and classic["reference"]
    assert ours["case"].startswith("modernbert-mini, experiment=modern_mini") and "local 16 in 1 of 2" in ours["case"]
    assert ours["ratio"] > 0 and len(ours["step_rates"]) == args.reps * args.steps
    local, every_global, bert = inference
    assert every_global["reference"] and "every layer global" in every_global["case"]
    assert local["ratio"] > 0 and local["vs_classic"] > 0 and "bert-mini" in local["note"]
    assert bert["case"].startswith("bert-mini") and not bert["reference"]
    flops = {row["case"]: row["tflops_per_sec"] / row["median"] for row in inference}  # per token
    assert flops[local["case"]] < flops[every_global["case"]]  # the local layer scores 17 keys, not 64
