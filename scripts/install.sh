#!/usr/bin/env bash
# Create .venv (if needed) and install adalase_tune with its test extras. Idempotent: reinstalls
# only when pyproject.toml changed. Usage: bash scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -c 'import sys; assert sys.version_info >= (3, 10), "adalase_tune needs Python >= 3.10"'
  "$PY" -m venv .venv
fi
stamp=.venv/.adalase_tune.installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing adalase_tune and its dependencies into .venv (first time: a few minutes)..." >&2
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c 'import adalase_tune, ray, mlflow, optuna' # fail loudly if the install did not work
  echo "$want" > "$stamp"
fi
