#!/usr/bin/env bash
# Builds the sft-plugins wheel (python/package): the release `host`, every shipped plugin and the Python
# bridge, staged as wheel data under share/sft-plugins/plugins, plus the `sft_plugins` module. Needs
# maturin (`pip install maturin`). Prints the wheel's path on its last line.
#   scripts/build_wheel.sh [OUT_DIR]      (default: target/wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
out_dir=$(realpath -m "${1:-target/wheels}")
command -v maturin >/dev/null || { echo "error: maturin is not installed (pip install maturin)" >&2; exit 2; }
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

plugins=()
for dir in plugins/*/; do plugins+=("$(basename "$dir")"); done
package_args=()
for name in "${plugins[@]}"; do package_args+=(-p "$name"); done
cargo build --release "${package_args[@]}" -p python-bridge

# Staged fresh every time, so a plugin removed from the workspace does not linger in the wheel.
staged=python/package/staged
rm -rf "$staged"
mkdir -p "$staged/data/share/sft-plugins/plugins" "$staged/data/share/sft-plugins/examples/objectives"
for name in "${plugins[@]}" sft_python; do
    cp "$target_dir/release/lib$name.so" "$staged/data/share/sft-plugins/plugins/"
done
cp python/objectives/*.py "$staged/data/share/sft-plugins/examples/objectives/"

rm -rf "$out_dir" && mkdir -p "$out_dir"
(cd python/package && maturin build --release --compatibility linux --out "$out_dir" >&2)
ls "$out_dir"/sft_plugins-*.whl
