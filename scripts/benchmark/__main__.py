"""bertlite against Hugging Face transformers, side by side: the same shapes, batch, sequence length, threads,
precision and machine, in one run.

    python -m scripts.benchmark --out benchmark.json            # every section but modern, this machine's defaults
    python -m scripts.benchmark --sections mlm clm --reps 7      # some sections
    python -m scripts.benchmark --quick --out /tmp/b.json        # tiny shapes and few steps (tests/test_benchmark.py)

Sections: mlm (pretraining step, bert-mini and bert-base), finetune (SST-2 passes), inference (predict vs
pipeline), clm (GPT step vs GPT2LMHeadModel), loader (bertlite's DataLoaders alone); and, only when named,
modern (modernbert-mini against bert-mini: the MLM step of their recipes, and inference at 512 tokens with and
without local attention; give it the recipes' vocabulary: --sections modern --vocab-size 8192).

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
import json
import math
import os
import time
from pathlib import Path

import torch

from bertlite.memory import retain_freed_memory

from . import modern, text, train
from .harness import Env, machine, paired_ratio, run_cases, table

SECTIONS = ("mlm", "finetune", "inference", "clm", "loader", "modern")
DEFAULT_SECTIONS = SECTIONS[:-1]  # against transformers; modern, bertlite against itself, when asked for
REPO = Path(__file__).resolve().parents[2]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m scripts.benchmark", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(DEFAULT_SECTIONS),
                   help="default: every section but modern")
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
    p.add_argument("--vocab-size", type=int, default=30522,
                   help="30522 as the released BERTs (the pretraining recipes, for --sections modern: 8192)")
    p.add_argument("--long-seq-len", type=int, default=512, help="modern: the inference rows' sequence length")
    p.add_argument("--long-batch-size", type=int, default=None,
                   help="modern: the inference rows' batch at --long-seq-len (CPU 8, GPU 64)")
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
        args.long_seq_len, args.long_batch_size = 64, 2
        args.steps, args.warmup, args.reps, args.finetune_reps = 2, 1, 2, 1
        args.finetune_examples = args.inference_examples = 64
    args.batch_size = args.batch_size or (256 if gpu else 32)
    args.base_batch_size = args.base_batch_size or (256 if gpu else 8)
    args.long_batch_size = args.long_batch_size or (64 if gpu else 8)
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
        "mlm": lambda: train.mlm_sections(env, tokenizer),
        "clm": lambda: train.clm_sections(env, tokenizer),
        "finetune": lambda: finetune_section(env, tokenizer),
        "inference": lambda: inference_section(env, tokenizer),
        "loader": lambda: train.loader_sections(env, tokenizer, report["sections"]),
        "modern": lambda: modern.modern_sections(env, tokenizer),
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
    rows = run_cases(env, text.finetune_cases(env, tokenizer), args.finetune_reps, not args.no_memory,
                     pass_chunks=chunks)
    dynamic = next((r for r in rows if "DataCollatorWithPadding" in r["case"]), None)
    if dynamic and rows[0] is not dynamic:
        rows[0]["vs_dynamic"], low, high = paired_ratio(rows[0]["rates"], dynamic["rates"])
        rows[0]["note"] = f"{rows[0]['vs_dynamic']:.2f}× dynamic padding [{low:.2f}–{high:.2f}]"
    return [(f"SST-2 fine-tuning, {args.finetune_size}: one pass", "examples/s", rows)]


def inference_section(env: Env, tokenizer) -> list:
    predictions: dict = {}
    chunks = math.ceil(env.args.inference_examples / text.INFERENCE_CHUNK)
    rows = run_cases(env, text.inference_cases(env, tokenizer, predictions), env.args.reps,
                     not env.args.no_memory, pass_chunks=chunks)
    ours, theirs = predictions.get("bertlite"), predictions.get(f"hf{env.args.inference_batch_size}")
    if ours and theirs:
        agree = sum(a == b for a, b in zip(ours, theirs)) / len(ours)
        rows[0]["agreement_with_pipeline"] = agree  # the same weights must give the same labels
    return [(f"Inference, SST-2 ({env.args.inference_examples} sentences), fp32", "sentences/s", rows)]


if __name__ == "__main__":
    main()
