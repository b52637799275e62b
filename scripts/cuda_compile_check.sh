#!/usr/bin/env bash
# Compile check of the `cuda` feature on a machine with no GPU and no CUDA toolkit: installs a pinned
# CUDA 13.0 toolkit from pip wheels, links against a stub libcuda (scripts/cuda_env.sh), and builds the
# host binary with candle's CUDA backend (release, CUDA_COMPUTE_CAP=90, into target/cuda). Runs nothing.
#
#   scripts/cuda_compile_check.sh            # build; prints the wall time of each part
#   CLIPPY=1 scripts/cuda_compile_check.sh   # also clippy the host and engine with the feature
#
# The first run takes ~10-20 minutes on 2 cores (candle's CUDA kernels, then the host's dependencies
# once more in target/cuda); later runs only rebuild what changed. Cargo runs under `nice -n 15`.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
# shellcheck source=scripts/cuda_env.sh
source scripts/cuda_env.sh
cuda_env_setup
toolkit_done=$(date +%s)
nvcc --version | tail -n 2
nice -n 15 cargo build --release -p host --features cuda
build_done=$(date +%s)
if [[ -n "${CLIPPY:-}" ]]; then
    nice -n 15 cargo clippy --release -p host -p engine --features cuda --all-targets -- -D warnings
fi
done_at=$(date +%s)
ls -l "$CARGO_TARGET_DIR/release/host"
echo "cuda compile check passed: toolkit $((toolkit_done - started))s, build $((build_done - toolkit_done))s," \
    "clippy $((done_at - build_done))s, total $((done_at - started))s"
