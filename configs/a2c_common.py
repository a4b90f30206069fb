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
  # Learning-rate schedule over the run's optimizer steps: constant, linear
  # or cosine, from learning_rate to learning_rate * lr_end (the same for
  # optax and learned optimizers).
  config.optimizer.lr_schedule = 'constant'
  # Final rate as a fraction of learning_rate (linear / cosine).
  config.optimizer.lr_end = 0.
  # Global-norm gradient clip before the optimizer; 0 disables.
  config.optimizer.max_grad_norm = 0.
  # A .npz written by lopt.save / meta_train.py, for name='learned'.
  config.optimizer.meta_params_path = ''

  config.a2c = a2c_fields(reward_scale=True)
  config.network = network_fields()
  return config


def a2c_fields(reward_scale: bool) -> ml_collections.ConfigDict:
  """The paper's A2C settings (shared by training and meta-training)."""
  a2c = ml_collections.ConfigDict()
  # Environments per agent, stepped in parallel.
  a2c.num_envs = 1
  # Environment steps per update (and per meta-loss rollout).
  a2c.rollout_len = 20
  # Discount gamma.
  a2c.discount = 0.995
  # Lambda of the TD(lambda) advantage.
  a2c.td_lambda = 0.95
  # Weight of the value loss.
  a2c.critic_weight = 0.5
  # Weight of the entropy bonus.
  a2c.entropy_weight = 0.01
  if reward_scale:  # meta-training sets it per task instead
    # Rewards are multiplied by this inside the loss.
    a2c.reward_scale = 1.0
  return a2c


def network_fields() -> ml_collections.ConfigDict:
  """Actor-critic network fields; torso '' picks the paper's network."""
  net = ml_collections.ConfigDict()
  # '' = the paper's network for the env (gridworld MLP 32 / conv 16 + 32,
  # Catch dense 256); else 'mlp' or 'conv' with the sizes below.
  net.torso = ''
  # Dense layer widths.
  net.hidden_sizes = (32,)
  # Conv filters per layer ('conv' only).
  net.conv_channels = (16,)
  # Conv kernel size ('conv' only).
  net.kernel = 2
  return net
