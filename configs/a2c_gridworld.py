r"""A2C on one of the gridworlds, paper settings. The argument picks it.

    python -m launchers.train \
        --config=configs/a2c_gridworld.py:small_dense_short \
        --workdir=runs/sds --config.a2c.num_envs=64
"""

from configs import a2c_common


def get_config(env_name: str = 'small_dense_short'):
  config = a2c_common.base_config(env_name=env_name or 'small_dense_short')
  # 64 envs x 20 steps per update; 1000 updates = 1.28M env steps per seed.
  config.a2c.num_envs = 64
  config.num_updates = 1000
  config.log_every = 50
  return config
