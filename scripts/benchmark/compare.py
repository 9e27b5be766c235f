"""Two runs of the benchmark side by side: every ratio of the first run, the second's, and the change.

    python -m scripts.benchmark.compare before.json after.json [--tolerance 0.05]

A ratio is a row's "× reference" figure (bertlite against transformers; in the modern section, against bert-mini
or the all-global modernbert-mini); the Trainer.fit rows also give their share of the bare step, the fine-tuning
table the bertlite row against transformers' dynamic padding, and the modern inference table its local-attention
row against bert-mini. Rows
whose change exceeds the tolerance are marked; the exit status is 0 either way (a report, not a test).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def ratios(report: dict) -> dict[str, float]:
    """{"<table> / <row>": ratio} for every compared figure of one benchmark.json."""
    out = {}
    for tables in report["sections"].values():
        for table in tables:
            title = ", ".join(table["title"].split(", ")[:2])  # "MLM training step, bert-mini"
            rows = table["rows"]
            for row in rows:
                if row.get("ratio") and not row.get("reference"):
                    out[f"{title} / {row['case']}"] = row["ratio"]
                if row.get("of_bare_step"):
                    out[f"{title} / {row['case']}: share of the bare step"] = row["of_bare_step"]
                if row.get("vs_classic"):  # the modern section's local-attention row against bert-mini
                    out[f"{title} / {row['case']}: against the classic encoder"] = row["vs_classic"]
            dynamic = next((r for r in rows if "DataCollatorWithPadding" in r["case"]), None)
            if dynamic:
                out[f"{title} / {rows[0]['case']}: against dynamic padding"] = (  # paired where the run paired it
                    rows[0].get("vs_dynamic") or rows[0]["median"] / dynamic["median"])
    return out


def main(argv=None) -> list[tuple[str, float, float, float]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument("--tolerance", type=float, default=0.05, help="mark changes larger than this (0.05: 5%%)")
    args = p.parse_args(argv)
    before, after = (ratios(json.loads(path.read_text())) for path in (args.before, args.after))
    rows = [(key, before[key], after[key], after[key] / before[key] - 1) for key in before if key in after]
    print(f"| figure | {args.before.name} | {args.after.name} | change |\n|---|---:|---:|---:|")
    for key, a, b, change in rows:
        mark = " **over**" if abs(change) > args.tolerance + 1e-9 else ""
        print(f"| {key} | {a:.3f} | {b:.3f} | {change:+.1%}{mark} |")
    held = sum(abs(c) <= args.tolerance + 1e-9 for *_, c in rows)
    print(f"\n{held} of {len(rows)} figures within {args.tolerance:.0%}")
    return rows


if __name__ == "__main__":
    main()
