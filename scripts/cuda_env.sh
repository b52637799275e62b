# shellcheck shell=bash
# Sourced by scripts/cuda_compile_check.sh and scripts/device/prepare.sh: makes a CUDA 13.0 toolkit usable
# for building the `cuda` feature on a machine with no GPU and no system CUDA. Works from a fresh clone on
# a fresh machine (no toolkit, no cudarc sources in the cargo registry, no target dir); each step says in
# one line on stderr what it does, and a failure says in one line what failed (then returns 1).
#
# * Installs pinned NVIDIA pip wheels (nvcc, headers, nvvm, the libraries the link needs) into
#   $CUDA_TOOLKIT_DIR (default target/cuda-toolkit); re-installs only when the pins change.
# * Builds a stub libcuda.so (soname libcuda.so.1) exporting every cu* symbol of cudarc's driver bindings:
#   libcuda is the driver and has no wheel. It is only linked against; on a GPU machine the driver's own
#   libcuda.so.1 is loaded (the binary carries no rpath to the stub). cudarc's sources are located (and
#   downloaded when the registry lacks them) with `cargo metadata --features host/cuda`.
# * Adds unversioned symlinks (libcublas.so -> libcublas.so.13, ...) for the linker.
# * Exports PATH, CUDA_ROOT/CUDA_PATH (cudarc's build script adds $CUDA_ROOT/lib and lib/stubs to the link
#   search path), CUDA_COMPUTE_CAP (default 90: H100/H200; nothing to detect it from), CUDARC_SRC, and
#   CARGO_TARGET_DIR (default target/cuda, so the normal target dir is left alone; set it to share one).
#
# The pins match the device machines' driver (580, CUDA 13.0): nvvm/crt from a newer 13.x emit PTX that
# ptxas 13.0 rejects, so they are pinned too (see ../shared/notes/cuda-build.md).

CUDA_WHEELS=(
    "nvidia-cuda-nvcc==13.0.*"
    "nvidia-cuda-runtime==13.0.*"
    "nvidia-cuda-cccl==13.0.*"
    "nvidia-nvvm==13.0.*"
    "nvidia-cuda-crt==13.0.*"
    "nvidia-cublas==13.0.*"
    "nvidia-cuda-nvrtc==13.0.*"
    "nvidia-curand==10.4.0.*"
)

cuda_env_fail() {
    echo "cuda_env: $*" >&2
    return 1
}

cuda_env_setup() {
    local root toolkit cu stamp want
    # The repository root from this file's own place: works in a clone, a worktree or an exported tree.
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || cuda_env_fail "cannot find the repository root" || return 1
    command -v python3 >/dev/null || cuda_env_fail "python3 (with pip) is needed to install the CUDA wheels" || return 1
    command -v cc >/dev/null || cuda_env_fail "a C compiler (cc) is needed to build the stub libcuda" || return 1
    command -v cargo >/dev/null || cuda_env_fail "cargo is not on PATH" || return 1

    toolkit=${CUDA_TOOLKIT_DIR:-$root/target/cuda-toolkit}
    stamp=$toolkit/.wheels
    want="${CUDA_WHEELS[*]}"
    if [[ ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
        echo "cuda_env: installing the CUDA 13.0 wheels into $toolkit (about 1.2 GB)" >&2
        rm -rf "$toolkit"
        python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
            --target "$toolkit" "${CUDA_WHEELS[@]}" ||
            cuda_env_fail "pip could not install ${CUDA_WHEELS[*]} into $toolkit" || return 1
        echo "$want" >"$stamp"
    else
        echo "cuda_env: CUDA 13.0 wheels already in $toolkit" >&2
    fi
    cu=$toolkit/nvidia/cu13
    [[ -x $cu/bin/nvcc ]] || cuda_env_fail "no nvcc in $cu/bin after installing the wheels" || return 1

    # Unversioned names for the linker: libfoo.so -> libfoo.so.N (the first one found).
    local lib base
    for lib in "$cu"/lib/lib*.so.*; do
        [[ -e $lib ]] || continue
        base=${lib%%.so.*}.so
        [[ -e $base ]] || ln -s "$(basename "$lib")" "$base"
    done

    # The stub driver library, from the cu* functions cudarc's bindings declare (a superset of those used).
    # cargo metadata downloads cudarc (an optional dependency, absent from a registry that only built the
    # CPU host) and names its source folder, whatever CARGO_HOME or the registry's folder name.
    local manifest src stub_dir meta_err
    echo "cuda_env: locating cudarc's sources (cargo metadata; downloads them if the registry lacks them)" >&2
    meta_err=$(mktemp)
    manifest=$(cd "$root" && cargo metadata --format-version 1 --locked --features host/cuda 2>"$meta_err" |
        python3 -c 'import json, sys
print(next((p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "cudarc"), ""))') ||
        manifest=""
    if [[ -z $manifest ]]; then
        cuda_env_fail "cannot locate cudarc's sources: cargo metadata --locked --features host/cuda:" \
            "$(grep -m 1 -E '^error' "$meta_err" || echo 'lists no cudarc package')"
        rm -f "$meta_err"
        return 1
    fi
    rm -f "$meta_err"
    src=$(dirname "$manifest")
    [[ -f $src/src/driver/sys/mod.rs ]] || cuda_env_fail "cudarc's driver bindings are missing: $src/src/driver/sys/mod.rs" || return 1
    stub_dir=$cu/lib/stubs
    if [[ ! -f $stub_dir/libcuda.so || $stub_dir/libcuda.so -ot $src/src/driver/sys/mod.rs ]]; then
        mkdir -p "$stub_dir"
        grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$src/src/driver/sys/mod.rs" | awk '{ print $4 }' | sort -u |
            awk 'BEGIN { print "/* Link-time stub of libcuda.so.1 (generated by scripts/cuda_env.sh). */" }
                 { print "int " $1 "(void) { return 999; /* CUDA_ERROR_UNKNOWN */ }" }' >"$stub_dir/libcuda_stub.c" ||
            cuda_env_fail "no cu* functions found in $src/src/driver/sys/mod.rs" || return 1
        cc -shared -fPIC -O0 -Wl,-soname,libcuda.so.1 -o "$stub_dir/libcuda.so" "$stub_dir/libcuda_stub.c" ||
            cuda_env_fail "cc could not build the stub $stub_dir/libcuda.so" || return 1
        echo "cuda_env: stub libcuda.so with $(grep -c '^int ' "$stub_dir/libcuda_stub.c") symbols from $(basename "$src")" >&2
    fi

    export CUDARC_SRC=$src # for scripts/device/prepare.sh's run-time curand stand-in
    export PATH=$cu/bin:$PATH
    export CUDA_ROOT=$cu CUDA_PATH=$cu
    export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/cuda}
    echo "cuda_env: ready: $(nvcc --version | tail -n 1), CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP, target dir $CARGO_TARGET_DIR" >&2
}
