"""Completed-episode returns, counted in one place (as purejaxrl's LogWrapper).

    env = wrappers.EpisodeReturns(environments.make('catch'))
    obs, state = env.reset(key)
    obs, state, reward, terminated, truncated, info = env.step(key, state, a)

The wrapped env's state carries the undiscounted return of its running
episode, R_t = sum of the rewards since the episode began. On the step that
ends an episode (`terminated | truncated`; the inner env auto-resets), `info`
reports it and the running return restarts at 0:

    info['episode_done']    bool: an episode ended on this step
    info['episode_return']  float32: its return R_t, 0 on other steps

Returns are sums of the env's own rewards: an agent's `reward_scale` applies
inside its loss only, never here. A rollout adds these up over steps and envs
with `EpisodeCount`, whose fields are the rollout metrics `return_sum` (summed
returns of the episodes that ended) and `episodes` (how many ended) that
lopt.meta and the launchers read. Used by A2C, PPO, the random-policy floor
(launchers/lib/common.py) and the peer check's policy evaluation.
"""

from typing import Any, Dict, NamedTuple, Tuple

import jax
import jax.numpy as jnp

from agents import env_base

Array = jax.Array


class EpisodeState(NamedTuple):
  """The wrapped env's state plus the return of its running episode."""
  env_state: Any         # the inner env's state
  episode_return: Array  # float32 []: rewards summed since the episode began


class EpisodeReturns:
  """An env whose `step` reports the returns of the episodes it ends.

  Same interface as `env_base.Environment` (and the same attributes: name,
  num_actions, observation_shape, continuous, action_size); `inner` is the
  wrapped env. Keys pass through unchanged, so a wrapped env steps exactly as
  the inner one.
  """

  def __init__(self, env: env_base.Environment):
    if isinstance(env, EpisodeReturns):
      raise ValueError(f'{env.name}: already wraps EpisodeReturns')
    self.inner = env
    self.name = env.name
    self.num_actions = env.num_actions
    self.observation_shape = env.observation_shape
    self.continuous = bool(getattr(env, 'continuous', False))
    self.action_size = getattr(env, 'action_size', 0)

  def reset(self, key: Array) -> Tuple[Array, EpisodeState]:
    obs, env_state = self.inner.reset(key)
    return obs, EpisodeState(env_state, jnp.zeros((), jnp.float32))

  def step(self, key: Array, state: EpisodeState, action: Array
           ) -> env_base.StepOutput:
    return self.step_drawn(self.inner.draw(key), state, action)

  def draw(self, key: Array) -> Any:
    return self.inner.draw(key)

  def step_drawn(self, draws: Any, state: EpisodeState, action: Array
                 ) -> env_base.StepOutput:
    """`step` with the inner env's `draw(key)` (see `env_base`)."""
    obs, env_state, reward, terminated, truncated, info = (
        self.inner.step_drawn(draws, state.env_state, action))
    done = jnp.logical_or(terminated, truncated)
    episode_return = state.episode_return + reward
    info = {**info, 'episode_done': done,
            'episode_return': jnp.where(done, episode_return, 0.)}
    state = EpisodeState(env_state, jnp.where(done, 0., episode_return))
    return obs, state, reward, terminated, truncated, info


def track_returns(env) -> EpisodeReturns:
  """`env` wrapped in `EpisodeReturns`, unless it already is."""
  return env if isinstance(env, EpisodeReturns) else EpisodeReturns(env)


class EpisodeCount(NamedTuple):
  """Completed episodes summed over steps (and envs): the rollout metrics."""
  return_sum: Array  # float32 []: summed returns of the episodes that ended
  episodes: Array    # int32 []: how many episodes ended

  def add(self, info: Dict[str, Array]) -> 'EpisodeCount':
    """Adds the episodes one (batched) `EpisodeReturns.step` ended."""
    return EpisodeCount(self.return_sum + jnp.sum(info['episode_return']),
                        self.episodes + jnp.sum(info['episode_done'],
                                                        dtype=jnp.int32))


def no_episodes() -> EpisodeCount:
  """The count before the first step."""
  return EpisodeCount(jnp.zeros(()), jnp.zeros((), jnp.int32))
