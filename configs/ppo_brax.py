r"""PPO on a Brax task with the paper's settings, or a CPU-scale variant.

The argument is the task, optionally followed by ',cpu':

    python -m launchers.train --config=configs/ppo_brax.py:ant --workdir=runs/ant
    python -m launchers.train --config=configs/ppo_brax.py:inverted_pendulum,cpu \
        --workdir=runs/ip --config.optimizer.name=optim4rl_gridworlds

Paper: 4096 envs, unroll 5, 32 minibatches, 4 epochs, clip 0.3, entropy 1e-2,
discount 0.97, reward scaling 10, normalized observations, episode length
1000, 1e8 env steps, Adam lr 3e-4, gradient clip 1.
"""

import ml_collections

from configs import a2c_common


def get_config(arg: str = 'ant'):
  env_name, *flags = (arg or 'ant').split(',')
  cpu = 'cpu' in flags
  # (The a2c / network fields stay, for --config.agent=a2c on discrete envs.)
  config = a2c_common.base_config(env_name=env_name)
  # Which agent train.py builds: 'a2c' or 'ppo'.
  config.agent = 'ppo'
  # Brax episode length (steps before truncation).
  config.episode_length = 1000
  # Auto-reset: 'first' restarts an env from its first initial state (as
  # Brax's trainers); 'sample' draws a new one per episode (slower on CPU).
  config.reset_mode = 'first'
  config.optimizer.learning_rate = 3e-4
  config.optimizer.max_grad_norm = 1.0

  config.ppo = ml_collections.ConfigDict()
  # Environments stepped in parallel.
  config.ppo.num_envs = 64 if cpu else 4096
  # Environment steps per update.
  config.ppo.unroll_len = 5 if not cpu else 20
  # Minibatches per epoch (must divide num_envs * unroll_len).
  config.ppo.num_minibatches = 4 if cpu else 32
  # Passes over each batch.
  config.ppo.num_epochs = 4
  # PPO ratio clipping.
  config.ppo.clip_eps = 0.3
  # Entropy bonus weight.
  config.ppo.entropy_weight = 1e-2
  # Value loss weight.
  config.ppo.value_weight = 0.5
  # Discount gamma.
  config.ppo.discount = 0.97
  # Lambda of GAE.
  config.ppo.gae_lambda = 0.95
  # Rewards are multiplied by this inside the loss.
  config.ppo.reward_scale = 10.
  # Normalize observations with running statistics.
  config.ppo.normalize_obs = True
  # Policy MLP widths (Brax's PPO default).
  config.ppo.policy_hidden = (32, 32, 32, 32)
  # Value MLP widths (Brax's default is 5 x 256; 2 x 64 on CPU).
  config.ppo.value_hidden = (64, 64) if cpu else (256,) * 5

  steps = 300_000 if cpu else 100_000_000
  # Updates per seed: the env-step budget over the batch per update.
  config.num_updates = steps // (config.ppo.num_envs * config.ppo.unroll_len)
  config.log_every = 10 if cpu else 100
  return config
