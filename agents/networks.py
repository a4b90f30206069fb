"""Haiku actor-critic networks, built once by factories.

The paper's A2C networks (Lan et al., 2023): small gridworlds an MLP with one
hidden layer of 32; big gridworlds conv (16 filters, 2x2) + dense 32; Catch a
dense layer of 256. The policy (logits) and value heads are separate linear
layers on the shared torso.
"""

from typing import NamedTuple, Tuple

import haiku as hk
import jax
import jax.numpy as jnp

TORSOS = ('mlp', 'conv')


class NetworkConfig(NamedTuple):
  """Torso of an actor-critic network.

  Attributes:
    torso: 'mlp' (flatten, dense layers) or 'conv' (conv, flatten, dense).
    hidden_sizes: widths of the dense layers.
    conv_channels: filters of each conv layer ('conv' only).
    kernel: conv kernel size ('conv' only).
  """
  torso: str = 'mlp'
  hidden_sizes: Tuple[int, ...] = (32,)
  conv_channels: Tuple[int, ...] = (16,)
  kernel: int = 2


# The paper's networks per environment family.
PAPER_NETWORKS = {
    'small': NetworkConfig('mlp', (32,)),
    'big': NetworkConfig('conv', (32,), (16,), 2),
    'catch': NetworkConfig('mlp', (256,)),
    'cartpole': NetworkConfig('mlp', (64, 64)),
    # Not in the paper: the held-out tasks' defaults.
    'acrobot': NetworkConfig('mlp', (64, 64)),
    # MinAtar: an MLP on the flattened 10x10xC frame. A 16-channel conv
    # torso trains A2C at 4k env-steps/s on this CPU (XLA's conv gradients),
    # too slow for a suite of runs; this MLP, about 10x faster
    # (`launchers.benchmark --mode=a2c --env=breakout_minatar --envs=16`).
    'breakout_minatar': NetworkConfig('mlp', (64, 64)),
    'space_invaders_minatar': NetworkConfig('mlp', (64, 64)),
    'asterix_minatar': NetworkConfig('mlp', (64, 64)),
}


def paper_network(env_name: str) -> NetworkConfig:
  """The paper's network for `env_name` (gridworlds by size, Catch)."""
  for prefix, net in PAPER_NETWORKS.items():
    if env_name.startswith(prefix):
      return net
  return NetworkConfig()


def check_network(config: NetworkConfig) -> None:
  if config.torso not in TORSOS:
    raise ValueError(f'network.torso: unknown torso {config.torso!r}; '
                     f'allowed: {list(TORSOS)}')
  if any(int(h) < 1 for h in tuple(config.hidden_sizes) +
         tuple(config.conv_channels)) or int(config.kernel) < 1:
    raise ValueError(f'network: sizes must be positive ints, got {config}')


def make_actor_critic(num_actions: int, observation_shape: Tuple[int, ...],
                      config: NetworkConfig) -> hk.Transformed:
  """`apply(params, obs[..., *obs_shape]) -> (logits[..., A], value[...])`.

  Any leading batch dimensions of `obs` are kept, so the same transform serves
  `[B, ...]` and `[T, B, ...]` inputs.
  """
  check_network(config)
  obs_ndim = len(observation_shape)

  def forward(obs: jax.Array):
    obs = jnp.asarray(obs, jnp.float32)
    batch_shape = obs.shape[:obs.ndim - obs_ndim]
    x = obs.reshape((-1,) + obs.shape[obs.ndim - obs_ndim:])
    if config.torso == 'conv':
      if x.ndim == 3:
        x = x[..., None]
      for c in config.conv_channels:
        x = jax.nn.relu(hk.Conv2D(c, config.kernel, padding='VALID')(x))
    x = x.reshape((x.shape[0], -1))
    for h in config.hidden_sizes:
      x = jax.nn.relu(hk.Linear(h)(x))
    logits = hk.Linear(num_actions, name='policy')(x)
    value = hk.Linear(1, name='value')(x)[:, 0]
    return (logits.reshape(batch_shape + (num_actions,)),
            value.reshape(batch_shape))

  return hk.without_apply_rng(hk.transform(forward))


