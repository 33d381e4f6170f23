#!/usr/bin/env bash
# Install what the tests need, then run them. Usage: bash scripts/test.sh [--fast] [pytest args]
#   --fast: skip the tests marked slow (clusters, interrupts, servers, the browser, benchmark smoke
#   tests): every module is still covered, with one end-to-end sweep on a real local Ray.
# The browser test needs Debian's chromium (/usr/bin/chromium): `apt-get install chromium`
# (.ci/run does this); without it that one test is reported as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# Both run on 2 pytest-xdist workers (-n 2; -n 0 after them runs in one process): each worker has
# its own Ray, MLflow stores and temporary folders; the cluster tests share one worker (loadgroup).
if [ "${1:-}" = "--fast" ]; then
  shift
  exec .venv/bin/python -m pytest -q -rfEs -m "not slow" -n 2 --dist loadgroup "$@"  # tier: fast
fi
exec .venv/bin/python -m pytest -q -rfEs -n 2 --dist loadgroup "$@"  # tier: full
