r"""The standard suite: tuned baselines, fresh-seed reports, IQM with CIs.

    python -m launchers.suite --config=configs/evaluate.py:standard \
        [--workdir=docs/results/standard/work] [--phase=tune|report|summarize|all] \
        [--tasks=cartpole,acrobot] [--config.tune_steps=breakout_minatar=2000000]
    python -m launchers.suite --phase=extra --extra=recheck:1 \
        --config.optimizers=adam,adam_step_calibrated --tasks=asterix_minatar

Every optimizer of `config.optimizers` is swept over `config.rate_grid` x
each task's Adam rate on the tuning seeds; the best rate is then run on
fresh seeds at the standard budget, scored per task (random policy 0, tuned
Adam 1) and aggregated with IQM and bootstrap CIs. With --phase=all each
(task, optimizer) is reported as soon as its rate is final (after every
sweep; rechecks and reports optimizer by optimizer, Adam first), so a
stopped run has whole rows. Resumable: each finished
unit (task, optimizer, rate, seed batch) is a set of rows in
<workdir>/units.csv and is skipped on rerun; the unit in flight checkpoints
every two minutes and on SIGTERM, and the same command continues it.
--phase=extra runs only the units --extra names, for a look beside the
protocol (e.g. every optimizer at 1x on the tuning seeds at the standard
budget); no choice or report reads them. The summarize phase writes
summary.md, CSVs and PNGs to --output_dir (default config.output_dir,
docs/results/standard/); --readme also puts the headline table into
README.md between its standard-suite markers, and --cards=lopt/pretrained
each shipped optimizer's figures into its card between the same markers.
The work is
`launchers.lib.suite.run`; this file is its command line.
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

from launchers.lib import driver
from launchers.lib import runtime
from launchers.lib import suite
from launchers.lib import suite_summary

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/evaluate.py:standard', 'Config file.')
_WORKDIR = flags.DEFINE_string('workdir', 'docs/results/standard/work',
                               'Units CSV and curves (resumable).')
_PHASE = flags.DEFINE_enum('phase', 'all', list(suite.PHASES),
                           'tune, report, summarize, all three, or extra '
                           '(only the units --extra names).')
_TASKS = flags.DEFINE_string('tasks', '', 'Comma-separated subset of '
                             'config.envs to run (the summary covers all).')
_EXTRA = flags.DEFINE_string(
    'extra', '', "With --phase=extra: 'STAGE:F[,F...]', the units of stage "
    'tune, recheck or report at those rate factors for every task and '
    'optimizer (a look beside the protocol; no choice reads them).')
_OUTPUT = flags.DEFINE_string('output_dir', '', 'Summary folder (default '
                              'config.output_dir).')
_README = flags.DEFINE_string('readme', '', 'If set (e.g. README.md), write '
                              'the headline table between its markers.')
_CARDS = flags.DEFINE_string('cards', '', 'If set (e.g. lopt/pretrained), '
                             "write each card's suite figures between its "
                             'markers.')


def main(argv):
  cfg = runtime.start(argv, _CONFIG.value)
  stop = driver.stop_on_sigterm()
  try:
    summary = suite.run(cfg, _WORKDIR.value, _PHASE.value, _TASKS.value,
                        _OUTPUT.value or None, stop=stop,
                        extra=_EXTRA.value)
  except suite.Stopped as e:
    raise SystemExit(str(e)) from None
  if summary and _README.value:
    suite_summary.write_readme_table(_README.value, summary)
  if summary and _CARDS.value:
    for path in suite_summary.write_cards(_CARDS.value,
                                          os.path.dirname(summary)):
      print(f'wrote {path}', flush=True)


if __name__ == '__main__':
  app.run(main)
