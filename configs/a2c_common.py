"""Shared A2C training config (every field documented here)."""

import ml_collections


def base_config(env_name: str) -> ml_collections.ConfigDict:
  """The paper's A2C settings; experiment files override a few fields."""
  config = ml_collections.ConfigDict()
  # Environment name: a gridworld (small_dense_short, ...), 'catch' or
  # 'cartpole'. See agents.environments.names().
  config.env_name = env_name
  # Seed of the first agent; agent i of num_seeds uses a key split from it.
  config.seed = 0
  # Independent agents trained at once (vmapped), for mean and spread.
  config.num_seeds = 1
  # Total A2C updates per agent.
  config.num_updates = 1000
  # Updates per jitted call; one progress line and CSV row per call.
  config.log_every = 50

  config.optimizer = ml_collections.ConfigDict()
  # adam, rmsprop, sgd, lion, ... (named optax optimizers); optim4rl, l2lgd2,
  # linear (untrained learned optimizer, meta-params from `seed`); learned
  # (meta-params from meta_params_path).
  config.optimizer.name = 'adam'
  # Step size (the learned optimizer's update is -learning_rate * direction).
  config.optimizer.learning_rate = 1e-3
  # Global-norm gradient clip before the optimizer; 0 disables.
  config.optimizer.max_grad_norm = 0.
  # A .npz written by lopt.save / meta_train.py, for name='learned'.
  config.optimizer.meta_params_path = ''

  config.a2c = ml_collections.ConfigDict()
  # Environments per agent, stepped in parallel.
  config.a2c.num_envs = 1
  # Environment steps per update.
  config.a2c.rollout_len = 20
  # Discount gamma.
  config.a2c.discount = 0.995
  # Lambda of the TD(lambda) advantage.
  config.a2c.td_lambda = 0.95
  # Weight of the value loss.
  config.a2c.critic_weight = 0.5
  # Weight of the entropy bonus.
  config.a2c.entropy_weight = 0.01
  # Rewards are multiplied by this inside the loss.
  config.a2c.reward_scale = 1.0

  config.network = ml_collections.ConfigDict()
  # '' = the paper's network for env_name (gridworld MLP 32 / conv 16 + 32,
  # Catch dense 256); else 'mlp' or 'conv' with the sizes below.
  config.network.torso = ''
  # Dense layer widths.
  config.network.hidden_sizes = (32,)
  # Conv filters per layer ('conv' only).
  config.network.conv_channels = (16,)
  # Conv kernel size ('conv' only).
  config.network.kernel = 2
  return config
