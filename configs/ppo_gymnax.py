r"""PPO on a gymnax task with purejaxrl's settings (the standard suite's).

The argument is the task (agents.environments.gymnax_names()):

    python -m launchers.train --config=configs/ppo_gymnax.py:breakout_minatar \
        --workdir=runs/breakout --config.num_seeds=4

MinAtar (asterix, breakout, freeway, space_invaders): 64 envs x 128 steps,
4 epochs x 8 minibatches, Adam 1e-3 annealed linearly to 0, clip 0.2,
entropy 0.01, GAE 0.95, gamma 0.99, max grad norm 0.5, separate relu 64-64
actor and critic with orthogonal init, 1e7 env steps. Classic control
(cartpole, acrobot): purejaxrl's CartPole settings, 4 envs x 128 steps,
4 epochs x 4 minibatches, 2.5e-4 annealed, tanh 64-64, 5e5 env steps.
Neither has reward scaling or observation normalisation (purejaxrl has
none). Differences from purejaxrl kept on purpose: no clipped value loss,
Adam's eps 1e-8 (optax's default; purejaxrl 1e-5), and truncated episodes
are not bootstrapped through (agents/ppo.py's GAE).
"""

import ml_collections

from configs import a2c_common

# Tasks with purejaxrl's MinAtar settings; the others its CartPole ones.
MINATAR = ('asterix_minatar', 'breakout_minatar', 'freeway_minatar',
           'space_invaders_minatar')
CLASSIC = ('cartpole', 'acrobot')
# The community's env-step budgets per agent.
MINATAR_STEPS = 10_000_000
CLASSIC_STEPS = 500_000


def get_config(arg: str = 'breakout_minatar'):
  env_name = arg or 'breakout_minatar'
  if env_name not in MINATAR + CLASSIC:
    raise ValueError(f'configs/ppo_gymnax.py: unknown task {env_name!r}; '
                     f'allowed: {list(MINATAR + CLASSIC)}')
  minatar = env_name in MINATAR
  config = a2c_common.base_config(env_name=env_name)
  # Which agent train.py builds: 'a2c' or 'ppo'.
  config.agent = 'ppo'
  # Adam's rate, annealed linearly to 0 over the run's optimizer steps.
  config.optimizer.learning_rate = 1e-3 if minatar else 2.5e-4
  config.optimizer.lr_schedule = 'linear'
  config.optimizer.lr_end = 0.
  config.optimizer.max_grad_norm = 0.5

  config.ppo = ml_collections.ConfigDict()
  # Environments stepped in parallel.
  config.ppo.num_envs = 64 if minatar else 4
  # Environment steps per update.
  config.ppo.unroll_len = 128
  # Minibatches per epoch (must divide num_envs * unroll_len).
  config.ppo.num_minibatches = 8 if minatar else 4
  # Passes over each batch.
  config.ppo.num_epochs = 4
  # PPO ratio clipping.
  config.ppo.clip_eps = 0.2
  # Entropy bonus weight.
  config.ppo.entropy_weight = 0.01
  # Value loss weight.
  config.ppo.value_weight = 0.5
  # Discount gamma.
  config.ppo.discount = 0.99
  # Lambda of GAE.
  config.ppo.gae_lambda = 0.95
  # Rewards are multiplied by this inside the loss (1: none).
  config.ppo.reward_scale = 1.
  # Normalize observations with running statistics (purejaxrl: no).
  config.ppo.normalize_obs = False
  # Separate actor and critic MLPs.
  config.ppo.policy_hidden = (64, 64)
  config.ppo.value_hidden = (64, 64)
  # Hidden nonlinearity (agents.ppo.ACTIVATIONS).
  config.ppo.activation = 'relu' if minatar else 'tanh'
  # Orthogonal init, small policy head (purejaxrl's ActorCritic).
  config.ppo.orthogonal_init = True

  steps = MINATAR_STEPS if minatar else CLASSIC_STEPS
  # Updates per seed: the env-step budget over the batch per update.
  config.num_updates = steps // (config.ppo.num_envs * config.ppo.unroll_len)
  # Updates per logging chunk: about 120 chunks per run, so the final
  # return (the last 10% of chunks) averages a dozen of them.
  config.log_every = max(1, config.num_updates // 120)
  return config
