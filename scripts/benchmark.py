"""bertlite against Hugging Face transformers, side by side: the same shapes, batch, sequence length, threads,
precision and machine, in one run.

    python scripts/benchmark.py --out benchmark.json            # every section, this machine's defaults
    python scripts/benchmark.py --sections mlm clm --reps 7      # some sections
    python scripts/benchmark.py --quick --out /tmp/b.json        # tiny shapes and few steps (tests/test_benchmark.py)

Sections: mlm (pretraining step, bert-mini and bert-base), finetune (SST-2 passes), inference (predict vs
pipeline), clm (GPT step vs GPT2LMHeadModel), loader (bertlite's DataLoaders alone).

Method. A section builds all its cases, runs each case's warm-up (not timed), then times repetitions that
interleave the cases (A, B, C, A, B, C, ...) so that noise from the machine falls on all of them alike. A
training case times each of its steps, and the row reports the median step over all repetitions; a pass
(fine-tuning, inference) reports the median repetition. Peak memory is measured afterwards, one case at a
time, from a fresh build: the growth over the memory in use before the case was built (weights, gradients,
optimizer state, batches, activations). GPU: torch.cuda.max_memory_allocated. CPU: the process's peak
resident set (VmHWM, reset through /proc/self/clear_refs; Linux only). A training step is forward, backward,
gradient clipping at 1.0 and an AdamW step. On a GPU: bf16 autocast, bert-base with a large batch, and MFU
against the card's peak.
Both libraries run in one process with the CPU allocator setting of bertlite's commands (bertlite/memory.py:
freed memory is kept for reuse); ``--cpu-allocator system`` measures glibc's defaults instead.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from bertlite.memory import retain_freed_memory  # noqa: E402
from bertlite.precision import bf16_is_fast  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark_text as text  # noqa: E402
import benchmark_train as train  # noqa: E402

SECTIONS = ("mlm", "finetune", "inference", "clm", "loader")
REPO = Path(__file__).resolve().parents[1]
QUICK_SHAPE = dict(n_layers=2, d_model=64, n_heads=2, d_ff=256, max_seq_len=64)  # --quick: every model


@dataclass
class Case:
    # one timed unit of work: a pass returns the tokens or examples it did; steps timed one by one (a
    # Trainer.fit) return [(units, seconds), ...]
    run: Callable[[], int | list[tuple[int, float]]]
    warmup: Callable[[], object]
    flops: float = 0.0  # model FLOPs per unit (token) of run(): FLOP/s = flops * rate (0: not counted)
    step: Callable[[], tuple[int, float]] | None = None  # one timed training step: (units, seconds)
    # a whole case timed step by step (a Trainer.fit) may take turns with the steps of the case whose name
    # contains this string: run(between) calls between() before each timed step, and its time is left out
    interleave: str | None = None


class Env:
    """The device, precision and settings every section shares."""

    def __init__(self, args):
        self.args = args
        self.device = torch.device(args.device if args.device != "auto" else
                                   "cuda" if torch.cuda.is_available() else "cpu")
        self.bf16 = args.precision == "bf16" or (args.precision == "auto" and bf16_is_fast(self.device))
        from bertlite.tasks.callbacks import device_peak_flops

        self.peak = args.peak_flops or device_peak_flops(self.device, torch.bfloat16 if self.bf16 else torch.float32)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def model_config(self, name: str, **overrides):
        from bertlite.models.config import preset

        return preset(name, **{**(QUICK_SHAPE if self.args.quick else {}), **overrides})


# --- memory -------------------------------------------------------------------------------------------
def _status_kib(key: str) -> int | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def release_memory(env: Env) -> None:
    gc.collect()
    if env.device.type == "cuda":
        torch.cuda.empty_cache()
    else:
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back, so RSS is what is in use
        except OSError:
            pass


def peak_memory(make: Callable[[], Case], env: Env) -> float | None:
    """Peak memory growth (MiB) while building the case and running its warm-up and one timed unit."""
    release_memory(env)
    if env.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS to the current RSS
        except OSError:
            return None
        base = _status_kib("VmRSS") * 1024
    case = make()
    case.warmup()
    case.run()
    env.sync()
    peak = torch.cuda.max_memory_allocated() if env.device.type == "cuda" else _status_kib("VmHWM") * 1024
    del case
    release_memory(env)
    return (peak - base) / 2**20


# --- timing -------------------------------------------------------------------------------------------
def paired_ratio(ours: list[float], theirs: list[float]) -> tuple[float, float, float]:
    """The median of the paired ratios ours[i] / theirs[i] (rounds or repetitions timed together), and their
    10th and 90th percentiles: how far one run's ratio can be trusted on a noisy machine."""
    paired = [a / b for a, b in zip(ours, theirs)]
    deciles = statistics.quantiles(paired, n=10) if len(paired) > 1 else paired * 9
    return statistics.median(paired), deciles[0], deciles[-1]


