#!/usr/bin/env bash
# The README's test command: sets itself up on a fresh machine, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-system-deps.sh
source scripts/venv.sh

ruff check .
exec python -m pytest -q -p no:cacheprovider "$@"
