#!/usr/bin/env bash
# Create .venv and install biomedgpt with every extra from the pinned constraints, once.
# Re-runs are instant: the install is skipped while pyproject.toml and the constraints are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
STAMP="$VENV/.biomedgpt-install-stamp"
want="$(cat pyproject.toml requirements/constraints.txt | sha256sum | cut -d' ' -f1)"

if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]; then
  echo "bootstrap: installing biomedgpt[all] from requirements/constraints.txt (first run: about 2 minutes)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # torch is pinned to 2.13.0 in the constraints; on the project machines pip finds its CPU build on disk.
  "$VENV/bin/python" -m pip install --quiet -c requirements/constraints.txt -e ".[all]"
  echo "$want" > "$STAMP"
fi
