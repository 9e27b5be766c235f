"""Does grouping training batches by length cost accuracy? Fine-tune from random initialisation with
``data.group_by_length`` on and off, over several seeds and data sets, and print one table.

    python scripts/group_by_length.py --data sms_spam --seeds 1 2 3 --out outputs/group_by_length \
        --data-dir ../shared/data
    python scripts/group_by_length.py --data sst2 --set data.max_train_samples=10000 ...

Every run is an ordinary ``bertlite-finetune`` run in its own folder under --out. The recipe is the one of the
issue that found the effect: bert-mini from scratch, lr 5e-4, two epochs; only ``group_by_length`` differs
between the two rows of a data set. Train time is ``train_seconds`` from metrics.json (tokenizer, data and
training; the final evaluation excluded), the median over the seeds. Runs alternate between the two settings,
so that a noisy machine slows both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

RECIPE = ["model=bert-mini", "pretrained=null", "task.lr=5e-4", "trainer.max_epochs=2", "callbacks.progress_bar=null",
          "data.test_file=null"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["sms_spam", "imdb"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--out", type=Path, default=Path("outputs/group_by_length"))
    parser.add_argument("--data-dir", default=None, help="paths.data_dir (default: the config's)")
    parser.add_argument("--set", nargs="*", default=[], help="overrides for every run (data.max_train_samples=...)")
    args = parser.parse_args()
    results: dict[tuple[str, bool], list[dict]] = {}
    for data in args.data:
        for seed in args.seeds:
            for group in (True, False):
                run_dir = args.out / f"{data}_group{int(group)}_seed{seed}"
                cmd = [sys.executable, "-m", "bertlite.finetune", f"data={data}", f"seed={seed}",
                       f"data.group_by_length={str(group).lower()}", f"hydra.run.dir={run_dir}", *RECIPE, *args.set]
                if args.data_dir:
                    cmd.append(f"paths.data_dir={args.data_dir}")
                if not (run_dir / "metrics.json").exists():
                    print("$", " ".join(cmd[1:]), flush=True)
                    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                report = json.loads((run_dir / "metrics.json").read_text())
                results.setdefault((data, group), []).append(report)
                metric = report["metric"]
                print(f"  {data} group={group} seed {seed}: dev acc {report['validation']['val/acc']:.4f}, "
                      f"{metric} {report['validation'][f'val/{metric}']:.4f}, {report['train_seconds']:.0f} s",
                      flush=True)
    print(f"\n| data | group_by_length | dev acc, mean of {len(args.seeds)} seeds | per seed | dev metric (mean) "
          "| train time (median) | time vs. ungrouped |")
    print("|---|---|---:|---|---:|---:|---:|")
    for data in args.data:
        off = statistics.median(r["train_seconds"] for r in results[(data, False)])
        for group in (True, False):
            runs = results[(data, group)]
            accs = [r["validation"]["val/acc"] for r in runs]
            metric = runs[0]["metric"]
            value = statistics.mean(r["validation"][f"val/{metric}"] for r in runs)
            seconds = statistics.median(r["train_seconds"] for r in runs)  # robust to one run on a busy machine
            print(f"| {data} | {str(group).lower()} | {statistics.mean(accs):.4f} | "
                  f"{' / '.join(f'{a:.4f}' for a in accs)} | {metric} {value:.4f} | {seconds:.0f} s | "
                  f"{seconds / off:.2f}x |")


if __name__ == "__main__":
    main()
