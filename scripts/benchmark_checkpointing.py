"""What activation checkpointing (model.gradient_checkpointing=true) costs and saves on this machine's CPU.

One MLM training step (forward + backward, fp32, dropout on, as in pretraining) of bert-mini at batch 16 x 128
tokens, with and without checkpointing. Time: the two variants alternate in one process, and the medians are
compared, so a busy machine slows both alike. Memory: each variant runs in a fresh subprocess, on steps after
the weights and gradient buffers exist (so neither is counted):
  - peak tensor memory: the most bytes of tensors alive at once during a step, from the CPU allocator's
    running total that torch.profiler records (profile_memory=True);
  - peak RSS delta: the process's peak resident size (VmHWM) during a step minus its size just before, on a warm
    step and on the cold first step (which also pays one-time allocations). glibc's mmap threshold is pinned
    (MALLOC_MMAP_THRESHOLD_) so that freed tensors go back to the OS and RSS follows the live tensors. The peak
    is reset through /proc/self/clear_refs before each step; getrusage's ru_maxrss cannot be reset, and in a
    child it starts at the parent's RSS at fork time, which would hide a smaller child peak.
Time on a shared, loaded CPU is noisy: the load average is printed, and the ratio of the fastest steps too.
One intra-op thread by default: on a loaded machine, OpenMP threads waiting at a barrier for a preempted sibling
made 2-thread steps 2-3x slower and erratic (1.3-4.5 s for the same step), which buries a 1.3x difference.

    python scripts/benchmark_checkpointing.py [--repeats 9] [--memory-runs 1] [--threads 1]     # about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from torch.profiler import ProfilerActivity, profile

from bertlite.models import BertForMaskedLM, preset

PRESET, BATCH, SEQ = "bert-mini", 16, 128


def build(checkpointing: bool) -> BertForMaskedLM:
    torch.manual_seed(0)  # same weights either way
    model = BertForMaskedLM(preset(PRESET, max_seq_len=SEQ, gradient_checkpointing=checkpointing)).train()
    for p in model.parameters():  # allocate gradient buffers now: backward then accumulates into them in place
        p.grad = torch.zeros_like(p)
    return model


def make_batch() -> dict:
    g = torch.Generator().manual_seed(0)
    vocab = preset(PRESET).vocab_size
    n_masked = int(0.15 * BATCH * SEQ)
    return dict(input_ids=torch.randint(5, vocab, (BATCH, SEQ), generator=g),
                attention_mask=torch.ones(BATCH, SEQ, dtype=torch.long),
                mlm_positions=torch.randperm(BATCH * SEQ, generator=g)[:n_masked],
                mlm_labels=torch.randint(5, vocab, (n_masked,), generator=g))


def step(model: BertForMaskedLM, batch: dict) -> None:
    model(**batch).loss.backward()


def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_rss_delta(fn) -> int:
    """Bytes by which the resident set grew at its peak while fn ran."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = status_kib("VmRSS")
    fn()
    return (status_kib("VmHWM") - before) * 1024


def memory_child(checkpointing: bool) -> None:
    """Runs in a fresh process: prints the peak RSS deltas (cold, warm) and peak tensor bytes of a step."""
    model, batch = build(checkpointing), make_batch()
    cold = peak_rss_delta(lambda: step(model, batch))  # also pays one-time allocations (thread pools, caches)
    warm = peak_rss_delta(lambda: step(model, batch))
    # The profiler's CPU allocator total counts only what is allocated while it records: the step's own bytes.
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(model, batch)
    with tempfile.TemporaryDirectory() as tmp:
        prof.export_chrome_trace(f"{tmp}/trace.json")
        with open(f"{tmp}/trace.json") as f:
            events = json.load(f)["traceEvents"]
    tensors = max(e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]")
    print(json.dumps({"rss_cold": cold, "rss": warm, "tensors": tensors}))


def measure_memory(checkpointing: bool, threads: int) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, __file__, "--memory-child", str(int(checkpointing)), "--threads",
                          str(threads)], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=9, help="timed steps per variant (after one warm-up each)")
    parser.add_argument("--memory-runs", type=int, default=1, help="fresh subprocesses per variant")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads, here and in the children")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child is not None:
        return memory_child(bool(args.memory_child))

    variants = {False: build(False), True: build(True)}
    batch = make_batch()
    times = {False: [], True: []}
    for r in range(args.repeats + 1):
        for flag in ((False, True) if r % 2 == 0 else (True, False)):  # alternate which goes first
            start = time.perf_counter()
            step(variants[flag], batch)
            if r > 0:  # r == 0 warms up both
                times[flag].append(time.perf_counter() - start)
    del variants

    memory = {False: [], True: []}
    for _ in range(args.memory_runs):
        for flag in (False, True):
            memory[flag].append(measure_memory(flag, args.threads))

    def median(flag: bool, key: str) -> float:
        return statistics.median(m[key] for m in memory[flag]) / 2**20  # MiB

    print(f"\n{PRESET}, MLM training step, batch {BATCH} x {SEQ} tokens, fp32, {torch.get_num_threads()} threads, "
          f"medians of {args.repeats} interleaved steps per variant, {args.memory_runs} memory run(s) per variant\n")
    print("| gradient_checkpointing | step time (s) | peak tensor memory (MiB) | peak RSS delta (MiB) |")
    print("|---|---|---|---|")
    row = {f: (statistics.median(times[f]), median(f, "tensors"), median(f, "rss")) for f in (False, True)}
    for flag, (t, m, rss) in row.items():
        print(f"| {str(flag).lower()} | {t:.3f} | {m:.1f} | {rss:.1f} |")
    (t0, m0, r0), (t1, m1, r1) = row[False], row[True]
    print(f"| **ratio (true / false)** | **{t1 / t0:.2f}** | **{m1 / m0:.2f}** | **{r1 / r0:.2f}** |")
    print(f"\nstep time min-max: false {min(times[False]):.3f}-{max(times[False]):.3f} s, "
          f"true {min(times[True]):.3f}-{max(times[True]):.3f} s; ratio of the fastest steps "
          f"{min(times[True]) / min(times[False]):.2f}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"cold first step, peak RSS delta: false {median(False, 'rss_cold'):.1f} MiB, "
          f"true {median(True, 'rss_cold'):.1f} MiB")


if __name__ == "__main__":
    main()
