r"""Meta-train Optim4RL on Catch (paper: 64 agents, reset_interval 32 or 64,
K = 4, rollout 20, agent lr 1e-3).

    python -m launchers.meta_train --config=configs/meta_catch.py \
        --workdir=runs/meta_catch --config.meta.pipeline=False
"""

from configs import meta_common


def get_config():
  config = meta_common.base_config()
  config.tasks.env_names = ('catch',)
  config.tasks.learning_rates = (1e-3,)
  config.tasks.reward_scales = (1.0,)
  config.tasks.num_agents = 64
  config.meta.reset_interval = 64
  config.num_meta_steps = 500
  config.log_every = 10
  config.save_every = 50
  return config
