r"""Meta-trains a learned optimizer (Optim4RL by default) on A2C or PPO agents.

    python -m launchers.meta_train --config=configs/meta_catch.py \
        --workdir=runs/meta_catch
    python -m launchers.meta_train --config=configs/meta_gridworlds.py:six \
        --workdir=runs/meta_six --config.optimizer.cell=l2lgd2 \
        --config.meta.pipeline=False

Resumes automatically from the latest checkpoint in --workdir; SIGTERM saves a
checkpoint and exits cleanly. To choose a checkpoint after the run (e.g. on
a validation set), `--export_step=N` writes checkpoint N's meta-params
(WORKDIR/meta_params_N.npz, or --export_out) and trains nothing:

    python -m launchers.meta_train --config=configs/meta_catch.py \
        --workdir=runs/meta_catch --export_step=100

Writes into --workdir: config.json (at start), metrics.csv (one row per
meta-iteration), meta_training.png, checkpoints/, and meta_params.npz (the
frozen meta-params, loadable by train.py with --config.optimizer.name=learned
--config.optimizer.meta_params_path=...). The work is
`launchers.lib.meta_training.meta_train`; this file is its command line.
"""

import os

from absl import app
from absl import flags

from launchers.lib import driver
from launchers.lib import meta_training
from launchers.lib import runtime
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory.')
_EXPORT_STEP = flags.DEFINE_integer(
    'export_step', None,
    'Train nothing: write the meta-params of this kept checkpoint of '
    '--workdir (the run\'s config given as to resume it) to --export_out.')
_EXPORT_OUT = flags.DEFINE_string(
    'export_out', '', 'With --export_step: the .npz to write (default '
    'WORKDIR/meta_params_STEP.npz).')


def main(argv):
  cfg = runtime.start(argv, _CONFIG.value)
  workdir = _WORKDIR.value or os.path.join(
      'runs', 'meta_' + '_'.join(cfg.tasks.env_names))
  if _EXPORT_STEP.value is not None:
    out = meta_training.export_checkpoint(cfg, workdir, _EXPORT_STEP.value,
                                          _EXPORT_OUT.value or None)
    print(f'meta-params of checkpoint {_EXPORT_STEP.value}: {out}',
          flush=True)
    return
  stop = driver.stop_on_sigterm()
  summary = meta_training.meta_train(cfg, workdir, stop=stop)
  print(f'meta-step {summary["meta_step"]}; skipped meta-updates '
        f'{summary["skipped_meta_updates"]}; frozen meta-params: '
        f'{summary["meta_params_path"]}; outputs in {workdir}', flush=True)


if __name__ == '__main__':
  app.run(main)
