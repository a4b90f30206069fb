#!/usr/bin/env bash
# Sets up .venv (with the test extra) if needed, then runs the test suite.
# Extra arguments go to pytest, e.g. ./test.sh -k optimizer
set -euo pipefail
cd "$(dirname "$0")"
scripts/ensure_venv.sh test
export JAX_PLATFORMS=cpu
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
