"""Does padding the vocabulary to a multiple of 64 speed up training on this machine?

Tensor cores prefer matrix sizes that are multiples of 64, and BERT's 30,522-token vocabulary is not one: the
embedding and the tied MLM decoder are (30522, C). Padding them to 30,528 rows costs 6 unused rows. This times one
MLM training step (forward, backward, AdamW) of bert-mini at 32 x 128 tokens, 15% masked, with both vocabulary
sizes: the two models alternate in one process and the medians are compared, so a busy machine slows both alike.
bertlite keeps a change only where it wins; on a CPU this one does not (docs/performance.md has the figures).

    python scripts/benchmark_vocab_padding.py [--repeats 15] [--precision auto|bf16|fp32]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from bertlite.models import BertForMaskedLM, preset
from bertlite.precision import cuda_bf16_is_native

BATCH, SEQ, MASKED = 32, 128, 0.15


def cpu_has_bf16() -> bool:
    try:
        return "avx512_bf16" in open("/proc/cpuinfo").read() or "amx_bf16" in open("/proc/cpuinfo").read()
    except OSError:
        return False


def build(vocab: int, device: torch.device):
    torch.manual_seed(0)
    model = BertForMaskedLM(preset("bert-mini", vocab_size=vocab, max_seq_len=SEQ, dropout=0.0,
                                   attention_dropout=0.0)).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    n = int(MASKED * BATCH * SEQ)
    batch = dict(input_ids=torch.randint(5, 30522, (BATCH, SEQ), generator=g),  # real tokens only, either way
                 mlm_positions=torch.randperm(BATCH * SEQ, generator=g)[:n],
                 mlm_labels=torch.randint(5, 30522, (n,), generator=g))
    return model, optimizer, {k: v.to(device) for k, v in batch.items()}


def step(model, optimizer, batch, autocast) -> None:
    with autocast():
        loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = args.precision == "bf16" or (args.precision == "auto" and (
        cuda_bf16_is_native() if device.type == "cuda" else cpu_has_bf16()))
    autocast = (lambda: torch.autocast(device.type, torch.bfloat16)) if bf16 else contextlib.nullcontext
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    cases = {vocab: build(vocab, device) for vocab in (30522, 30528)}
    times: dict[int, list[float]] = {vocab: [] for vocab in cases}
    for vocab, case in cases.items():  # warm-up
        for _ in range(2):
            step(*case, autocast)
    for _ in range(args.repeats):
        for vocab, case in cases.items():
            sync()
            start = time.perf_counter()
            step(*case, autocast)
            sync()
            times[vocab].append(time.perf_counter() - start)
    print(f"device {device}, {torch.get_num_threads()} threads, {'bf16 autocast' if bf16 else 'fp32'}, "
          f"bert-mini MLM step at {BATCH}x{SEQ}, median of {args.repeats}")
    print("| vocabulary | step (ms) | tokens/s |\n|---:|---:|---:|")
    for vocab, t in times.items():
        median = statistics.median(t)
        print(f"| {vocab:,} | {median * 1e3:.1f} | {BATCH * SEQ / median:,.0f} |")
    ratio = statistics.median(times[30522]) / statistics.median(times[30528])
    print(f"speed-up from padding to 30,528: {ratio:.3f}x")


if __name__ == "__main__":
    main()
