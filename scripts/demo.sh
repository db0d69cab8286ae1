#!/usr/bin/env bash
# Install tierwise into ./.venv and run the offline end-to-end demo on the embedded default policy.
# Extra arguments go to `tierwise demo` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/tierwise demo "$@"
