r"""Trains A2C or PPO agents with a named optax or a learned optimizer.

    python -m launchers.train --config=configs/a2c_catch.py --workdir=runs/catch
    python -m launchers.train --config=configs/a2c_gridworld.py:small_dense_short \
        --config.optimizer.name=optim4rl --workdir=runs/sds_optim4rl
    python -m launchers.train --config=configs/a2c_catch.py \
        --config.optimizer.name=learned \
        --config.optimizer.meta_params_path=runs/meta/meta_params.npz
    python -m launchers.train --config=configs/ppo_brax.py:inverted_pendulum,cpu \
        --workdir=runs/ppo_ip

Several seeds train at once (`--config.num_seeds=N`, vmapped). Writes
`returns.csv` (mean episode return per logging chunk, per seed),
`learning_curve.png` and `summary.json` into --workdir. The agents are
checkpointed into --workdir every two minutes and on SIGTERM, and the same
command continues from the latest checkpoint (another config in the same
--workdir is refused, naming the fields that differ). The work is
`launchers.lib.training.train`; this file is its command line.
"""

import os

from absl import app
from absl import flags
import numpy as np

from launchers.lib import driver
from launchers.lib import training
from launchers.lib import runtime
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory.')


def main(argv):
  cfg = runtime.start(argv, _CONFIG.value)
  workdir = _WORKDIR.value or os.path.join('runs', f'train_{cfg.env_name}')
  stop = driver.stop_on_sigterm()
  result = training.train(cfg, workdir, resume=True, stop=stop)
  if result['stopped_early']:
    raise SystemExit(f'stopped at {result["env_steps"][-1]:,} env steps '
                     f'(per agent); the same command continues from '
                     f'{os.path.join(workdir, "checkpoints")}')
  speed = (f'{result["steps_per_second"]:,.0f} env-steps/s after '
           f'{result["compile_seconds"]:.1f}s compile'
           if np.isfinite(result['compile_seconds'])
           else 'finished before (nothing left to run)')
  print(f'final mean return {np.nanmean(result["final_return"]):.3f} '
        f'(per seed {np.round(result["final_return"], 3).tolist()}); '
        f'{speed}; outputs in {workdir}')
  if result['nonfinite']:
    raise SystemExit('parameters became NaN/inf')


if __name__ == '__main__':
  app.run(main)
