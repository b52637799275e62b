#!/usr/bin/env bash
# Long and variable-length rows: `host bench` against the PyTorch reference, side by side on this machine
# (dev-only: needs torch and transformers). Never two programs at once.
#
# 1. One long row (batch 1) at each length of SEQS: host (tiled attention) against PyTorch with
#    `--attn sdpa` (its memory-efficient attention): tokens/s and peak RSS of both.
# 2. Rows of lengths drawn from LENGTHS (batch 8): host packed, host --padded (the same pass over the
#    padded batch) and PyTorch padded with sdpa: useful tokens/s (tokens that carry loss) and the ratios.
#
#   bench/long_rows.sh
#   SEQS="1024 4096" LENGTHS=32:512 bench/long_rows.sh
#
# Environment: SEQS (default "1024 4096 8192"), LENGTHS (default 32:1024), THREADS (default: nproc),
# NO_BUILD=1 to use the binaries as they are, LOG_DIR for the full outputs.
set -euo pipefail
cd "$(dirname "$0")/.."

SEQS=${SEQS:-"1024 4096 8192"}
LENGTHS=${LENGTHS:-32:1024}
THREADS=${THREADS:-$(nproc)}
LOG_DIR=${LOG_DIR:-$(mktemp -d -t bench-long.XXXXXX)}
mkdir -p "$LOG_DIR"
HOST=target/release/host
if [[ -z "${NO_BUILD:-}" ]]; then
    cargo build --release -p host -p neg_p
fi
SHAPE="--hidden 256 --intermediate 1024 --layers 4 --heads 4 --kv-heads 2 --vocab 512"

field() { sed -n "s/^$2: \([0-9.]*\).*/\1/p" "$1" | tail -n 1; }

summary=()
for seq in $SEQS; do
    args="$SHAPE --batch 1 --seq $seq --steps 3 --warmup 1 --threads $THREADS"
    echo "== one row of $seq tokens: $args"
    # shellcheck disable=SC2086
    "$HOST" bench $args | tee "$LOG_DIR/host-$seq.txt"
    # shellcheck disable=SC2086
    python3 bench/pytorch_reference.py $args --attn sdpa | tee "$LOG_DIR/pytorch-$seq.txt"
    summary+=("$(python3 - "$seq" "$(field "$LOG_DIR/host-$seq.txt" "tokens\/s")" "$(field "$LOG_DIR/pytorch-$seq.txt" "tokens\/s")" \
        "$(field "$LOG_DIR/host-$seq.txt" "peak RSS")" "$(field "$LOG_DIR/pytorch-$seq.txt" "peak RSS")" <<'PY'
import sys
seq, h, t, hr, tr = sys.argv[1], *map(float, sys.argv[2:])
print(f"seq {seq}: tokens/s host {h:.0f}, pytorch sdpa {t:.0f} (host/pytorch {h / t:.2f}); "
      f"peak RSS host {hr:.0f} MiB, pytorch {tr:.0f} MiB")
PY
)")
done

args="$SHAPE --batch 8 --lengths $LENGTHS --steps 4 --warmup 1 --threads $THREADS"
echo "== rows of $LENGTHS tokens: $args"
# shellcheck disable=SC2086
"$HOST" bench $args | tee "$LOG_DIR/host-packed.txt"
# shellcheck disable=SC2086
"$HOST" bench $args --padded | tee "$LOG_DIR/host-padded.txt"
# shellcheck disable=SC2086
python3 bench/pytorch_reference.py $args --attn sdpa | tee "$LOG_DIR/pytorch-padded.txt"
summary+=("$(python3 - "$LENGTHS" "$(field "$LOG_DIR/host-packed.txt" "padding share")" \
    "$(field "$LOG_DIR/host-packed.txt" "useful tokens\/s")" "$(field "$LOG_DIR/host-padded.txt" "useful tokens\/s")" \
    "$(field "$LOG_DIR/pytorch-padded.txt" "useful tokens\/s")" <<'PY'
import sys
lengths, share, packed, padded, torch = sys.argv[1], *map(float, sys.argv[2:])
print(f"lengths {lengths} (padding share {share:.3f}): useful tokens/s host packed {packed:.0f}, host padded {padded:.0f}, "
      f"pytorch sdpa padded {torch:.0f}; packed/padded {packed / padded:.2f}, packed/pytorch {packed / torch:.2f}")
PY
)")

echo "== summary ($THREADS threads; full outputs in $LOG_DIR)"
printf '%s\n' "${summary[@]}"
