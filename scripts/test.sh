#!/usr/bin/env bash
# Install what the tests need, then run them. Usage: bash scripts/test.sh [pytest args]
# The browser test needs Debian's chromium (/usr/bin/chromium): `apt-get install chromium`
# (.ci/run does this); without it that one test is reported as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m pytest -q -rs "$@"
