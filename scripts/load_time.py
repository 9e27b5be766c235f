"""How long a fresh Python process takes to import bertlite, load a model and predict one text, and which training
packages that pulls in.

    python -m scripts.load_time <model folder or .ckpt> [--runs 5]

Each run is a new interpreter (nothing cached in memory but the OS's file cache); the first run warms that cache and
is not counted. Prints the median and the range of the timed runs, and the training packages found in sys.modules.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

PROBE = """
import sys, bertlite
predictor = bertlite.load(sys.argv[1])
predictor.predict(["a short text"])
import json
print(json.dumps(sorted(m for m in ("lightning", "hydra", "datasets") if m in sys.modules)))
"""


def one_run(path: str) -> tuple[float, list[str]]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE, path], capture_output=True, text=True, check=True)
    return time.perf_counter() - start, json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.load_time", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model folder or a .ckpt of a classifier or tagger")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    one_run(args.model)  # warms the file cache
    runs = [one_run(args.model) for _ in range(args.runs)]
    seconds = [s for s, _ in runs]
    print(f"import + load + predict: median {statistics.median(seconds):.2f} s "
          f"[{min(seconds):.2f}-{max(seconds):.2f}] over {len(seconds)} fresh processes")
    print(f"training packages imported: {', '.join(runs[0][1]) or 'none'}")


if __name__ == "__main__":
    main()
