"""What a job needs to run on many processes (hosts) at once.

JAX's own multi-controller runtime does the work: every process runs the same
program on a global mesh of all processes' devices (`jax.distributed`);
jit's sharding propagation and XLA's collectives (gloo on CPU, ICI/NCCL on
TPU/GPU) do the cross-host communication. This module holds the few host-side
pieces around it: starting the runtime with clear errors, checking that all
processes run the same config, choosing the process that writes files, and
fetching arrays that span processes.
"""

import hashlib
import json
import socket
import time
from typing import Any, Optional

import jax
import numpy as np


def initialize(coordinator_address: str = '', num_processes: int = 0,
               process_id: int = -1, timeout_seconds: int = 300,
               local_device_ids: Optional[str] = None) -> None:
  """`jax.distributed.initialize`, with every value checked first.

  Empty / 0 / -1 values are left to JAX's auto-detection (TPU pods, SLURM,
  Open MPI, ...). A coordinator that does not answer within
  `timeout_seconds` raises RuntimeError naming it and the timeout.
  """
  if num_processes < 0:
    raise ValueError(f'num_processes: must be >= 0 (0 = auto-detect), got '
                     f'{num_processes}')
  if num_processes and not -1 <= process_id < num_processes:
    raise ValueError(f'process_id: must be in [0, {num_processes}) (or -1 = '
                     f'auto-detect), got {process_id}')
  if coordinator_address and ':' not in coordinator_address:
    raise ValueError(f'coordinator_address: must be HOST:PORT, got '
                     f'{coordinator_address!r}')
  if timeout_seconds < 1:
    raise ValueError(f'coordinator_timeout: must be >= 1 s, got '
                     f'{timeout_seconds}')
  if coordinator_address and process_id > 0:
    # JAX aborts the process (no Python error) when the coordinator never
    # answers; check it can be reached first, with a clear error.
    wait_for_coordinator(coordinator_address, timeout_seconds)
  print(f'jax.distributed: process {process_id if process_id >= 0 else "?"}'
        f' of {num_processes or "?"}, coordinator '
        f'{coordinator_address or "(auto-detected)"}, waiting up to '
        f'{timeout_seconds} s for every process to join', flush=True)
  kwargs = {'initialization_timeout': int(timeout_seconds)}
  if coordinator_address:
    kwargs['coordinator_address'] = coordinator_address
  if num_processes:
    kwargs['num_processes'] = num_processes
  if process_id >= 0:
    kwargs['process_id'] = process_id
  if local_device_ids:
    kwargs['local_device_ids'] = [int(i) for i in local_device_ids.split(',')]
  try:
    jax.distributed.initialize(**kwargs)
  except Exception as e:  # pylint: disable=broad-except
    raise RuntimeError(
        'jax.distributed.initialize failed: coordinator '
        f'{coordinator_address or "(auto-detected)"}, process '
        f'{process_id if process_id >= 0 else "(auto)"} of '
        f'{num_processes or "(auto)"}, timeout {timeout_seconds} s '
        f'(--coordinator_timeout): {type(e).__name__}: {e}') from e


def wait_for_coordinator(address: str, timeout_seconds: float) -> None:
  """Returns once HOST:PORT accepts a TCP connection; RuntimeError naming
  the address and the timeout if it does not within `timeout_seconds`."""
  host, _, port = address.rpartition(':')
  deadline = time.time() + timeout_seconds
  while True:
    try:
      with socket.create_connection((host, int(port)), timeout=2):
        return
    except OSError as e:
      if time.time() >= deadline:
        raise RuntimeError(
            f'coordinator {address} cannot be reached: no answer within the '
            f'{timeout_seconds} s timeout (--coordinator_timeout); is process '
            f'0 running there? ({e})') from e
      time.sleep(0.5)


def is_primary() -> bool:
  """Whether this process writes logs, CSV, plots and exports (process 0)."""
  return jax.process_index() == 0


def topology() -> dict:
  return {'processes': jax.process_count(), 'devices': jax.device_count()}


def describe(topo: dict) -> str:
  """'2 process(es) x 4 device(s) (8 in all)' for a `topology()` dict."""
  p, d = int(topo['processes']), int(topo['devices'])
  return f'{p} process(es) x {d // p} device(s) ({d} in all)'


def config_digest(config: dict) -> str:
  return hashlib.sha256(json.dumps(config, sort_keys=True,
                                   default=str).encode()).hexdigest()


def check_same_config(config: dict) -> None:
  """Raises ValueError on every process if the processes' configs differ."""
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  digest = np.frombuffer(bytes.fromhex(config_digest(config)), np.uint8)
  every = np.asarray(multihost_utils.process_allgather(digest))
  differ = [i for i in range(every.shape[0])
            if not np.array_equal(every[i], every[0])]
  if differ:
    raise ValueError(
        f'config: processes {differ} run a config different from process '
        "0's (same flags and config file on every host are required)")


def fetch(tree: Any) -> Any:
  """Host numpy copies of arrays, gathering those split across processes."""
  def one(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable or (
        x.is_fully_replicated):
      return np.asarray(x)
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return jax.tree.map(one, tree)
