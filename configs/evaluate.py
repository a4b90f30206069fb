r"""launchers/evaluate.py: optimizers x envs x seeds.

    python -m launchers.evaluate --config=configs/evaluate.py:heldout \
        --workdir=runs/heldout      # the held-out suite (see HELDOUT_ENVS)
    python -m launchers.evaluate --config=configs/evaluate.py:validation \
        --workdir=runs/validation   # for choosing variants (VALIDATION_ENVS)

    python -m launchers.evaluate --config=configs/evaluate.py --workdir=runs/eval \
        --config.envs=ant,walker2d,inverted_pendulum,humanoid

The standard suite (launchers/suite.py, not launchers/evaluate.py): per-task
rate sweeps, rates chosen on tuning seeds and reported on fresh ones, IQM
with bootstrap CIs:

    python -m launchers.suite --config=configs/evaluate.py:standard \
        [--phase=tune|report|summarize|all]  # units: docs/results/standard/work
"""

import ml_collections


# Tasks never used to meta-train a shipped optimizer, with the budget of each
# env config (A2C: 16 envs x 20 steps x 1000 updates on gymnax, 64 envs on
# gridworlds; PPO: the CPU Brax variant) unless updates_per_env says less.
HELDOUT_ENVS = ('cartpole,acrobot,breakout_minatar,space_invaders_minatar,'
                'small_sparse_short,small_sparse_long,'
                'hopper,halfcheetah,inverted_pendulum')
# Adam at 0.3x, 1x and 3x each env config's rate (the summary takes the best
# as Adam = 1); RMSProp, the untrained cell and each shipped optimizer at 1x.
HELDOUT_OPTIMIZERS = ('adam:x0.3,adam:default,adam:x3,rmsprop:default,'
                      'optim4rl:default,optim4rl_gridworlds:default,'
                      'optim4rl_ant_ppo:default,'
                      'optim4rl_untrained_ema:default,'
                      'optim4rl_from_adam:default,'
                      'optim4rl_from_adam_mix:default')
# The Brax tasks' CPU budget: 60 PPO updates of 64 envs x 20 steps (77k
# env-steps per seed; about 2 min per run here with 4 seeds).
HELDOUT_UPDATES = 'hopper=60,halfcheetah=60,inverted_pendulum=60'
# Seeds: 16 on the A2C tasks (cheap, and CartPole's final return spreads
# widely between seeds: with 4, a 4-seed mean moved by 0.3 of Adam's level
# between two machines), 8 on inverted_pendulum (as spread, for a Brax
# task), 4 on hopper and halfcheetah.
HELDOUT_SEEDS = 16
HELDOUT_SEEDS_PER_ENV = 'hopper=4,halfcheetah=4,inverted_pendulum=8'


# Where variants of an optimizer (momentum decay, init key, step scale) are
# compared before one is run on the held-out suite: A2C tasks outside it, at
# their configs' budgets (Catch and MinAtar Asterix: 16 envs, the small
# dense gridworlds: 64 envs; 20 steps x 1000 updates). Some are
# meta-training tasks, so this chooses among untrained or rescaled variants;
# it does not measure generalisation.
VALIDATION_ENVS = 'catch,small_dense_short,small_dense_long,asterix_minatar'
# Adam over x0.3..x30 of each config's rate: at these budgets its best is
# near x10 (catch, small_dense_short, small_dense_long), so the grid brackets
# it and the summary's Adam = 1 is a tuned Adam.
VALIDATION_OPTIMIZERS = ('adam:x0.3,adam:default,adam:x3,adam:x10,adam:x30,'
                         'optim4rl_untrained_ema:default,'
                         'optim4rl_from_adam:default')


# The standard suite's tasks: MinAtar and classic control with purejaxrl's
# PPO settings (configs/ppo_gymnax.py), Brax with configs/ppo_brax.py's CPU
# variant.
STANDARD_ENVS = ('cartpole,acrobot,asterix_minatar,breakout_minatar,'
                 'freeway_minatar,space_invaders_minatar,'
                 'hopper,walker2d,inverted_pendulum')
# Its optimizers, by name (each swept over `rate_grid`), in the order the
# standard-budget rechecks run them: Adam (the yardstick), the default
# shipped learned optimizer, Adam with a step that calibrates itself early
# in the run (`lopt.step_adaptation`, the best route against tuned Adam so
# far, docs/results/es), two more baselines (a classic and a recent optax
# one), the gridworld optimizer and the untrained cell.
STANDARD_OPTIMIZERS = ('adam,optim4rl_from_adam_mix,adam_step_calibrated,'
                       'rmsprop,lion,optim4rl_gridworlds,optim4rl')
