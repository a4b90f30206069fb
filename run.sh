#!/usr/bin/env bash
# Sets up .venv if needed, then runs the main job: meta-train Optim4RL on
# Catch, train fresh A2C agents with it and with Adam, compare.
# Extra arguments go to the launcher, e.g. ./run.sh --workdir=runs/mine
set -euo pipefail
cd "$(dirname "$0")"
scripts/ensure_venv.sh
exec .venv/bin/python -m launchers.quickstart --config=configs/quickstart.py "$@"