def run_cases(env: Env, factories: dict[str, Callable[[], Case]], reps: int, memory: bool = True,
              pass_chunks: int | None = None) -> list[dict]:
    """Build every case, warm each up, then time ``reps`` interleaved repetitions. Cases that expose single
    training steps interleave step by step (A, B, C, A, B, C, ... within a repetition), so that a few seconds
    of load from elsewhere fall on all of them alike; the others (a Trainer.fit, a pass) run whole, in turn.
    With ``pass_chunks``, a case's step is a chunk of a pass: a repetition is that many rounds (one pass of each
    case, the cases taking turns chunk by chunk), and rows report passes, not chunks.
    The first case whose name starts with 'transformers' is the reference of the ratio column: for
    step-interleaved cases the median over rounds (or passes) of each one's ratio, else the ratio of the
    medians. A whole case with ``interleave`` takes turns step by step with that case (``of_interleaved``: the
    median of its steps' rates over the partner's). ``--cases`` keeps only the rows whose names contain one of
    its strings."""
    keep = env.args.cases
    cases = {name: make() for name, make in factories.items() if not keep or any(k in name for k in keep)}
    for case in cases.values():
        case.warmup()
    env.sync()
    rates: dict[str, list[float]] = {name: [] for name in cases}  # one per repetition
    step_rates: dict[str, list[float]] = {name: [] for name in cases}  # one per step, where steps are timed
    stepwise = {name: case for name, case in cases.items() if case.step is not None}
    partners = {name: next((c for n, c in stepwise.items() if case.interleave in n), None)
                for name, case in cases.items() if case.interleave}
    paired: dict[str, list[tuple[int, float]]] = {name: [] for name in cases}  # a partner's steps, in turn
    for _ in range(reps):
        done = {name: [] for name in stepwise}
        for _ in range(pass_chunks or env.args.steps):  # rounds: one step of each case
            for name, case in stepwise.items():
                done[name].append(case.step())
        for name, case in cases.items():
            if name in stepwise:
                units = done[name]
            else:
                partner = partners.get(name)
                env.sync()
                start = time.perf_counter()
                units = case.run(lambda p=partner, n=name: paired[n].append(p.step())) if partner else case.run()
                env.sync()
                if not isinstance(units, list):  # a whole pass: no per-step figures
                    rates[name].append(units / (time.perf_counter() - start))
                    continue
            step_rates[name] += [u / s for u, s in units]  # units: [(units, seconds) per step]
            rates[name].append(sum(u for u, _ in units) / sum(s for _, s in units))
    flops = {name: case.flops for name, case in cases.items()}
    del cases
    release_memory(env)
    rows = []
    for name, values in rates.items():
        # the median step: a burst of load from elsewhere on a shared machine slows some steps, not the median
        per_step = step_rates[name] if not pass_chunks else []
        row = {"case": name, "median": statistics.median(per_step or values), "rates": values,
               "step_rates": step_rates[name],
               "peak_memory_mib": peak_memory(factories[name], env) if memory else None}
        if flops[name]:
            row["tflops_per_sec"] = flops[name] * row["median"] / 1e12
        if paired[name]:  # each step against the partner's step just before it
            row["interleaved_step_rates"] = [u / s for u, s in paired[name]]
            median, low, high = paired_ratio(step_rates[name], row["interleaved_step_rates"])
            row["of_interleaved"], row["of_interleaved_range"] = median, [low, high]
        rows.append(row)
    reference = next((r for r in rows if r["case"].startswith("transformers")), None)
    for row in rows:
        row["reference"] = row is reference
        row["ratio"] = 1.0 if row is reference else None
        if reference and row is not reference:
            interleaved = row["case"] in stepwise and reference["case"] in stepwise
            by_round = interleaved and not pass_chunks
            median, low, high = paired_ratio(row["step_rates" if by_round else "rates"],
                                             reference["step_rates" if by_round else "rates"])
            row["ratio"] = median if interleaved else row["median"] / reference["median"]
            row["ratio_range"] = [low, high]
        if env.peak and row.get("tflops_per_sec"):
            row["mfu"] = row["tflops_per_sec"] * 1e12 / env.peak
    return rows


