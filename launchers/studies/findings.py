r"""The paper's ablations at this machine's scale: optimizer structure
(Optim4RL, L2LGD2, LinearOptim, the 2024 variant) and pipeline training.

    python -m launchers.studies.findings --config=launchers/studies/configs/findings.py \
        --workdir=docs/results/findings
    python -m launchers.studies.findings --config=launchers/studies/configs/findings.py \
        --config.run=pipeline --config.seeds=5

Meta-trains every (env, arm, seed) of the chosen studies in its own
resumable folder under `config.runs_dir`, tests each resulting optimizer on
fresh agents beside Adam and the untrained cell, and writes runs.csv,
summary.csv, summary.md and PNGs into --workdir. Rerunning the command
resumes: finished runs are read back. SIGTERM stops after saving the current
meta-training checkpoint. The work is `launchers.studies.lib.ablations.run_studies`.
"""

from absl import app
from absl import flags

from launchers.lib import driver
from launchers.lib import runtime
from launchers.studies.lib import ablations as studies
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', 'launchers/studies/configs/findings.py',
                                          'Config file.')
_WORKDIR = flags.DEFINE_string('workdir', 'docs/results/findings',
                               'Output directory of the summary.')


def main(argv):
  cfg = runtime.start(argv, _CONFIG.value)
  stop = driver.stop_on_sigterm()
  rows = studies.run_studies(cfg, _WORKDIR.value, stop=stop)
  if rows:
    with open(f'{_WORKDIR.value}/summary.md') as f:
      print(f.read(), flush=True)


if __name__ == '__main__':
  app.run(main)
