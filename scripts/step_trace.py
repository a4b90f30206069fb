"""The log-scale `h` of a step-adapted optimizer over one PPO run.

`lopt.step_adaptation` scales its direction by exp(h); this trains one
seed of a standard-suite task with a named step-adapted optimizer at a
rate factor and prints h, the scheduled rate and the return along the run,
to see where the adaptation steers the step (and whether it undoes the
rate's annealing).

    python scripts/step_trace.py asterix_minatar adam_step_adapted_h100 1 1000000

Arguments: task, optimizer (a named one built on `step_adapted`), rate
factor (x the task's Adam rate), env steps (default 1e6), seed (0).
With one scale per network (`adam_step_calibrated_split`) each line has
one h and one step rate per network, in the parameters' order (PPO:
policy, then value).
"""
import sys

import jax
import numpy as np

from launchers.lib import common
from launchers.lib import suite
from launchers.lib import training
from lopt import step_adaptation


def _log_scale(opt_state):
  found = [s.log_scale for s in jax.tree.leaves(
      opt_state, is_leaf=lambda x: isinstance(
          x, step_adaptation.StepAdaptationState))
           if isinstance(s, step_adaptation.StepAdaptationState)]
  if not found:
    raise ValueError('optimizer: has no step_adapted state (not built on '
                     'lopt.step_adaptation.step_adapted)')
  return found[0]


def main(argv):
  if len(argv) < 4:
    raise SystemExit(__doc__)
  task, name, factor = argv[1], argv[2], float(argv[3])
  steps = int(float(argv[4])) if len(argv) > 4 else 1_000_000
  seed = int(argv[5]) if len(argv) > 5 else 0
  cfg = suite.task_config(task, name, factor, seed, 1, steps, steps)
  agent, algo, per_update = training.validate(cfg)
  per_step = common.optimizer_steps_per_update(cfg)
  total = cfg.num_updates * per_step
  optimizer = common.make_optimizer(cfg.optimizer, seed=seed,
                                    total_steps=total,
                                    steps_per_update=per_step)
  lr = common.make_learning_rate(cfg.optimizer.learning_rate,
                                 cfg.optimizer.get('lr_schedule', 'constant'),
                                 cfg.optimizer.get('lr_end', 0.), total)
  state = algo.init_state(agent, optimizer, jax.random.PRNGKey(seed))
  chunk = jax.jit(algo.make_train(agent, optimizer, cfg.log_every))
  print(f'{task} {name} x{factor:g}: {cfg.num_updates} updates, '
        f'{total} optimizer steps', flush=True)
  for i in range(cfg.num_updates // cfg.log_every):
    state, metrics = chunk(state)
    if i % 10 == 9 or i == 0:
      t = (i + 1) * cfg.log_every * per_step
      rate = float(lr(t)) if callable(lr) else lr
      # One h, or one per group (`group_by`).
      hs = np.atleast_1d(np.asarray(_log_scale(state.opt_state)))
      ret = float(np.nanmean(common.mean_episode_return(
          jax.tree.map(lambda x: x[None], metrics))))
      h_text = ' '.join(f'{h:+.2f} (x{np.exp(h):.2f})' for h in hs)
      steps = ' '.join(f'{rate * np.exp(h):.2e}' for h in hs)
      print(f'update {(i + 1) * cfg.log_every:5d} | env steps '
            f'{(i + 1) * cfg.log_every * per_update:9d} | h {h_text} '
            f'| rate {rate:.2e} | step rate {steps} | return {ret:.2f}',
            flush=True)


if __name__ == '__main__':
  main(sys.argv)
