#!/usr/bin/env bash
# LoRA against full fine-tuning, in the host and in PyTorch + PEFT, side by side on this machine (dev-only:
# needs torch, transformers and peft). Never two programs at once.
#
# On SmolLM2-135M's shape (hidden 576, 30 layers, 9/3 heads, vocab 49,152; batch 4 x 256), runs host
# full fine-tuning, host `--lora-r R`, PyTorch full fine-tuning and PyTorch + PEFT with the same adapter
# (rank R, alpha 2R, TARGETS), and prints tokens/s and peak RSS of each, LoRA's share of full
# fine-tuning's peak memory and its speed-up, in each program, and host / PEFT.
#
#   bench/lora.sh
#   R=8 TARGETS=all-linear bench/lora.sh
#
# Environment: R (default 16), TARGETS (default q_proj,v_proj), STEPS/WARMUP (default 4/1), THREADS
# (default: nproc), NO_BUILD=1 to use the binaries as they are, LOG_DIR for the full outputs.
set -euo pipefail
cd "$(dirname "$0")/.."

R=${R:-16}
TARGETS=${TARGETS:-q_proj,v_proj}
STEPS=${STEPS:-4}
WARMUP=${WARMUP:-1}
THREADS=${THREADS:-$(nproc)}
LOG_DIR=${LOG_DIR:-$(mktemp -d -t bench-lora.XXXXXX)}
mkdir -p "$LOG_DIR"
HOST=target/release/host
if [[ -z "${NO_BUILD:-}" ]]; then
    cargo build --release -p host -p neg_p
fi
ARGS="--hidden 576 --intermediate 1536 --layers 30 --heads 9 --kv-heads 3 --vocab 49152 --batch 4 --seq 256"
ARGS="$ARGS --steps $STEPS --warmup $WARMUP --threads $THREADS"
LORA="--lora-r $R --lora-targets $TARGETS"

field() { sed -n "s/^$2: \([0-9.]*\).*/\1/p" "$1" | tail -n 1; }

echo "== $ARGS"
# shellcheck disable=SC2086
"$HOST" bench $ARGS | tee "$LOG_DIR/host-full.txt"
# shellcheck disable=SC2086
"$HOST" bench $ARGS $LORA | tee "$LOG_DIR/host-lora.txt"
# shellcheck disable=SC2086
python3 bench/pytorch_reference.py $ARGS | tee "$LOG_DIR/pytorch-full.txt"
# shellcheck disable=SC2086
python3 bench/pytorch_reference.py $ARGS $LORA | tee "$LOG_DIR/pytorch-lora.txt"

values=()
for run in host-full host-lora pytorch-full pytorch-lora; do
    values+=("$(field "$LOG_DIR/$run.txt" "tokens\/s")" "$(field "$LOG_DIR/$run.txt" "peak RSS")")
done
echo "== summary (LoRA r $R on $TARGETS; logs in $LOG_DIR)"
python3 - "${values[@]}" <<'PY'
import sys
hf, hfm, hl, hlm, pf, pfm, pl, plm = map(float, sys.argv[1:])
print(f"host:    full {hf:.1f} tokens/s, {hfm:.0f} MiB; LoRA {hl:.1f} tokens/s, {hlm:.0f} MiB: "
      f"{hl / hf:.2f}x the speed, {100 * hlm / hfm:.0f} % of the peak RSS")
print(f"pytorch: full {pf:.1f} tokens/s, {pfm:.0f} MiB; PEFT {pl:.1f} tokens/s, {plm:.0f} MiB: "
      f"{pl / pf:.2f}x the speed, {100 * plm / pfm:.0f} % of the peak RSS")
print(f"host LoRA / PEFT: {hl / pl:.2f}x the speed, {100 * hlm / plm:.0f} % of the peak RSS")
PY
