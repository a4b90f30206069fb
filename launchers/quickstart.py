r"""The main job: meta-train Optim4RL on Catch, then compare it with Adam.

    python -m launchers.quickstart --config=configs/quickstart.py \
        --workdir=runs/quickstart

1. Meta-trains the learned optimizer (launchers/lib/meta_training.py, resumable).
2. Trains fresh A2C agents on Catch, several seeds each, with the
   meta-learned optimizer, the baselines (Adam) and, optionally, the same cell
   with its initial meta-params.
3. Writes comparison.csv, comparison.md (final return mean, std, seeds, ratio
   to Adam) and comparison.png (learning curves) into --workdir.
"""

import copy
import os
import time

from absl import app
from absl import flags

from launchers.lib import common
from launchers.lib import comparison
from launchers.lib import meta_training
from launchers.lib import training
from launchers.lib import runtime
from ml_collections import config_flags

import lopt

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/quickstart.py',
                                          'Config file.')
_WORKDIR = flags.DEFINE_string('workdir', 'runs/quickstart',
                               'Output directory.')


def _eval_config(cfg, name, lr, path=''):
  ev = copy.deepcopy(cfg.eval)
  ev.optimizer.name = name
  ev.optimizer.learning_rate = lr
  ev.optimizer.meta_params_path = path
  return ev


def run(cfg, workdir: str) -> dict:
  """Runs the whole job; returns {label: train result}."""
  t0 = time.time()
  # Validate everything before the first compile.
  meta_training.validate(cfg.meta)
  for name, lr in cfg.baselines.items():
    training.validate(_eval_config(cfg, name, lr))
  agent_lr = float(cfg.meta.tasks.learning_rates[0])

  print('== 1/2 meta-training', flush=True)
  summary = meta_training.meta_train(cfg.meta, os.path.join(workdir, 'meta'))
  meta_seconds = time.time() - t0

  print('== 2/2 training fresh A2C agents on '
        f'{cfg.eval.env_name} ({cfg.eval.num_seeds} seeds each)', flush=True)
  runs = [('optim4rl (meta-learned)',
           _eval_config(cfg, 'learned', agent_lr,
                        summary['meta_params_path']))]
  runs += [(name, _eval_config(cfg, name, lr))
           for name, lr in cfg.baselines.items()]
  if cfg.include_untrained:  # the meta-params meta-training began at
    start = meta_training.start_meta_params(cfg.meta)
    if start is None:
      untrained = _eval_config(cfg, cfg.meta.optimizer.cell, agent_lr)
      untrained.seed = cfg.meta.seed
    else:  # e.g. meta.adam_start: saved, then loaded like the learned one
      path = os.path.join(workdir, 'meta', 'start_meta_params.npz')
      lopt.save(path, start, lopt.learned_optimizer(
          config=meta_training.cell_config(cfg.meta)))
      untrained = _eval_config(cfg, 'learned', agent_lr, path)
    runs.append(('optim4rl (start of meta-training)', untrained))
  results, rows = comparison.compare(
      runs, workdir, os.path.join(workdir, 'comparison.png'),
      f'A2C on {cfg.eval.env_name}: mean ± std over '
      f'{cfg.eval.num_seeds} seeds')
  common.write_csv(os.path.join(workdir, 'comparison.csv'), rows)
  md = _markdown(rows, cfg, summary, meta_seconds, time.time() - t0)
  with open(os.path.join(workdir, 'comparison.md'), 'w') as f:
    f.write(md)
  print(md, flush=True)
  print(f'results: {os.path.abspath(workdir)}/comparison.md, comparison.csv, '
        f'comparison.png; meta-training: {workdir}/meta/', flush=True)
  return results


def _markdown(rows, cfg, summary, meta_seconds, total_seconds) -> str:
  m = cfg.meta.meta
  if meta_training.algorithm(cfg.meta) == 'es':
    how = (f'evolution strategies on whole runs: {summary["meta_step"]} '
           f'generations of {m.es.population_size} members, each scored by '
           f'a {m.es.run_updates}-update run')
  else:
    how = (f'meta-gradients: {summary["meta_step"]} meta-iterations, '
           f'{cfg.meta.tasks.num_agents} agents, K = {m.num_inner_steps}, '
           f'reset_interval {m.reset_interval}')
  lines = [
      f'# A2C on {cfg.eval.env_name}: meta-learned Optim4RL vs baselines', '',
      f'Meta-training ({how}): {meta_seconds:.0f} s. '
      f'Evaluation: {cfg.eval.num_seeds} seeds x {cfg.eval.num_updates} '
      f'updates x {cfg.eval.a2c.num_envs} envs x {cfg.eval.a2c.rollout_len} '
      'steps. Final return = mean episode return over the last 10% of '
      f'training. Whole job: {total_seconds:.0f} s.', '',
      comparison.markdown_table(rows)]
  return '\n'.join(lines)


def main(argv):
  cfg = runtime.start(argv, _CONFIG.value)
  run(cfg, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
