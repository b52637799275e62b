#!/usr/bin/env bash
# The GPU check, run on the device machine from the repository root with device/ carried (built here by
# scripts/device/prepare.sh; that machine has no Rust toolchain and no network):
#
#   run(carry=["device"], command="bash scripts/device/gpu_check.sh", timeout_s=600)
#
# 1. nvidia-smi, and which CUDA libraries the host binary resolves to;
# 2. the engine's device tests on cuda:0 (ENGINE_TEST_DEVICE): parity, training, gradients and generate in
#    float32, then parity, training and gradients in bf16 (ENGINE_TEST_DTYPE; tolerances in the tests);
# 3. a short `host train --device cuda:0` in bf16 on configs/default.toml with the plugin .so files of the
#    CPU build (objective, mixer, evaluator);
# 4. `host bench` and bench/pytorch_reference.py, one after the other, on a random model shaped like
#    Qwen2.5-0.5B (hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate 4864, vocab 151936) with
#    batch BATCH (default 4) x 1024 tokens in bf16 (PyTorch: bf16 model, float32 master weights, eager
#    attention, like the host); tokens/s, peak device memory and the ratio host / PyTorch. If the host
#    fails at BATCH (out of memory), both run at BATCH / 2.
#
# Everything it prints also goes under $OUT (the device tool returns that folder): one log per part and
# summary.txt. Exit status: the number of failed parts. Time: BUDGET seconds in all (default 480); each
# part has its own timeout, cut to what is left, and a part that would start with under 20 s left is skipped.
# Environment: BATCH (4), STEPS (6, of which WARMUP 2 are left out of the medians), BUDGET, SKIP_TESTS=1,
# SKIP_BENCH=1.
set -uo pipefail
cd "$(dirname "$0")/../.."
D=$PWD/device
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
BATCH=${BATCH:-4}
STEPS=${STEPS:-6}
WARMUP=${WARMUP:-2}
BUDGET=${BUDGET:-480}
started=$(date +%s)
failures=0
summary=()
note() { echo "$*"; summary+=("$*"); }
elapsed() { echo "$(($(date +%s) - started))s"; }
# limit N: N seconds, or what is left of the budget if that is less; fails when under 20 s are left.
limit() {
    local left=$((BUDGET - ($(date +%s) - started)))
    ((left >= 20)) || return 1
    echo $((left < $1 ? left : $1))
}
skipped() { note "SKIP $1: the time budget ($BUDGET s) is spent [$(elapsed)]"; failures=$((failures + 1)); }
# PTX is compiled for the GPU on first use; keep the driver's cache of it across the processes below.
export CUDA_CACHE_MAXSIZE=2147483648

[[ -f $D/bins.tar.xz ]] || { echo "gpu_check: no device/bins.tar.xz: run scripts/device/prepare.sh and carry device/" >&2; exit 2; }
W=$(mktemp -d)
python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$D/bins.tar.xz" "$W"
HOST=$W/bin/host

# The CUDA 13 libraries (cuBLAS, cuRAND, NVRTC, runtime) of this machine's PyTorch wheels; libcuda.so.1 is
# the driver's.
LIBS=$(python3 - <<'PY'
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
dirs = sorted({d for r in roots for d in glob.glob(os.path.join(r, "nvidia", "*", "lib")) if os.path.isdir(d)})
print(":".join(dirs))
PY
)
# PyTorch's wheels may lack cuRAND (torch 2.15's do), which candle links but this program never calls
# beyond creating a generator: then prepare.sh's stand-in (device/lib) is used, whose generation calls fail.
curand=""
IFS=: read -ra lib_dirs <<<"$LIBS"
for d in "${lib_dirs[@]}"; do [[ -e $d/libcurand.so.10 ]] && curand=$d/libcurand.so.10; done
if [[ -z $curand ]]; then
    LIBS=${LIBS:+$LIBS:}$D/lib
    curand="$D/lib/libcurand.so.10 (prepare.sh's stand-in)"
fi
export LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

{
    nvidia-smi
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    echo "cuRAND: $curand"
    ldd "$HOST" | grep -E "cuda|cublas|curand|nvrtc|not found"
    cat "$D/MANIFEST"
} 2>&1 | tee "$OUT/environment.txt"
if ldd "$HOST" | grep -q "not found"; then
    note "FAIL: the host binary misses libraries (see environment.txt)"
    failures=$((failures + 1))
fi