# --- report -------------------------------------------------------------------------------------------
def table(title: str, unit: str, rows: list[dict]) -> str:
    notes = any(r.get("note") for r in rows)
    lines = [f"### {title}", "", f"| case | {unit} (median) | × reference [10th–90th percentile] "
             "| peak memory (MiB) | TFLOP/s | MFU |" + (" note |" if notes else ""),
             "|---|---:|---:|---:|---:|---:|" + ("---|" if notes else "")]
    for r in rows:
        mem = "" if r.get("peak_memory_mib") is None else f"{r['peak_memory_mib']:.0f}"
        tflops = f"{r['tflops_per_sec']:.3f}" if r.get("tflops_per_sec") else ""
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else ""
        ratio = "1.00 (ref)" if r["reference"] else "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        if r.get("ratio_range"):
            ratio += " [{:.2f}–{:.2f}]".format(*r["ratio_range"])
        lines.append(f"| {r['case']} | {r['median']:,.1f} | {ratio} | {mem} | {tflops} | {mfu} |"
                     + (f" {r.get('note', '')} |" if notes else ""))
    return "\n".join(lines)


def machine(env: Env) -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "device": str(env.device), "bf16_autocast": env.bf16,
            "peak_flops": env.peak, "cpu_allocator": env.args.cpu_allocator,
            "cpu": platform.processor() or platform.machine()}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    if env.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(env.device)
    return info


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--quick", action="store_true", help="tiny shapes, few steps: checks that everything runs")
    p.add_argument("--out", default="benchmark.json", help="where the JSON goes")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: bf16 autocast where the hardware has bf16 (as the gutenberg_mini recipe), else fp32")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--batch-size", type=int, default=None, help="mlm/clm batch at mini shape (CPU 32, GPU 256)")
    p.add_argument("--base-batch-size", type=int, default=None, help="mlm batch at bert-base (CPU 8, GPU 256)")
    p.add_argument("--mlm-sizes", nargs="+", default=["bert-mini", "bert-base"], help="bertlite presets for mlm")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--vocab-size", type=int, default=30522, help="30522 as the released BERTs")
    p.add_argument("--steps", type=int, default=None, help="timed training steps per repetition (CPU 5, GPU 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps (batches) per case before timing")
    p.add_argument("--reps", type=int, default=5, help="interleaved repetitions; the median is reported")
    p.add_argument("--finetune-reps", type=int, default=5, help="repetitions of the SST-2 passes")
    p.add_argument("--finetune-size", default=None,
                   help="the model of the fine-tuning and inference sections (CPU bert-mini, GPU bert-base)")
    p.add_argument("--finetune-examples", type=int, default=2000)
    p.add_argument("--finetune-batch-size", type=int, default=32)
    p.add_argument("--inference-examples", type=int, default=2000)
    p.add_argument("--inference-batch-size", type=int, default=64)
    p.add_argument("--classifier", default=None, help="a classification checkpoint (default: random weights)")
    p.add_argument("--cases", nargs="+", default=None,
                   help="only the rows whose names contain one of these strings (e.g. 'default recipe' 'Trainer.fit')")
    p.add_argument("--fit-overrides", nargs="+", default=[],
                   help="Hydra overrides for the Trainer.fit row (e.g. callbacks.progress_bar=null logger=csv)")
    p.add_argument("--compile", action="store_true", help="add a torch.compile'd bertlite row to mlm and clm")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    p.add_argument("--cpu-allocator", choices=("retain", "system"), default="retain",
                   help="retain: keep freed memory, as bertlite's commands do (bertlite/memory.py); system: glibc's")
    p.add_argument("--peak-flops", type=float, default=None, help="the device's peak FLOP/s, for MFU")
    p.add_argument("--data-dir", type=Path,
                   default=Path(os.environ.get("BERTLITE_DATA_DIR", REPO.parent / "shared" / "data")))
    args = p.parse_args(argv)
    gpu = (args.device == "auto" and torch.cuda.is_available()) or args.device.startswith("cuda")
    if args.quick:
        args.batch_size, args.base_batch_size, args.seq_len, args.vocab_size = 4, 2, 32, 1000
        args.steps, args.warmup, args.reps, args.finetune_reps = 2, 1, 2, 1
        args.finetune_examples = args.inference_examples = 64
    args.batch_size = args.batch_size or (256 if gpu else 32)
    args.base_batch_size = args.base_batch_size or (256 if gpu else 8)
    args.steps = args.steps or (20 if gpu else 5)
    args.finetune_size = args.finetune_size or ("bert-base" if gpu and not args.quick else "bert-mini")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ["BERTLITE_CPU_ALLOCATOR"] = args.cpu_allocator
    retained = retain_freed_memory()
    env = Env(args)
    print(f"CPU allocator: {'freed memory retained' if retained else 'system defaults'}", flush=True)
    print(f"device {env.device}, {torch.get_num_threads()} threads, bf16 autocast: {env.bf16}", flush=True)
    tokenizer = text.build_tokenizer(args.data_dir, args.vocab_size, 3000 if args.quick else 100_000)
    report = {"machine": machine(env), "settings": {k: str(v) for k, v in vars(args).items()}, "sections": {}}
    out_tables = []
    sections = {
        "mlm": lambda: train.mlm_sections(env, tokenizer, Case, run_cases),
        "clm": lambda: train.clm_sections(env, tokenizer, Case, run_cases),
        "finetune": lambda: finetune_section(env, tokenizer),
        "inference": lambda: inference_section(env, tokenizer),
        "loader": lambda: train.loader_sections(env, tokenizer, Case, run_cases, report["sections"]),
    }
    for name in args.sections:
        start = time.perf_counter()
        print(f"[{name}] ...", flush=True)
        results = sections[name]()
        report["sections"][name] = [{"title": title, "unit": unit, "rows": rows} for title, unit, rows in results]
        for title, unit, rows in results:
            out_tables.append(table(title, unit, rows))
            print(out_tables[-1] + "\n", flush=True)
        print(f"[{name}] {time.perf_counter() - start:.0f} s", flush=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


def finetune_section(env: Env, tokenizer) -> list:
    """One pass per repetition, the cases taking turns text.FINETUNE_CHUNK batches at a time. The first row is
    also paired with transformers' dynamic padding, repetition by repetition (its "vs_dynamic" figure)."""
    args = env.args
    chunks = math.ceil(math.ceil(args.finetune_examples / args.finetune_batch_size) / text.FINETUNE_CHUNK)
    rows = run_cases(env, text.finetune_cases(env, tokenizer, Case), args.finetune_reps, not args.no_memory,
                     pass_chunks=chunks)
    dynamic = next((r for r in rows if "DataCollatorWithPadding" in r["case"]), None)
    if dynamic and rows[0] is not dynamic:
        rows[0]["vs_dynamic"], low, high = paired_ratio(rows[0]["rates"], dynamic["rates"])
        rows[0]["note"] = f"{rows[0]['vs_dynamic']:.2f}× dynamic padding [{low:.2f}–{high:.2f}]"
    return [(f"SST-2 fine-tuning, {args.finetune_size}: one pass", "examples/s", rows)]


def inference_section(env: Env, tokenizer) -> list:
    predictions: dict = {}
    chunks = math.ceil(env.args.inference_examples / text.INFERENCE_CHUNK)
    rows = run_cases(env, text.inference_cases(env, tokenizer, Case, predictions), env.args.reps,
                     not env.args.no_memory, pass_chunks=chunks)
    ours, theirs = predictions.get("bertlite"), predictions.get(f"hf{env.args.inference_batch_size}")
    if ours and theirs:
        agree = sum(a == b for a, b in zip(ours, theirs)) / len(ours)
        rows[0]["agreement_with_pipeline"] = agree  # the same weights must give the same labels
    return [(f"Inference, SST-2 ({env.args.inference_examples} sentences), fp32", "sentences/s", rows)]


if __name__ == "__main__":
    main()
