#!/usr/bin/env bash
# Runs the figures quoted in the README and the issue notes, one process per
# setting (so peak memory is per setting), appending JSON lines to $1.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/benchmarks.jsonl}
mkdir -p "$(dirname "$out")"
b() { .venv/bin/python -m launchers.benchmark --out="$out" "$@" 2>&1 | grep '^{'; }
b --mode=random --env=small_dense_short --envs=64
b --mode=random --env=catch --envs=64
b --mode=a2c --env=small_dense_short --envs=64 --steps_per_call=100
b --mode=meta --env=small_dense_short --agents=64
b --mode=meta --env=small_dense_short --agents=64 --noremat
b --mode=meta --env=small_dense_short --agents=64 --nosecond_order
b --mode=meta --env=small_dense_short --agents=64 --cell_hidden=1 --cell_mlp=
b --mode=meta --env=small_dense_short --agents=512 --steps_per_call=2 --calls=1
b --mode=meta --env=catch --agents=512 --steps_per_call=1 --calls=1
# The learned optimizer's cost (issue 10): the reference cell shape, A2C
# with Adam alternated in one process, one update against optax.adam.
b --mode=meta --env=small_dense_short --agents=64 --cell_mlp= --nosecond_order
b --mode=a2c --env=catch --envs=16 --seeds=5 --steps_per_call=50 --calls=20 \
  --a2c_optimizer=both
b --mode=opt --impls=fused --cells=optim4rl --shapes=16x16 \
  --coords=70420,1e6 --bwd_max_coords=1e6 --repeats=11
# Our PPO vs a purejaxrl-style single file on MinAtar Breakout (64 x 128,
# 4 seeds vmapped), alternated in one process (issue 33).
.venv/bin/python -m launchers.ppo_benchmark --env=breakout_minatar --seeds=4 \
  --updates_per_call=8 --rounds=8
