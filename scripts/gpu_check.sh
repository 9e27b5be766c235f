#!/usr/bin/env bash
# Everything bertlite checks on a GPU, in one call of at most 8 minutes ($BUDGET_S, default 480), offline (see
# ../shared/GPU.md):
#   1. the GPU tests;
#   2. short `bertlite-pretrain trainer=gpu` runs of model=bert-base and model=modernbert-base (GeGLU, rotary
#      positions, local attention through FlexAttention) at seq 128, batch 256, bf16, and their logged train/mfu
#      read back from metrics.csv;
#   3. short runs with trainer=ddp and trainer=fsdp on one device, so that NCCL, the strategies and bf16 start on a
#      real GPU, and their checkpoints loaded with bertlite.load;
#   4. the benchmark against transformers (bert-base MLM, causal LM, SST-2 fine-tuning, inference, compiled rows),
#      last: it prints each section's table to its log as it goes, so a run cut short still reports the first ones.
# Each step has its own time limit, cut to what is left of the budget (less a reserve for the figures at the end);
# a step with under 20 s left is skipped, and the summary says so.
# It installs nothing from the internet: wheels the GPU machine lacks come from .whl/ (GPU.md says how to fill it),
# data from $BERTLITE_DATA_DIR (default .gpu-data/). Logs, metrics and benchmark.json go to $OUT; a table is printed
# last. DRY_RUN=1 checks the commands on any machine instead: every bertlite run prints its composed config
# (`--cfg job`), nothing trains (tests/test_gpu_check.py does this on the CPU).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_check}
RUNS=${RUNS:-/tmp/bertlite_gpu_runs}
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$RUNS"
if [ -d .whl ] && [ -z "${DRY_RUN:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
fi
export BERTLITE_DATA_DIR=${BERTLITE_DATA_DIR:-$PWD/.gpu-data} HF_HOME=${HF_HOME:-/tmp/hf} PYTHONUNBUFFERED=1
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
: > "$OUT/summary.txt"

# the steps end by this time, leaving READBACK_S seconds for the figures read back at the end
READBACK_S=45
DEADLINE=$(( $(date +%s) + ${BUDGET_S:-480} - READBACK_S ))

# step NAME SECONDS COMMAND...: run with a time limit (cut to the budget left), log to $OUT/NAME.log, record the
# exit status and duration
step() {
  local name=$1 limit=$2 start rc left
  shift 2
  start=$(date +%s)
  left=$(( DEADLINE - start ))
  if [ "$left" -lt 20 ]; then
    printf '%-18s skipped: %ss of the budget left\n' "$name" "$left" | tee -a "$OUT/summary.txt"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  printf '%-18s exit %-3s %4ss\n' "$name" "$rc" "$(( $(date +%s) - start ))" | tee -a "$OUT/summary.txt"
}

# appended to every bertlite run: under DRY_RUN it prints its composed config instead of training
DRY=()
[ -n "${DRY_RUN:-}" ] && DRY=(--cfg job)

# one tokenizer and one tokenized corpus for every run: the first run trains and caches them, the others reuse
GUTENBERG=(data=gutenberg data.max_seq_len=128 data.num_proc=8 data.max_eval_blocks=512 callbacks.progress_bar=null
           trainer.log_every_n_steps=10 callbacks.throughput.window=10)
TOKENIZER=$RUNS/pretrain/tokenizer.json

[ -z "${DRY_RUN:-}" ] && nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
[ -z "${DRY_RUN:-}" ] && step gpu_tests 120 $PY -m pytest -q -n 0 -p no:cacheprovider tests/test_gpu.py \
  tests/test_compile.py tests/test_local_attention.py -k "gpu or cuda"

step pretrain_base 120 $PY -m bertlite.pretrain trainer=gpu model=bert-base "${GUTENBERG[@]}" data.batch_size=256 \
  trainer.max_steps=80 trainer.val_check_interval=80 "hydra.run.dir=$RUNS/pretrain" "${DRY[@]}"
[ -z "${DRY_RUN:-}" ] && [ -f "$TOKENIZER" ] || TOKENIZER=null
# the same data, tokenizer and steps through ModernBERT's blocks at base size (22 x 768, GeGLU 1,152)
step pretrain_modern 120 $PY -m bertlite.pretrain trainer=gpu model=modernbert-base "${GUTENBERG[@]}" \
  data.batch_size=256 trainer.max_steps=80 trainer.val_check_interval=80 "tokenizer.path=$TOKENIZER" \
  "hydra.run.dir=$RUNS/modern" "${DRY[@]}"
for strategy in ddp fsdp; do
  step "$strategy" 90 $PY -m bertlite.pretrain "trainer=$strategy" trainer.devices=1 model=bert-mini "${GUTENBERG[@]}" \
    trainer.precision=bf16-mixed trainer.max_steps=20 trainer.val_check_interval=20 "tokenizer.path=$TOKENIZER" \
    "hydra.run.dir=$RUNS/$strategy" "${DRY[@]}"
done
[ -z "${DRY_RUN:-}" ] && step benchmark 240 $PY -m scripts.benchmark --sections mlm clm finetune inference \
  --mlm-sizes bert-base --compile --finetune-reps 3 --out "$OUT/benchmark.json"
[ -n "${DRY_RUN:-}" ] && exit 0

# the figures: logged MFU and throughput of the two base-size runs; the strategies' checkpoints loaded for inference
$PY - "$RUNS" "$OUT" <<'EOF' 2>&1 | tee -a "$OUT/summary.txt"
import csv, json, sys
from pathlib import Path

runs, out = Path(sys.argv[1]), Path(sys.argv[2])
for run, model, log in (("pretrain", "bert-base", "pretrain_base"), ("modern", "modernbert-base", "pretrain_modern")):
    metrics = runs / run / "logs" / "metrics.csv"
    rows = [r for r in csv.DictReader(metrics.open()) if r.get("train/mfu")] if metrics.is_file() else []
    if not rows:
        print(f"{model} pretrain: no train/mfu in {metrics} (see {log}.log)")
        continue
    late = rows[len(rows) // 2:]  # after compilation and warm-up
    mfu = sorted(float(r["train/mfu"]) for r in late)
    tps = sorted(float(r["train/tokens_per_sec"]) for r in late)
    print(f"{model} pretrain (seq 128, batch 256, bf16): median train/mfu {mfu[len(mfu) // 2]:.1%}, "
          f"median {tps[len(tps) // 2]:,.0f} tokens/s over {len(late)} logged windows")
import bertlite

for strategy in ("ddp", "fsdp"):
    ckpt = runs / strategy / "checkpoints" / "last.ckpt"
    try:
        mlm = bertlite.load(ckpt, device="cuda")
        top = mlm.fill_mask("the [MASK] of the house .", top_k=1)[0]["token"]
        print(f"{strategy}: {ckpt.name} loads on cuda ({mlm.dtype}), fill_mask -> {top!r}")
    except Exception as exc:
        print(f"{strategy}: loading {ckpt} failed: {type(exc).__name__}: {exc}")
bench = out / "benchmark.json"
if bench.is_file():
    print(json.dumps({k: v.get("summary", v) if isinstance(v, dict) else v
                      for k, v in json.loads(bench.read_text()).get("sections", {}).items()}, indent=1)[:4000])
EOF
echo "--- summary ($OUT/summary.txt)"
cat "$OUT/summary.txt"
