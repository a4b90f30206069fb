#!/usr/bin/env bash
# Creates .venv (if absent) and installs the package with the given extras.
# Usage: scripts/ensure_venv.sh [EXTRAS]   e.g. scripts/ensure_venv.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
spec="."
if [ -n "${1:-}" ]; then spec=".[$1]"; fi
stamp=".venv/.installed-$(cat setup.cfg | sha1sum | cut -c1-12)-${1:-base}"
if [ ! -f "$stamp" ]; then
  echo "Installing $spec into .venv (first time takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -m pip install -q -e "$spec" 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c "import jax, haiku, rlax, optax, gymnax, brax, orbax.checkpoint, ml_collections, absl" 2>/dev/null \
    || { echo "install failed: see pip output above" >&2; exit 1; }
  touch "$stamp"
fi
