"""What every section of the benchmark shares: the Case a section times, the device settings (Env), the
interleaved timing of a section's cases (run_cases), peak memory, and the markdown table of a section."""

from __future__ import annotations

import ctypes
import gc
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from bertlite.precision import bf16_is_fast

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


@dataclass
class Timings:
    """What the timed repetitions of a section's cases measured, by case name."""

    rates: dict[str, list[float]]  # one per repetition
    step_rates: dict[str, list[float]]  # one per step, where steps are timed
    paired: dict[str, list[tuple[int, float]]]  # a whole case's partner's steps, each taken before its own
    stepwise: set[str] = field(default_factory=set)  # the cases timed step by step (Case.step)


def run_cases(env: Env, factories: dict[str, Callable[[], Case]], reps: int, memory: bool = True,
              pass_chunks: int | None = None, reference: str = "transformers") -> list[dict]:
    """Build every case, warm each up, then time ``reps`` interleaved repetitions. Cases that expose single
    training steps interleave step by step (A, B, C, A, B, C, ... within a repetition), so that a few seconds
    of load from elsewhere fall on all of them alike; the others (a Trainer.fit, a pass) run whole, in turn.
    With ``pass_chunks``, a case's step is a chunk of a pass: a repetition is that many rounds (one pass of each
    case, the cases taking turns chunk by chunk), and rows report passes, not chunks.
    The first case whose name starts with ``reference`` is the reference of the ratio column: for
    step-interleaved cases the median over rounds (or passes) of each one's ratio, else the ratio of the
    medians. A whole case with ``interleave`` takes turns step by step with that case (``of_interleaved``: the
    median of its steps' rates over the partner's). ``--cases`` keeps only the rows whose names contain one of
    its strings."""
    keep = env.args.cases
    cases = {name: make() for name, make in factories.items() if not keep or any(k in name for k in keep)}
    for case in cases.values():
        case.warmup()
    env.sync()
    timings = time_cases(env, cases, reps, pass_chunks)
    flops = {name: case.flops for name, case in cases.items()}
    del cases  # the models go before the memory of each is measured on its own
    release_memory(env)
    rows = [case_row(env, name, timings, flops[name], factories[name] if memory else None, pass_chunks)
            for name in timings.rates]
    add_reference_ratios(env, rows, timings.stepwise, pass_chunks, reference)
    return rows


def time_cases(env: Env, cases: dict[str, Case], reps: int, pass_chunks: int | None) -> Timings:
    """``reps`` repetitions: in each, rounds of one step of every stepwise case, then every whole case in turn
    (a whole case with a partner runs the partner's step before each of its own)."""
    timings = Timings({name: [] for name in cases}, {name: [] for name in cases}, {name: [] for name in cases})
    stepwise = {name: case for name, case in cases.items() if case.step is not None}
    timings.stepwise = set(stepwise)
    partners = {name: next((c for n, c in stepwise.items() if case.interleave in n), None)
                for name, case in cases.items() if case.interleave}
    for _ in range(reps):
        done = {name: [] for name in stepwise}
        for _ in range(pass_chunks or env.args.steps):  # rounds: one step of each case
            for name, case in stepwise.items():
                done[name].append(case.step())
        for name, case in cases.items():
            if name in stepwise:
                units = done[name]
            else:
                partner, paired = partners.get(name), timings.paired[name]
                env.sync()
                start = time.perf_counter()
                units = case.run(lambda p=partner, into=paired: into.append(p.step())) if partner else case.run()
                env.sync()
                if not isinstance(units, list):  # a whole pass: no per-step figures
                    timings.rates[name].append(units / (time.perf_counter() - start))
                    continue
            timings.step_rates[name] += [u / s for u, s in units]  # units: [(units, seconds) per step]
            timings.rates[name].append(sum(u for u, _ in units) / sum(s for _, s in units))
    return timings


def case_row(env: Env, name: str, timings: Timings, flops: float, factory: Callable[[], Case] | None,
             pass_chunks: int | None) -> dict:
    """One case's row: its median rate, peak memory (from a fresh ``factory()``, if given) and FLOP/s, and for a
    case that took turns with a partner, its steps' rates against the partner's."""
    # the median step: a burst of load from elsewhere on a shared machine slows some steps, not the median
    per_step = timings.step_rates[name] if not pass_chunks else []
    row = {"case": name, "median": statistics.median(per_step or timings.rates[name]),
           "rates": timings.rates[name], "step_rates": timings.step_rates[name],
           "peak_memory_mib": peak_memory(factory, env) if factory else None}
    if flops:
        row["tflops_per_sec"] = flops * row["median"] / 1e12
    if timings.paired[name]:  # each step against the partner's step just before it
        row["interleaved_step_rates"] = [u / s for u, s in timings.paired[name]]
        median, low, high = paired_ratio(timings.step_rates[name], row["interleaved_step_rates"])
        row["of_interleaved"], row["of_interleaved_range"] = median, [low, high]
    return row


def add_reference_ratios(env: Env, rows: list[dict], stepwise: set[str], pass_chunks: int | None,
                         prefix: str = "transformers") -> None:
    """The ratio column against the first row whose name starts with ``prefix``, and MFU where the device's peak
    is known."""
    reference = next((r for r in rows if r["case"].startswith(prefix)), None)
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