# Brax's budget in env steps per agent: the largest this 2-core machine runs
# in at most 20 minutes per (optimizer, rate) with 4 seeds batched. PPO
# (configs/ppo_brax.py's CPU variant, Adam, 4 seeds) ran at 10.9k (hopper),
# 9.6k (walker2d) and 76k (inverted_pendulum) env-steps/s over all seeds
# (`python -m launchers.train --config=configs/ppo_brax.py:TASK,cpu
# --config.num_seeds=4 --config.num_updates=40`, the machine otherwise
# idle): 2.5e6 steps a seed is 15 and 17 minutes for hopper and walker2d.
STANDARD_BRAX_STEPS = 2_500_000


def standard_fields(config) -> None:
  """The standard suite's fields (launchers/lib/suite.py reads them)."""
  config.envs = STANDARD_ENVS
  config.optimizers = STANDARD_OPTIMIZERS
  # Rates as multiples of each task config's Adam rate, the same for every
  # optimizer; a best rate on an edge adds the next point beyond it.
  config.rate_grid = '0.1,0.3,1,3,10'
  # At most this many points added beyond each edge of rate_grid.
  config.max_grid_extensions = 2
  # Seeds that choose the rates (run keys split from these base seeds).
  config.tune_seeds = 4
  config.tune_seed_start = 0
  # Fresh seeds that report the chosen rates (a range apart from tuning's).
  config.report_seeds = 8
  config.report_seed_start = 1000
  # Seeds per unit of work (one process run, one CSV append); 0: all of a
  # phase's seeds in one unit (one compile per unit; a stop loses at most
  # the unit in flight).
  config.seeds_per_batch = 4
  # Reduced sweep budgets, 'ENV=STEPS,...' (env steps per agent); tasks not
  # named sweep at their standard budget. Where a sweep is reduced, the
  # chosen rate and its neighbours are rerun at the standard budget on the
  # tuning seeds and the choice is made again among them. Names of tasks
  # outside `envs` are ignored. MinAtar sweeps at 1e6 (a tenth of its 1e7).
  config.tune_steps = ('asterix_minatar=1000000,breakout_minatar=1000000,'
                       'freeway_minatar=1000000,'
                       'space_invaders_minatar=1000000')
  # Brax tasks' standard budget (env steps per agent).
  config.brax_steps = STANDARD_BRAX_STEPS
  # Budgets replacing the standard ones, 'ENV=STEPS,...' (smoke tests and
  # trial runs; the summary states every budget it ran at).
  config.budgets = ''
  # Random-policy floor: steps per seed (with each task's env count;
  # Freeway-MinAtar episodes last 2500 steps, so at least that).
  config.random_steps = 3000
  # Where the summarize phase writes tables, CSVs and plots.
  config.output_dir = 'docs/results/standard'


def get_config(preset: str = ''):
  """preset '' (the fields below), 'heldout' (the held-out suite),
  'validation' (tasks outside it, for choosing variants) or 'standard' (the
  standard suite, `standard_fields`)."""
  config = ml_collections.ConfigDict()
  # Comma-separated env names (Brax tasks train PPO, others A2C).
  config.envs = 'ant,walker2d,inverted_pendulum,humanoid'
  # Comma-separated NAME:LEARNING_RATE specs (LEARNING_RATE a number or
  # 'default', the env config's own; NAME: optax optimizer, shipped
  # learned optimizer, untrained cell, or a meta-params .npz path).
  config.optimizers = 'optim4rl_gridworlds:3e-4,adam:3e-4,rmsprop:3e-4'
  # Learning-rate schedule of every optimizer over its run: constant, linear
  # or cosine, down to learning_rate * lr_end.
  config.lr_schedule = 'constant'
  config.lr_end = 0.
  # Seeds per (env, optimizer), trained at once (vmapped).
  config.num_seeds = 3
  # Per-env seeds overriding the above, 'ENV=N,...' (e.g. 'hopper=4').
  config.seeds_per_env = ''
  # Updates per seed; 0 keeps each env config's budget.
  config.num_updates = 0
  # Per-env updates overriding the above, 'ENV=N,...' (e.g. 'humanoid=100').
  config.updates_per_env = ''
  # Add a uniform-random policy row per env (the floor to compare with).
  config.random_policy = True
  # Brax auto-reset mode ('first' or 'sample'); '' keeps the env config's.
  config.reset_mode = ''
  # Brax at the paper's scale (4096 envs, 1e8 steps) instead of the CPU one.
  config.paper_scale = False
  if preset == 'heldout':
    config.envs = HELDOUT_ENVS
    config.optimizers = HELDOUT_OPTIMIZERS
    config.updates_per_env = HELDOUT_UPDATES
    config.num_seeds = HELDOUT_SEEDS
    config.seeds_per_env = HELDOUT_SEEDS_PER_ENV
  elif preset == 'validation':
    config.envs = VALIDATION_ENVS
    config.optimizers = VALIDATION_OPTIMIZERS
    config.num_seeds = 4
  elif preset == 'standard':
    standard_fields(config)
  elif preset:
    raise ValueError(f"configs/evaluate.py: unknown preset {preset!r}; "
                     "allowed: '', 'heldout', 'validation' or 'standard'")
  return config
