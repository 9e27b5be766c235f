"""Streaming pretraining data, measured (docs/pretraining.md, "Pretraining on your own large corpus").

    python -m scripts.benchmark_streaming                    # 1 GB and 100 MB corpora, all sections
    python -m scripts.benchmark_streaming --sections loader resume --corpus-mb 200

Sections:
- ``corpus``: builds the corpora by shuffling the Gutenberg paragraphs (${BERTLITE_DATA_DIR}/gutenberg_en) into
  16 .jsonl.gz shards, repeated until the uncompressed text reaches the size asked for;
- ``loader``: batches/s of the streaming loader alone (bert-mini blocks of 128, batch 32) with 0, 1 and 2 workers,
  against the batches/s the bert-mini training step consumes (bf16 autocast where the CPU has native bf16);
- ``resume``: the time from a loader's ``load_state_dict`` to its first batch, for positions after 10 and after
  200 batches (no replay: both re-read one shuffle window);
- ``run``: ``bertlite-pretrain data.streaming=true`` on the large and the small corpus: seconds from launch to the
  first training step, and the peak resident memory of the process tree (main process and workers);
- ``map``: the map-style path on the large corpus: preprocessing time and the size of its ``datasets`` cache.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import lightning as L

REPO = Path(__file__).resolve().parents[1]


class FirstStep(L.Callback):
    """Added to the measured ``bertlite-pretrain`` run: writes a flag file when the first training step begins."""

    def __init__(self, flag: str):
        self.flag = Path(flag)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self.flag.exists():
            self.flag.write_text(str(trainer.global_step))


def make_corpus(folder: Path, megabytes: float, data_dir: Path, shards: int = 16, seed: int = 0) -> Path:
    """Shuffled Gutenberg paragraphs until ``megabytes`` of text, as ``shards`` .jsonl.gz files."""
    if (folder / "DONE").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(data_dir / "gutenberg_en" / "train.jsonl.gz", "rt") as f:
        paragraphs = [json.loads(line)["text"] for line in f]
    rng, target, written = random.Random(seed), megabytes * 1e6, 0
    files = [gzip.open(folder / f"part-{s:03d}.jsonl.gz", "wt", compresslevel=1) for s in range(shards)]
    while written < target:
        rng.shuffle(paragraphs)
        for i, text in enumerate(paragraphs):
            files[i % shards].write(json.dumps({"text": text}) + "\n")
            written += len(text) + 1
            if written >= target:
                break
    for f in files:
        f.close()
    (folder / "DONE").write_text(f"{written} characters\n")
    return folder


def tokenizer_for(corpus: Path, out: Path):
    from bertlite.data.tokenizer import get_or_train_tokenizer

    with gzip.open(next(corpus.glob("*.jsonl.gz")), "rt") as f:
        texts = [json.loads(line)["text"] for _, line in zip(range(20000), f)]
    return get_or_train_tokenizer(None, out, iter(texts), 8192, True)


def loader(corpus: Path, tokenizer, workers: int, shuffle_buffer: int = 10000):
    import datasets

    from bertlite.data.objectives import MaskedLM
    from bertlite.data.streaming import StreamingBlocks, stream_loader

    docs = datasets.load_dataset("json", data_files=sorted(map(str, corpus.glob("*.jsonl.gz"))), split="train",
                                 streaming=True)
    blocks = StreamingBlocks(docs, tokenizer, max_seq_len=128, shuffle_buffer=shuffle_buffer)
    return stream_loader(blocks, 32, MaskedLM(tokenizer, mlm_probability=0.15), workers)


def batches_per_second(it, n: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(n):
        next(it)
    return n / (time.perf_counter() - start)


def train_step_rate(tokenizer, batch_iter, steps: int = 20) -> float:
    import torch

    from bertlite.models import BertForMaskedLM
    from bertlite.models.config import preset
    from bertlite.precision import fast_precision

    config = preset("bert-mini", vocab_size=tokenizer.get_vocab_size(), max_seq_len=128)
    model = BertForMaskedLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    bf16 = fast_precision("cpu") == "bf16-mixed"
    batches = [next(batch_iter) for _ in range(steps + 3)]

    def step(b):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(b["input_ids"], None, None, b["mlm_positions"], b["mlm_labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for b in batches[:3]:
        step(b)
    start = time.perf_counter()
    for b in batches[3:]:
        step(b)
    return steps / (time.perf_counter() - start), bf16


def tree_pss(pid: int) -> int:
    """Proportional resident bytes of a process and its descendants (/proc/*/smaps_rollup: pages shared by the
    forked workers count once in all, where a sum of RSS would count them in every process)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            for line in open(f"/proc/{p}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def streaming_run(corpus: Path, tokenizer_file: Path, out: Path, steps: int, workers: int) -> dict:
    """bertlite-pretrain over the stream: seconds to the first step, seconds per step after, peak tree RSS."""
    probe = out / "first_step"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "bertlite.pretrain", "model=bert-mini", "data=text_files",
           f"data.train_files={corpus}/*.jsonl.gz", "data.streaming=true", f"data.num_workers={workers}",
           "data.max_seq_len=128", "data.batch_size=32", "data.max_eval_blocks=64", "data.validation_blocks=64",
           f"tokenizer.path={tokenizer_file}", f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
           "trainer.precision=${fast_precision:cpu}", "callbacks.progress_bar=null", f"hydra.run.dir={out}",
           "+callbacks.probe._target_=scripts.benchmark_streaming.FirstStep", f"+callbacks.probe.flag={probe}"]
    # the child imports the callback from this checkout's scripts package, wherever this was started from
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak, first = 0, None
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.append(proc.stderr.read()), daemon=True)
    reader.start()
    while proc.poll() is None:
        peak = max(peak, tree_pss(proc.pid))
        if first is None and probe.exists():
            first = time.monotonic() - start
        time.sleep(0.2)
    reader.join()
    if proc.returncode != 0:
        raise RuntimeError("".join(stderr)[-3000:])
    total = time.monotonic() - start
    return {"first_step_s": first, "total_s": total, "peak_pss_mb": peak / 2**20}


def resume_time(corpus: Path, tokenizer, after: int, workers: int) -> float:
    first = loader(corpus, tokenizer, workers)
    it = iter(first)
    for _ in range(after + 1):  # one more, as Lightning fetches ahead
        next(it)
    state = first.state_dict()
    del it
    start = time.perf_counter()
    second = loader(corpus, tokenizer, workers)
    second.load_state_dict(state)
    next(iter(second))
    return time.perf_counter() - start


def map_style(corpus: Path, tokenizer, cache: Path) -> dict:
    import datasets

    from bertlite.data.pretraining import tokenize_and_pack

    start = time.perf_counter()
    ds = datasets.load_dataset("json", data_files=sorted(map(str, corpus.glob("*.jsonl.gz"))), split="train",
                               cache_dir=str(cache))
    blocks = tokenize_and_pack(ds, tokenizer, "text", 128, num_proc=2)
    seconds = time.perf_counter() - start
    size = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
    return {"seconds": seconds, "cache_gb": size / 1e9, "blocks": len(blocks)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", nargs="+", default=["corpus", "loader", "resume", "run", "map"])
    p.add_argument("--corpus-mb", type=float, default=1000.0)
    p.add_argument("--small-mb", type=float, default=100.0)
    p.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "bertlite_streaming"))
    p.add_argument("--data-dir", default=os.environ.get("BERTLITE_DATA_DIR", str(REPO.parent / "shared" / "data")))
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    work = Path(args.work_dir)
    big = make_corpus(work / f"corpus_{args.corpus_mb:g}mb", args.corpus_mb, Path(args.data_dir))
    small = make_corpus(work / f"corpus_{args.small_mb:g}mb", args.small_mb, Path(args.data_dir))
    tokenizer_file = work / "tokenizer.json"
    tokenizer = tokenizer_for(small, tokenizer_file)
    print(f"corpora: {big} ({(big / 'DONE').read_text().strip()}, "
          f"{sum(f.stat().st_size for f in big.glob('*.gz')) / 1e9:.2f} GB gzipped); {small}")
    rows = []
    if "loader" in args.sections:
        rates = {}
        for workers in (0, 1, 2):
            # 1,000 batches: 3 windows of 10,000 blocks, so tokenizing and packing are in the figure
            it = iter(loader(big, tokenizer, workers))
            rates[workers] = batches_per_second(it, 1000)
            del it
            rows.append((f"loader alone, {workers} workers", f"{rates[workers]:.1f} batches/s",
                         f"{rates[workers] * 32 * 128:,.0f} tokens/s"))
        it = iter(loader(big, tokenizer, 0))
        step, bf16 = train_step_rate(tokenizer, it)
        del it
        rows.append((f"bert-mini training step ({'bf16' if bf16 else 'fp32'})", f"{step:.1f} batches/s",
                     f"{step * 32 * 128:,.0f} tokens/s"))
        rows.append(("loader (2 workers) / training step", f"{rates[2] / step:.1f}x", ""))
        per_worker = rates[1] * 32 * 128
        rows.append(("tokens/s per worker (1 worker)", f"{per_worker:,.0f}",
                     f"H100 at 800,000 tokens/s needs {-(-800000 // int(per_worker))} such workers"))
    if "resume" in args.sections:
        for after in (10, 200):
            rows.append((f"resume after {after} batches ({args.workers} workers): load + first batch",
                         f"{resume_time(big, tokenizer, after, args.workers):.2f} s", ""))
    if "run" in args.sections:
        for name, corpus in (("large", big), ("small", small)):
            r = streaming_run(corpus, tokenizer_file, work / f"run_{name}", args.steps, args.workers)
            rows.append((f"bertlite-pretrain streaming, {name} corpus ({args.steps} steps, {args.workers} workers)",
                         f"first step after {r['first_step_s']:.1f} s", f"peak memory (PSS) {r['peak_pss_mb']:.0f} MB"))
    if "map" in args.sections:
        cache = work / "map_cache"
        shutil.rmtree(cache, ignore_errors=True)
        r = map_style(big, tokenizer, cache)
        rows.append(("map-style preprocessing of the large corpus", f"{r['seconds']:.0f} s",
                     f"datasets cache {r['cache_gb']:.2f} GB, {r['blocks']:,} blocks"))
        shutil.rmtree(cache, ignore_errors=True)
    print("\n| measurement | value | |\n|---|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
