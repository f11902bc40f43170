#!/usr/bin/env bash
# Install what the serve/ browser test needs: Debian's chromium + chromium-driver, and selenium.
# Idempotent and quick when everything is present. Needs root (or sudo) for apt-get on a fresh machine;
# without either it prints why and exits 0 so the browser test skips with that reason instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else SUDO=none; fi
    if [ "$SUDO" = none ]; then
        echo "setup-browser: chromium/chromedriver missing and not root: the browser test will skip" >&2
    else
        echo "setup-browser: installing chromium and chromium-driver (apt-get)" >&2
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
    fi
fi

if ! "$PY" -c "import selenium" >/dev/null 2>&1; then
    "$PY" -m pip install -q "selenium>=4.20"
fi
