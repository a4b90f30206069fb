r"""launchers/evaluate.py: optimizers x envs x seeds.

    python -m launchers.evaluate --config=configs/evaluate.py --workdir=runs/eval \
        --config.envs=ant,walker2d,inverted_pendulum,humanoid
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  # Comma-separated env names (Brax tasks train PPO, others A2C).
  config.envs = 'ant,walker2d,inverted_pendulum,humanoid'
  # Comma-separated NAME:LEARNING_RATE specs (NAME: optax optimizer, shipped
  # learned optimizer, untrained cell, or a meta-params .npz path).
  config.optimizers = 'optim4rl_gridworlds:3e-4,adam:3e-4,rmsprop:3e-4'
  # Learning-rate schedule of every optimizer over its run: constant, linear
  # or cosine, down to learning_rate * lr_end.
  config.lr_schedule = 'constant'
  config.lr_end = 0.
  # Seeds per (env, optimizer), trained at once (vmapped).
  config.num_seeds = 3
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
  return config
