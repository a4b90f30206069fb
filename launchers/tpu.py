r"""Runs meta-training or training on many hosts (a TPU pod slice, several
GPU hosts, a SLURM allocation) through JAX's distributed runtime.

Start the same command on every host; the processes meet at the coordinator
and run one program over a global mesh of all their devices:

    # TPU pod slice: on every worker (coordinator and ids auto-detected)
    python -m launchers.tpu --job=meta_train \
        --config=configs/meta_gridworlds.py:six --workdir=gs://bucket/meta_six
    # any hosts: process i of N
    python -m launchers.tpu --job=train --config=configs/ppo_brax.py:ant \
        --coordinator_address=host0:1234 --num_processes=N --process_id=i \
        --workdir=/shared/ppo_ant
    # SLURM / Open MPI: srun / mpirun python -m launchers.tpu ... (auto-detected)

`--job=meta_train` takes the configs of meta_train.py (the population split
over all devices; each host builds only its agents; checkpoints written by
every host for its shards, restored on start, saved on SIGTERM, and
restorable on another device count); `--job=train` those of train.py (seeds
and env batch split over all devices). Only process 0 writes logs, CSV,
plots and exports. The workdir must be a folder every host sees.
"""

import os

from absl import app
from absl import flags
import numpy as np

from launchers.lib import driver
from launchers.lib import meta_training
from launchers.lib import multihost
from launchers.lib import runtime
from launchers.lib import training
from ml_collections import config_flags

JOBS = ('meta_train', 'train')

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory (shared).')
_JOB = flags.DEFINE_enum('job', 'meta_train', JOBS, 'What to run.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', '',
    "HOST:PORT of process 0's coordinator; empty = auto-detect (TPU pods, "
    'SLURM, Open MPI).')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', 0, 'Processes in the job; 0 = auto-detect.')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', -1, 'This process, 0..num_processes-1; -1 = auto-detect.')
_TIMEOUT = flags.DEFINE_integer(
    'coordinator_timeout', 300,
    'Seconds to wait for the coordinator and every process to join.')
_LOCAL_DEVICES = flags.DEFINE_string(
    'local_device_ids', '',
    'Comma-separated local device ids this process uses (e.g. one GPU per '
    'process); empty = all.')
_SINGLE = flags.DEFINE_bool(
    'single_process', False,
    'Skip jax.distributed (one process, all its local devices).')


def main(argv):
  runtime.configure_compile()  # before JAX's backend starts
  runtime.configure_host_memory()  # before any thread of JAX's mallocs
  if not _SINGLE.value:
    multihost.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                         _PROCESS_ID.value, _TIMEOUT.value,
                         _LOCAL_DEVICES.value or None)
  import jax  # pylint: disable=g-import-not-at-top
  if multihost.is_primary():
    cfg = runtime.start(argv, _CONFIG.value)
  else:
    runtime.start_quiet(argv)
    cfg = _CONFIG.value
  multihost.check_same_config(cfg.to_dict())
  workdir = _WORKDIR.value
  if not workdir:
    raise app.UsageError('--workdir is required (a folder every host sees)')
  print(f'process {jax.process_index()} of {jax.process_count()}: '
        f'{jax.local_device_count()} local of {jax.device_count()} devices',
        flush=True)
  if _JOB.value == 'meta_train':
    stop = driver.stop_on_sigterm()
    summary = meta_training.meta_train(cfg, workdir, stop=stop)
    if multihost.is_primary():
      print(f'meta-step {summary["meta_step"]}; '
            f'{summary["meta_steps_per_second"]:.3f} meta-iterations/s after '
            f'the first call ({summary["first_call_seconds"] or 0.:.1f} s) on '
            f'{multihost.describe(multihost.topology())}; frozen '
            f'meta-params: {summary["meta_params_path"]}; outputs in '
            f'{workdir}', flush=True)
  else:
    result = training.train(cfg, workdir)
    if multihost.is_primary():
      print(f'final mean return {np.nanmean(result["final_return"]):.3f}; '
            f'outputs in {os.path.abspath(workdir)}', flush=True)


if __name__ == '__main__':
  app.run(main)
