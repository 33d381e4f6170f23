#!/usr/bin/env bash
# Install what the tests need, then run them. Usage: bash scripts/test.sh [--fast] [pytest args]
#   --fast: skip the tests marked slow (clusters, interrupts, servers, the browser, benchmark smoke
#   tests): every module is still covered, with one end-to-end sweep on a real local Ray.
# The browser test needs Debian's chromium (/usr/bin/chromium): `apt-get install chromium`
# (.ci/run does this); without it that one test is reported as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
if [ "${1:-}" = "--fast" ]; then
  shift
  exec .venv/bin/python -m pytest -q -rs -m "not slow" "$@"
fi
exec .venv/bin/python -m pytest -q -rs "$@"
