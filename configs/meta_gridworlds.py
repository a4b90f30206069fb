r"""Meta-train Optim4RL on gridworlds (paper: 512 agents per task, per-task
learning rate and reward scaling). The argument picks the tasks: 'six' (the
paper's six, default) or one gridworld name.

    python -m launchers.meta_train --config=configs/meta_gridworlds.py:six \
        --workdir=runs/meta_six
    python -m launchers.meta_train \
        --config=configs/meta_gridworlds.py:small_dense_short \
        --workdir=runs/meta_sds --config.tasks.num_agents=64
"""

from configs import meta_common

# name: (agent learning rate, reward scale, reset_interval). Reward scales
# are the paper's; learning rates are in its 1e-3 .. 3e-3 range (1e-3 for the
# two tasks with the largest reward scale per map size); reset intervals span
# its 72 .. 576 (576 for the 500-step tasks, 72 for the 50-step ones).
GRIDWORLD_SETTINGS = {
    'small_dense_long': (1e-3, 1e3, 576),
    'small_dense_short': (3e-3, 1e2, 72),
    'big_sparse_short': (3e-3, 1e2, 72),
    'big_dense_short': (3e-3, 1e1, 72),
    'big_sparse_long': (1e-3, 1e1, 576),
    'big_dense_long': (3e-3, 1e0, 576),
}


def get_config(tasks: str = 'six'):
  config = meta_common.base_config()
  names = (tuple(GRIDWORLD_SETTINGS) if tasks in ('', 'six')
           else tuple(tasks.split(',')))
  # Unknown names are reported by the launcher with the allowed list.
  settings = [GRIDWORLD_SETTINGS.get(n, (1e-3, 1.0, 72)) for n in names]
  config.tasks.env_names = names
  config.tasks.learning_rates = tuple(s[0] for s in settings)
  config.tasks.reward_scales = tuple(s[1] for s in settings)
  config.tasks.num_agents = 512
  config.tasks.reset_intervals = tuple(s[2] for s in settings)
  config.num_meta_steps = 2000
  config.log_every = 10
  config.save_every = 100
  return config
