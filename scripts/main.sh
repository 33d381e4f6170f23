#!/usr/bin/env bash
# The main job: pre-train on digits 0-4, then benchmark AdaLASE against the baselines on the
# few-sample transfer task (digits 5-9, 50 samples), local Ray. Usage: bash scripts/main.sh [benchmark args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
if [ ! -f runs/digits_source.pt ]; then
  .venv/bin/adalase-tune train search_spaces/digits_source.yaml --save-model runs/digits_source.pt --quiet
fi
exec .venv/bin/adalase-tune benchmark search_spaces/digits_transfer.yaml --out results/digits_transfer "$@"
