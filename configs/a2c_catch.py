r"""A2C on Catch (bsuite) with the paper's settings.

    python -m launchers.train --config=configs/a2c_catch.py --workdir=runs/catch \
        --config.optimizer.name=rmsprop --config.num_seeds=4
"""


from configs import a2c_common


def get_config():
  config = a2c_common.base_config(env_name='catch')
  # 16 envs x 20 steps per update; 1000 updates = 320k env steps per seed.
  config.a2c.num_envs = 16
  config.num_updates = 1000
  config.log_every = 50
  return config


