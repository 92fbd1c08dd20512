#!/usr/bin/env bash
# The README's test command: sets itself up on a fresh machine, then runs the whole suite.
#   scripts/test.sh --quick   only the tests with no heavy mark (no Chromium, Xvfb, PulseAudio, FFmpeg,
#                             S3 server or long waits): under a minute; see tests/support/heavy.py
# Any other argument goes to pytest (a path, -k, -x ...).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-system-deps.sh
source scripts/venv.sh

ruff check .
# pytest rewrites the asserts of its plugins' modules (a few hundred) on every run unless it may cache them.
unset PYTHONDONTWRITEBYTECODE
# --quick is tests/conftest.py's own option, so it passes through like any other.
exec python -m pytest -q -p no:cacheprovider "$@"
