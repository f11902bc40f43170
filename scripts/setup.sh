#!/usr/bin/env bash
# Create .venv and install vidsieve with its test tools. Idempotent: a second run with an
# unchanged pyproject.toml does nothing. Used by `make demo`, `make test` and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
# pip warns once per package about this machine's local index folders; keep real errors visible.
quiet() { "$@" 2> >(grep -v -e "is ignored: it is neither a file nor a directory" >&2); }
PY=${PYTHON:-python3}
VENV=${VIDSIEVE_VENV:-.venv}
stamp="$VENV/.vidsieve-installed"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "[setup] creating $VENV and installing vidsieve (first run takes a few minutes)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
quiet "$VENV/bin/python" -m pip install -q --upgrade pip >&2
# torch and torchvision first, pinned to releases that install from a local wheel cache where one
# exists (a 2-minute install on the project machines); elsewhere pip fetches them from PyPI.
quiet "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1" >&2 \
  || quiet "$VENV/bin/python" -m pip install -q torch torchvision >&2
quiet "$VENV/bin/python" -m pip install -q -e ".[test]" >&2
echo "$want" > "$stamp"
