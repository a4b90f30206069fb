r"""Gradient statistics of RL agents vs supervised learning, and the identity fit.

    python -m launchers.studies.gradients --config=launchers/studies/configs/gradients.py \
        --workdir=docs/results/grad_stats

Finding 1: histograms and spread (decades) of log10|g| of A2C agents on Catch
and a gridworld and of a supervised MLP regression, at several training
stages. Finding 2: a GRU + MLP head trained to output g from g on those agent
gradients, with raw or `[log(|g| + eps), sign g]` input. Writes CSV, PNG and
summary.json into --workdir. The work is `launchers.studies.lib.gradient_study.run`; this
file is its command line.
"""

import os

from absl import app
from absl import flags

from launchers.studies.lib import gradient_study
from launchers.lib import runtime
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory.')


def main(argv):
  cfg = runtime.start(argv, _CONFIG.value)
  gradient_study.run(cfg, _WORKDIR.value or os.path.join('runs', 'grad_stats'))


if __name__ == '__main__':
  app.run(main)
