r"""Learned optimizers vs baselines on several envs and seeds: table + plots.

    python -m launchers.evaluate --config=configs/evaluate.py \
        --workdir=runs/eval \
        --config.envs=inverted_pendulum,walker2d \
        --config.optimizers=optim4rl_gridworlds:3e-4,adam:3e-4,rmsprop:3e-4

An optimizer spec is NAME:LEARNING_RATE where NAME is a named optax optimizer
(adam, rmsprop, ...), a shipped learned optimizer (optim4rl_gridworlds), an
untrained cell (optim4rl) or a path to a meta-params .npz file. Each env is
trained with its own family's config: Brax tasks with
configs/ppo_brax.py (the CPU-scale variant unless --config.paper_scale),
gridworlds and Catch with the A2C configs. Writes results.csv and results.md
(final return mean, standard error, std, seeds, ratio to Adam) and one PNG of
learning curves per env into --workdir. The work is
`launchers.lib.comparison.evaluate`; this file is its command line.
"""

from absl import app
from absl import flags

from launchers.lib import comparison
from launchers.lib import runtime
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/evaluate.py',
                                          'Config file.')
_WORKDIR = flags.DEFINE_string('workdir', 'runs/evaluate', 'Output directory.')


def main(argv):
  cfg = runtime.start(argv, _CONFIG.value)
  comparison.evaluate(cfg, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
