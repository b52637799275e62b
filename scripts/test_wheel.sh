#!/usr/bin/env bash
# Builds the wheel, installs it into a fresh virtual environment (with pytest) and runs
# python/package/tests there: the proof that `pip install` gives a working `host` and `import sft_plugins`.
#   scripts/test_wheel.sh [PYTHON]      (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-python3}
venv=$(mktemp -d -t sft-wheel-venv.XXXXXX)
trap 'rm -rf "$venv"' EXIT
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check maturin pytest
PATH="$venv/bin:$PATH" wheel=$(scripts/build_wheel.sh "$venv/wheels" | tail -1)
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$wheel"
# The tests must use the installed module, not the source folder beside them.
(cd "$venv" && "$venv/bin/python" -m pytest -q -p no:cacheprovider "$OLDPWD/python/package/tests")
