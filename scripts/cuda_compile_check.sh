#!/usr/bin/env bash
# Compile check of the `cuda` feature on a machine with no GPU and no CUDA toolkit: installs a pinned
# CUDA 13.0 toolkit from pip wheels, links against a stub libcuda (scripts/cuda_env.sh), and builds the
# host and engine with candle's CUDA backend (CUDA_COMPUTE_CAP=90). Runs nothing on a GPU.
#
#   scripts/cuda_compile_check.sh            # release build into target/cuda (what scripts/device/prepare.sh
#                                            # builds, so it warms that); prints the wall time of each part
#   scripts/cuda_compile_check.sh --clippy   # also clippy the host and engine with the feature (-D warnings)
#   scripts/cuda_compile_check.sh --ci       # what .ci/run does after the tests: build and clippy in the dev
#                                            # profile in the ordinary target dir
#
# --ci shares every dependency the CPU build and tests already compiled (the same profile, target dir and
# RUSTFLAGS; only candle and what depends on it are built again with the feature), so the cold cost is
# candle's CUDA kernels and a check-mode pass for clippy. That build replaces target/debug/host with the
# CUDA binary, so --ci ends with `cargo build --workspace` (nothing to compile: it puts the CPU host back).
#
# A cold release run takes ~10-20 minutes on 2 cores (candle's CUDA kernels, then the host's dependencies
# once more in target/cuda); later runs only rebuild what changed. Cargo runs under `nice -n 15`.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=release
clippy=${CLIPPY:-}
for arg in "$@"; do
    case $arg in
    --clippy) clippy=1 ;;
    --ci) mode=ci clippy=1 ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "cuda_compile_check: unknown argument '$arg' (expected --clippy or --ci)" >&2; exit 2 ;;
    esac
done

started=$(date +%s)
if [[ $mode == ci ]]; then
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
    profile_args=()
    bin_dir=$CARGO_TARGET_DIR/debug
else
    profile_args=(--release)
    bin_dir= # set once cuda_env has chosen the target dir
fi

# The CUDA environment stays inside this subshell: the CPU build that --ci ends with must not see it.
(
    # shellcheck source=scripts/cuda_env.sh
    source scripts/cuda_env.sh
    cuda_env_setup
    toolkit_done=$(date +%s)
    bin_dir=${bin_dir:-$CARGO_TARGET_DIR/release}
    echo "cuda_compile_check: building host and engine with --features cuda ($mode) into $CARGO_TARGET_DIR" >&2
    nice -n 15 cargo build "${profile_args[@]}" --locked -p host -p engine --features cuda
    build_done=$(date +%s)
    ls -l "$bin_dir/host"
    if [[ -n $clippy ]]; then
        echo "cuda_compile_check: clippy of host and engine with --features cuda --all-targets" >&2
        nice -n 15 cargo clippy "${profile_args[@]}" --locked -p host -p engine --features cuda --all-targets \
            -- -D warnings
    fi
    done_at=$(date +%s)
    echo "cuda compile check passed: toolkit $((toolkit_done - started))s, build $((build_done - toolkit_done))s," \
        "clippy $((done_at - build_done))s, total $((done_at - started))s"
)

if [[ $mode == ci ]]; then
    echo "cuda_compile_check: putting the CPU host back in $bin_dir (cargo build --workspace)" >&2
    nice -n 15 cargo build --locked --workspace --quiet
fi