# 2. Engine tests on the GPU.
if [[ -z ${SKIP_TESTS:-} ]]; then
    for dtype in f32 bf16; do
        for t in parity training gradients generate; do
            [[ $dtype == bf16 && $t == generate ]] && continue # greedy token parity is a float32 promise
            log=$OUT/test-$t-$dtype.txt
            s=$(limit 90) || { skipped "engine test $t ($dtype)"; continue; }
            ENGINE_TEST_DEVICE=cuda:0 ENGINE_TEST_DTYPE=$dtype ENGINE_TEST_FIXTURES=$D/fixtures \
                timeout "$s" "$W/tests/$t" --test-threads 1 --nocapture >"$log" 2>&1
            status=$?
            result=$(grep -E "^test result:" "$log" | tail -n 1)
            if ((status == 0)); then
                note "PASS engine test $t ($dtype, cuda:0): $result [$(elapsed)]"
            else
                note "FAIL engine test $t ($dtype, cuda:0), exit $status: ${result:-see $(basename "$log")} [$(elapsed)]"
                grep -E "^test .* FAILED|panicked|max \|diff\||Error" "$log" | head -n 8
                failures=$((failures + 1))
            fi
            grep -E "max \|logp - transformers\||step [0-9]: loss" "$log" | sed 's/^/    /'
        done
    done
fi

# 3. A short training run on the GPU with the CPU build's plugin files.
log=$OUT/train-default-bf16.txt
if s=$(limit 120); then
    timeout "$s" "$HOST" --plugin-dir "$D/plugins" train --config configs/default.toml --device cuda:0 \
        --set model.dtype=bf16 --set train.max_steps=30 --set train.save_every=0 --set "train.out_dir=\"$W/run\"" \
        >"$log" 2>&1
    status=$?
else
    status=skipped
fi
if [[ $status == skipped ]]; then
    skipped "host train"
elif ((status == 0)); then
    note "PASS host train (configs/default.toml, 30 steps, bf16, cuda:0): $(grep -E '^loss:' "$log"), eval $(grep -oE 'step 30 eval: .*' "$log" | head -n 1) [$(elapsed)]"
else
    note "FAIL host train on cuda:0, exit $status: $(grep '^error:' "$log" | head -n 1) [$(elapsed)]"
    failures=$((failures + 1))
fi
grep -E "^memory estimate|^  |^peak memory|^throughput" "$log" | sed 's/^/    /'

# 4. Throughput and memory against PyTorch, same machine, same shape.
if [[ -z ${SKIP_BENCH:-} ]]; then
    SHAPE=(--hidden 896 --intermediate 4864 --layers 24 --heads 14 --kv-heads 2 --vocab 151936 --seq 1024)
    bench_host() {
        local s
        s=$(limit 200) || { skipped "host bench at batch $1"; return 1; }
        timeout "$s" "$HOST" --plugin-dir "$D/plugins" bench "${SHAPE[@]}" --batch "$1" --steps "$STEPS" \
            --warmup "$WARMUP" --objective neg_p --device cuda:0 --dtype bf16 >"$OUT/bench-host-b$1.txt" 2>&1
    }
    b=$BATCH
    if ! bench_host "$b"; then
        note "host bench failed at batch $b: $(grep '^error:' "$OUT/bench-host-b$b.txt" | head -n 1)"
        b=$((BATCH / 2))
        if ! bench_host "$b" && [[ -f $OUT/bench-host-b$b.txt ]]; then # (a skip is counted already)
            note "FAIL host bench at batch $b too: $(grep '^error:' "$OUT/bench-host-b$b.txt" | head -n 1)"
            failures=$((failures + 1))
        fi
    fi
    if s=$(limit 200); then
        timeout "$s" python3 bench/pytorch_reference.py "${SHAPE[@]}" --batch "$b" --steps "$STEPS" \
            --warmup "$WARMUP" --device cuda:0 --dtype bf16 --attn eager >"$OUT/bench-pytorch-b$b.txt" 2>&1 ||
            { note "FAIL PyTorch reference at batch $b: $(tail -n 1 "$OUT/bench-pytorch-b$b.txt")"; failures=$((failures + 1)); }
    else
        skipped "PyTorch reference"
    fi
    tail -n 12 "$OUT/bench-host-b$b.txt" "$OUT/bench-pytorch-b$b.txt"
    comparison=$(python3 - "$OUT/bench-host-b$b.txt" "$OUT/bench-pytorch-b$b.txt" "$b" <<'PY'
import re, sys
def read(path):
    try:
        text = open(path).read()
    except OSError:
        return None, None, None
    tps = re.findall(r"^tokens/s: ([0-9.]+)", text, re.M)
    mem = re.findall(r"^peak device memory: ([0-9.]+) MiB in use, ([0-9.]+|unknown)", text, re.M)
    return (float(tps[-1]) if tps else None, *(mem[-1] if mem else (None, None)))
(h, hu, ha), (p, pu, pa) = read(sys.argv[1]), read(sys.argv[2])
ratio = f"{h / p:.2f}" if h and p else "n/a"
print(f"Qwen2.5-0.5B shape, bf16, batch {sys.argv[3]} x 1024: host {h} tokens/s, PyTorch {p} tokens/s, host/PyTorch {ratio}; "
      f"peak device memory in use host {hu} MiB / PyTorch {pu} MiB, allocated host {ha} MiB / PyTorch {pa} MiB")
PY
)
    note "$comparison [$(elapsed)]"
fi

{
    echo "== gpu_check summary ($(elapsed), $failures failed)"
    printf '%s\n' "${summary[@]}"
} | tee "$OUT/summary.txt"
rm -rf "$W"
exit "$failures"
