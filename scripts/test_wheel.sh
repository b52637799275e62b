#!/usr/bin/env bash
# Builds the wheel once, installs it into a fresh virtual environment of every Python 3.9–3.13 this
# machine has (python3 at least; with pytest; NumPy comes as the wheel's dependency) and runs
# python/package/tests in each: the proof that `pip install` gives a working `host`, its plugins,
# Python objectives and `import sft_plugins`, on every Python the one wheel claims.
#   scripts/test_wheel.sh [PYTHON ...]      (default: python3 and whichever of python3.9 … python3.13 exist)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d -t sft-wheel.XXXXXX)
trap 'rm -rf "$work"' EXIT
pip_install() { "$1/bin/python" -m pip install --quiet --disable-pip-version-check "${@:2}"; }

pythons=("$@")
if [ ${#pythons[@]} -eq 0 ]; then
    pythons=(python3)
    pyenv_root=$(pyenv root 2>/dev/null || true)
    for minor in 9 10 11 12 13; do
        if "python3.$minor" -c '' 2>/dev/null; then
            pythons+=("python3.$minor")
        elif [ -n "$pyenv_root" ]; then
            # pyenv's shims answer only for the selected versions; the installed ones are here.
            for found in "$pyenv_root"/versions/3.$minor.*/bin/python3; do
                [ -x "$found" ] && pythons+=("$found") && break
            done
        fi
    done
fi

python3 -m venv "$work/build"
pip_install "$work/build" maturin
wheel=$(PATH="$work/build/bin:$PATH" scripts/build_wheel.sh "$work/wheels" | tail -1)
echo "wheel: $wheel ($(du -h "$wheel" | cut -f1))"

declare -A seen=()
for python in "${pythons[@]}"; do
    version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    [ -n "${seen[$version]:-}" ] && continue
    seen[$version]=1
    venv="$work/venv-$version"
    "$python" -m venv "$venv"
    pip_install "$venv" "$wheel" pytest
    echo "Python $version ($python):"
    # From outside the repository, so the tests import the installed module, not the source beside them.
    (cd "$venv" && "$venv/bin/python" -m pytest -q -p no:cacheprovider "$repo/python/package/tests")
done
