#!/usr/bin/env bash
# The main job: AdaLASE against every baseline on the known-answer task (search_spaces/motifs.yaml:
# translate helps at the input and hurts at the hidden layers, by construction), 5 seeds, a local
# Ray, MLflow in ./mlflow.db. About 3 minutes on 2 cores after the install (178 s measured, idle machine:
# benchmarks/results/main_job.md).
# Usage: bash scripts/main.sh [benchmark args, e.g. --seeds 3]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/adalase-tune benchmark search_spaces/motifs.yaml --out results/motifs --name "main-$(date +%Y%m%d-%H%M%S)" "$@"
