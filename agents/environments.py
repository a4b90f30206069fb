"""One small environment interface for JAX environments, with auto-reset.

Every environment here follows the gymnax 1.0 calling convention, without the
`params` argument (an environment's parameters are fixed when it is made):

  obs, state = env.reset(key)
  obs, state, reward, terminated, truncated, info = env.step(key, state, action)

`step` auto-resets: when `terminated | truncated`, the returned `obs` and
`state` are those of a fresh episode. Both functions are pure, so they jit and
vmap (`jax.vmap(env.step)` steps a batch of environments).

`make(name)` builds any registered environment: the gridworlds of Oh et al.
(2020) used by Optim4RL, gymnax's Catch-bsuite and CartPole-v1, and the Brax
tasks (ant, humanoid, walker2d, inverted_pendulum, halfcheetah, hopper).
"""

import abc
from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp

Array = jax.Array
StepOutput = Tuple[Array, Any, Array, Array, Array, Dict[str, Array]]


class Environment(abc.ABC):
  """A pure-functional environment with auto-reset.

  Subclasses implement `reset_env` and `step_env` (one episode, no reset);
  `reset` and `step` add the auto-reset.
  """

  name: str
  num_actions: int  # discrete actions; 0 for continuous environments
  observation_shape: Tuple[int, ...]
  continuous: bool = False
  action_size: int = 0  # continuous action dimension

  @abc.abstractmethod
  def reset_env(self, key: Array) -> Tuple[Array, Any]:
    """Starts an episode: returns (obs, state)."""

  @abc.abstractmethod
  def step_env(self, key: Array, state: Any, action: Array
               ) -> Tuple[Array, Any, Array, Array, Array]:
    """One step, no reset: returns (obs, state, reward, terminated, truncated)."""

  def reset(self, key: Array) -> Tuple[Array, Any]:
    return self.reset_env(key)

  def step(self, key: Array, state: Any, action: Array) -> StepOutput:
    key_step, key_reset = jax.random.split(key)
    obs, state, reward, terminated, truncated = self.step_env(
        key_step, state, action)
    done = jnp.logical_or(terminated, truncated)
    obs_reset, state_reset = self.reset_env(key_reset)
    state = jax.tree.map(lambda a, b: jnp.where(done, a, b), state_reset, state)
    obs = jnp.where(done, obs_reset, obs)
    return obs, state, reward, terminated, truncated, {}


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
}


def _registry() -> Dict[str, Callable[[], Environment]]:
  from agents import gridworlds  # pylint: disable=g-import-not-at-top
  envs = {name: (lambda n=name: gridworlds.GridWorld(n))
          for name in gridworlds.GRIDWORLDS}
  envs.update({name: (lambda g=gid: GymnaxEnvironment(g))
               for name, gid in _GYMNAX.items()})
  from agents import brax_envs  # pylint: disable=g-import-not-at-top
  envs.update({name: (lambda n=name, **kw: brax_envs.BraxEnvironment(n, **kw))
               for name in brax_envs.BRAX_ENVS})
  return envs


def names() -> Tuple[str, ...]:
  """All environment names `make` accepts."""
  return tuple(sorted(_registry()))


def make(name: str, **kwargs) -> Environment:
  """Builds the environment called `name` (see `names()`).

  Keyword arguments go to its constructor (e.g. `episode_length=` for Brax).
  """
  registry = _registry()
  if name not in registry:
    raise ValueError(
        f'env_name: unknown environment {name!r}; allowed: {sorted(registry)}')
  try:
    return registry[name](**kwargs)
  except TypeError as e:
    raise ValueError(f'{name}: unsupported options {sorted(kwargs)}') from e
