"""The registry of environments: `make(name)` builds any of them.

All follow the interface of agents/env_base.py (gymnax-style `reset` / `step`
with auto-reset):

  obs, state = env.reset(key)
  obs, state, reward, terminated, truncated, info = env.step(key, state, action)

Registered: the gridworlds of Oh et al. (2020) used by Optim4RL
(gridworlds.py), gymnax's Catch-bsuite, CartPole-v1, Acrobot-v1 and the
MinAtar games Breakout, SpaceInvaders, Asterix and Freeway (the adapter below),
and the Brax tasks ant, humanoid, walker2d, inverted_pendulum, halfcheetah,
hopper (brax_envs.py; Brax itself is imported when one is built). The
implementations import only env_base, so there is no import cycle.
"""

from typing import Callable, Dict, Tuple

import jax.numpy as jnp

from agents import brax_envs
from agents import env_base
from agents import gridworlds

Environment = env_base.Environment  # re-exported: the interface
StepOutput = env_base.StepOutput


class GymnaxEnvironment(Environment):
  """A gymnax environment behind the same interface (gymnax auto-resets)."""

  def __init__(self, gymnax_id: str):
    import gymnax  # pylint: disable=g-import-not-at-top
    self.name = gymnax_id
    self._env, self._params = gymnax.make(gymnax_id)
    self.num_actions = int(self._env.action_space(self._params).n)
    self.observation_shape = tuple(
        self._env.observation_space(self._params).shape)

  def reset_env(self, key):
    return self._env.reset_env(key, self._params)

  def step_env(self, key, state, action):
    obs, state, reward, done, _ = self._env.step_env(
        key, state, action, self._params)[:5]
    return obs, state, reward, done, jnp.zeros_like(done)

  def reset(self, key):
    return self._env.reset(key, self._params)

  def step(self, key, state, action):
    obs, state, reward, terminated, truncated, _ = self._env.step(
        key, state, action, self._params)
    return (obs, state, jnp.asarray(reward, jnp.float32),
            jnp.asarray(terminated, bool), jnp.asarray(truncated, bool), {})


_GYMNAX = {
    'catch': 'Catch-bsuite',
    'cartpole': 'CartPole-v1',
    'acrobot': 'Acrobot-v1',
    'breakout_minatar': 'Breakout-MinAtar',
    'space_invaders_minatar': 'SpaceInvaders-MinAtar',
    'freeway_minatar': 'Freeway-MinAtar',
    # Meta-training's discrete PPO task (configs/meta_mix.py); the other
    # gymnax envs here are held out from it.
    'asterix_minatar': 'Asterix-MinAtar',
}


def gymnax_names() -> Tuple[str, ...]:
  """The gymnax environments of the registry (A2C / PPO on discrete
  actions)."""
  return tuple(_GYMNAX)


# name -> constructor (keyword arguments are the env's options).
_REGISTRY: Dict[str, Callable[..., Environment]] = {
    **{name: (lambda n=name: gridworlds.GridWorld(n))
       for name in gridworlds.GRIDWORLDS},
    **{name: (lambda g=gid: GymnaxEnvironment(g))
       for name, gid in _GYMNAX.items()},
    **{name: (lambda n=name, **kw: brax_envs.BraxEnvironment(n, **kw))
       for name in brax_envs.BRAX_ENVS},
}


def names() -> Tuple[str, ...]:
  """All environment names `make` accepts."""
  return tuple(sorted(_REGISTRY))


def make(name: str, **kwargs) -> Environment:
  """Builds the environment called `name` (see `names()`).

  Keyword arguments go to its constructor (e.g. `episode_length=` for Brax).
  """
  if name not in _REGISTRY:
    raise ValueError(
        f'env_name: unknown environment {name!r}; allowed: {sorted(_REGISTRY)}')
  try:
    return _REGISTRY[name](**kwargs)
  except TypeError as e:
    raise ValueError(f'{name}: unsupported options {sorted(kwargs)}') from e
