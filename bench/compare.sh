#!/usr/bin/env bash
# Training throughput of `host bench` against the PyTorch reference, side by side on this machine.
#
# For each shape of the issue, runs the host and then PyTorch (never both at once), each with the same
# shape, batch, steps and threads, and prints tokens/s of both and the ratio host / PyTorch. With REPEAT=N
# the pair runs N times alternately, and the summary gives the medians (and the ratio of the medians):
# on a shared machine single runs vary a lot.
#
#   bench/compare.sh            # shapes A and B
#   SHAPES=A bench/compare.sh   # one shape
#   SHAPES=S bench/compare.sh   # SmolLM2-135M's shape
#
# Environment: SHAPES (default "A B"), THREADS (default: nproc), REPEAT (default 1), STEPS_A/WARMUP_A (default 8/2),
# STEPS_B/WARMUP_B and STEPS_S/WARMUP_S (default 4/1), NO_BUILD=1 to use the binaries as they are, LOG_DIR for the full outputs.
set -euo pipefail
cd "$(dirname "$0")/.."

SHAPES=${SHAPES:-"A B"}
REPEAT=${REPEAT:-1}
THREADS=${THREADS:-$(nproc)}
LOG_DIR=${LOG_DIR:-$(mktemp -d -t bench-compare.XXXXXX)}
mkdir -p "$LOG_DIR"
HOST=target/release/host
if [[ -z "${NO_BUILD:-}" ]]; then
    cargo build --release -p host -p neg_p
fi

declare -A ARGS STEPS WARMUP
ARGS[A]="--hidden 256 --intermediate 1024 --layers 4 --heads 4 --kv-heads 2 --vocab 512 --batch 8 --seq 128"
ARGS[B]="--hidden 512 --intermediate 2048 --layers 8 --heads 8 --kv-heads 4 --vocab 32000 --batch 4 --seq 256"
# S: SmolLM2-135M's shape (134.5 M parameters, vocab 49,152).
ARGS[S]="--hidden 576 --intermediate 1536 --layers 30 --heads 9 --kv-heads 3 --vocab 49152 --batch 4 --seq 256"
STEPS[A]=${STEPS_A:-8}
WARMUP[A]=${WARMUP_A:-2}
STEPS[B]=${STEPS_B:-4}
WARMUP[B]=${WARMUP_B:-1}
STEPS[S]=${STEPS_S:-4}
WARMUP[S]=${WARMUP_S:-1}

last_tps() { tail -n 1 "$1" | sed -n 's/^tokens\/s: //p'; }

summary=()
for shape in $SHAPES; do
    args="${ARGS[$shape]} --steps ${STEPS[$shape]} --warmup ${WARMUP[$shape]} --threads $THREADS"
    host_runs=()
    torch_runs=()
    for run in $(seq 1 "$REPEAT"); do
        echo "== shape $shape, run $run of $REPEAT: $args"
        # shellcheck disable=SC2086
        "$HOST" bench $args --objective neg_p | tee "$LOG_DIR/host-$shape-$run.txt"
        # shellcheck disable=SC2086
        python3 bench/pytorch_reference.py $args | tee "$LOG_DIR/pytorch-$shape-$run.txt"
        host_runs+=("$(last_tps "$LOG_DIR/host-$shape-$run.txt")")
        torch_runs+=("$(last_tps "$LOG_DIR/pytorch-$shape-$run.txt")")
    done
    summary+=("$(python3 - "$shape" "${host_runs[*]}" "${torch_runs[*]}" <<'PY'
import statistics, sys
shape, host, torch = sys.argv[1], [float(v) for v in sys.argv[2].split()], [float(v) for v in sys.argv[3].split()]
ratios = " ".join(f"{h / t:.2f}" for h, t in zip(host, torch))
h, t = statistics.median(host), statistics.median(torch)
print(f"shape {shape}: host {h:.1f} tokens/s, pytorch {t:.1f} tokens/s, host/pytorch {h / t:.2f}"
      + (f" (medians of {len(host)} runs; per run {ratios})" if len(host) > 1 else ""))
PY
)")
done

echo "== summary ($THREADS threads; full outputs in $LOG_DIR)"
printf '%s\n' "${summary[@]}"
