"""Brax environments behind the same interface as every other environment.

    env = BraxEnvironment('ant', episode_length=1000)
    obs, state = env.reset(key)
    obs, state, reward, terminated, truncated, info = env.step(key, state, a)

Continuous actions in [-1, 1]^action_size. Episodes are truncated after
`episode_length` steps (`truncated`), terminate when Brax says `done` before
that (`terminated`), and auto-reset. Two reset modes:

  * 'first' (default, as Brax's own trainers): an env restarts from the
    initial state it was first reset to. The state carries that first state,
    so a reset is a select, not a physics call.
  * 'sample': every episode starts from a freshly sampled initial state. Under
    `vmap` this runs Brax's `reset` for every env at every step (a select
    cannot skip it): on ant, 64 envs, CPU, about 10% fewer env-steps/s
    (`python -m launchers.benchmark --mode=env --env=ant --reset_mode=...`).
"""

from typing import Any, NamedTuple, Tuple

import jax
import jax.numpy as jnp

from agents import env_base

BRAX_ENVS = ('ant', 'humanoid', 'walker2d', 'inverted_pendulum',
             'halfcheetah', 'hopper')
RESET_MODES = ('first', 'sample')


class BraxEnvState(NamedTuple):
  brax: Any          # brax.envs.State of the running episode
  t: jax.Array       # steps taken in this episode
  first: Any         # the state to restart from ('first' mode), else None


class BraxEnvironment(env_base.Environment):
  """A Brax `PipelineEnv` with episode length and auto-reset."""

  continuous = True

  def __init__(self, name: str, episode_length: int = 1000,
               backend: str = '', reset_mode: str = 'first'):
    if name not in BRAX_ENVS:
      raise ValueError(f'env_name: unknown Brax environment {name!r}; '
                       f'allowed: {list(BRAX_ENVS)}')
    if int(episode_length) < 1:
      raise ValueError(f'episode_length: must be >= 1, got {episode_length}')
    if reset_mode not in RESET_MODES:
      raise ValueError(f'reset_mode: unknown {reset_mode!r}; allowed: '
                       f'{list(RESET_MODES)}')
    from brax import envs  # pylint: disable=g-import-not-at-top
    kwargs = {'backend': backend} if backend else {}
    self.name = name
    self.episode_length = int(episode_length)
    self.reset_mode = reset_mode
    self._env = envs.get_environment(name, **kwargs)
    self.num_actions = 0  # continuous: see action_size
    self.action_size = int(self._env.action_size)
    self.observation_shape = (int(self._env.observation_size),)

  def reset_env(self, key) -> Tuple[jax.Array, BraxEnvState]:
    state = self._env.reset(key)
    first = state if self.reset_mode == 'first' else None
    return state.obs, BraxEnvState(state, jnp.zeros((), jnp.int32), first)

  def step_env(self, key, state: BraxEnvState, action):
    del key  # Brax dynamics are deterministic
    brax_state = self._env.step(state.brax, jnp.clip(action, -1., 1.))
    t = state.t + 1
    truncated = t >= self.episode_length
    terminated = jnp.logical_and(brax_state.done > 0, ~truncated)
    return (brax_state.obs, BraxEnvState(brax_state, t, state.first),
            brax_state.reward, terminated, truncated)

  def step(self, key, state: BraxEnvState, action):
    if self.reset_mode == 'sample':
      return super().step(key, state, action)
    obs, state, reward, terminated, truncated = self.step_env(
        key, state, action)
    done = jnp.logical_or(terminated, truncated)
    brax_state = jax.tree.map(lambda a, b: jnp.where(done, a, b),
                              state.first, state.brax)
    state = BraxEnvState(brax_state, jnp.where(done, 0, state.t), state.first)
    return brax_state.obs, state, reward, terminated, truncated, {}
