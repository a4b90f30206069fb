r"""Meta-train Optim4RL directly on PPO agents in Brax tasks (the paper also
meta-trains on ant and humanoid), through the same meta-training code. The
argument lists the tasks; sizes here are CPU-scale.

    python -m launchers.meta_train --config=configs/meta_ppo_brax.py:ant,humanoid \
        --workdir=runs/meta_ppo
"""

from configs import meta_common
from configs import ppo_brax


def get_config(tasks: str = 'ant'):
  names = tuple(n for n in (tasks or 'ant').split(',') if n)
  config = meta_common.base_config()
  # Inner agent: 'a2c' or 'ppo'.
  config.agent = 'ppo'
  config.meta.meta_loss = 'ppo'
  config.tasks.env_names = names
  config.tasks.learning_rates = (3e-4,) * len(names)
  # Reward scale 1, not PPO's 10: the PPO meta-loss is then over 99% value loss
  # (~800 on ant vs a policy term ~1e-4) and the learned update, tuned to
  # the value coordinates, blew the policy's std up (entropy 4 -> 51, return
  # -58 within 100 meta-steps); at 1 the same run stayed bounded.
  config.tasks.reward_scales = (1.,) * len(names)
  config.tasks.num_agents = 4
  config.meta.reset_interval = 64
  # Brax episode length (steps before truncation), as configs/ppo_brax.py.
  config.episode_length = 1000
  # Auto-reset from each env's first initial state, as configs/ppo_brax.py
  # ('sample': a fresh initial state per episode).
  config.reset_mode = 'first'
  # PPO fields as in configs/ppo_brax.py (CPU-scale); each inner update is
  # one full-batch step on a fresh rollout.
  config.ppo = ppo_brax.get_config(names[0] + ',cpu').ppo
  config.ppo.num_envs = 16
  config.ppo.unroll_len = 10
  config.ppo.num_minibatches = 1
  config.ppo.num_epochs = 1
  config.num_meta_steps = 200
  return config
