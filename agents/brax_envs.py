"""Brax environments behind the same interface as every other environment.

    env = BraxEnvironment('ant', episode_length=1000)
    obs, state = env.reset(key)
    obs, state, reward, terminated, truncated, info = env.step(key, state, a)

Continuous actions in [-1, 1]^action_size. Episodes are truncated after
`episode_length` steps (`truncated`), terminate when Brax says `done` before
that (`terminated`), and auto-reset (the base class).
"""

from typing import Any, Tuple

import jax
import jax.numpy as jnp

from agents import environments

BRAX_ENVS = ('ant', 'humanoid', 'walker2d', 'inverted_pendulum',
             'halfcheetah', 'hopper')


class BraxEnvironment(environments.Environment):
  """A Brax `PipelineEnv` with episode length and auto-reset."""

  continuous = True

  def __init__(self, name: str, episode_length: int = 1000,
               backend: str = ''):
    if name not in BRAX_ENVS:
      raise ValueError(f'env_name: unknown Brax environment {name!r}; '
                       f'allowed: {list(BRAX_ENVS)}')
    if int(episode_length) < 1:
      raise ValueError(f'episode_length: must be >= 1, got {episode_length}')
    from brax import envs  # pylint: disable=g-import-not-at-top
    kwargs = {'backend': backend} if backend else {}
    self.name = name
    self.episode_length = int(episode_length)
    self._env = envs.get_environment(name, **kwargs)
    self.num_actions = 0  # continuous: see action_size
    self.action_size = int(self._env.action_size)
    self.observation_shape = (int(self._env.observation_size),)

  def reset_env(self, key) -> Tuple[jax.Array, Any]:
    state = self._env.reset(key)
    return state.obs, (state, jnp.zeros((), jnp.int32))

  def step_env(self, key, state, action):
    del key  # Brax dynamics are deterministic
    brax_state, t = state
    brax_state = self._env.step(brax_state, jnp.clip(action, -1., 1.))
    t = t + 1
    truncated = t >= self.episode_length
    terminated = jnp.logical_and(brax_state.done > 0, ~truncated)
    return (brax_state.obs, (brax_state, t), brax_state.reward,
            terminated, truncated)
