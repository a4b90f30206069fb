#!/usr/bin/env bash
# Meta-iterations/s of one global population (Catch, 64 agents) on
# 1 process x 1 device, 1 x 8 virtual devices and 2 processes x 4, through
# launchers/tpu.py. On a CPU box the virtual devices share the same cores:
# the figures are the cost of sharding, not a speed-up.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/lopt_scaling}
rm -rf "$work"; mkdir -p "$work"
args=(--job=meta_train --config=configs/meta_catch.py
      --config.num_meta_steps=${STEPS:-60} --config.log_every=10
      --config.save_every=${STEPS:-60} --compilation_cache_dir=)
run() {  # run PROCESSES DEVICES
  local n=$1 d=$2 port=$((20000 + RANDOM % 20000)) i
  export XLA_FLAGS=--xla_force_host_platform_device_count=$d JAX_PLATFORMS=cpu
  if [ "$n" = 1 ]; then
    .venv/bin/python -m launchers.tpu "${args[@]}" --single_process \
        --workdir="$work/${n}x$d" 2>&1 | grep 'meta-iterations/s'
    return
  fi
  for ((i = 1; i < n; i++)); do
    .venv/bin/python -m launchers.tpu "${args[@]}" --workdir="$work/${n}x$d" \
        --coordinator_address=localhost:$port --num_processes=$n \
        --process_id=$i > "$work/${n}x$d.p$i.log" 2>&1 &
  done
  .venv/bin/python -m launchers.tpu "${args[@]}" --workdir="$work/${n}x$d" \
      --coordinator_address=localhost:$port --num_processes=$n \
      --process_id=0 2>&1 | grep 'meta-iterations/s'
  wait
}
run 1 1
run 1 8
run 2 4
