r"""Meta-trains a learned optimizer (Optim4RL by default) on A2C or PPO agents.

    python -m launchers.meta_train --config=configs/meta_catch.py \
        --workdir=runs/meta_catch
    python -m launchers.meta_train --config=configs/meta_gridworlds.py:six \
        --workdir=runs/meta_six --config.optimizer.cell=l2lgd2 \
        --config.meta.pipeline=False

Resumes automatically from the latest checkpoint in --workdir; SIGTERM saves a
checkpoint and exits cleanly. Writes into --workdir: config.json (at start),
metrics.csv (one row per meta-iteration), meta_training.png, checkpoints/,
and meta_params.npz (the frozen meta-params, loadable by train.py with
--config.optimizer.name=learned --config.optimizer.meta_params_path=...).
The work is `launchers.meta_training.meta_train`; this file is its command
line.
"""

import os
import signal

from absl import app
from absl import flags

from launchers import meta_training
from launchers import runtime
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory.')


def main(argv):
  cfg = runtime.start(argv, _CONFIG.value)
  workdir = _WORKDIR.value or os.path.join(
      'runs', 'meta_' + '_'.join(cfg.tasks.env_names))
  stop = meta_training.StopFlag()
  signal.signal(signal.SIGTERM, stop)
  summary = meta_training.meta_train(cfg, workdir, stop=stop)
  print(f'meta-step {summary["meta_step"]}; skipped meta-updates '
        f'{summary["skipped_meta_updates"]}; frozen meta-params: '
        f'{summary["meta_params_path"]}; outputs in {workdir}', flush=True)


if __name__ == '__main__':
  app.run(main)
