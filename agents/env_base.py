"""The environment interface every environment here implements, with auto-reset.

Every environment follows the gymnax 1.0 calling convention, without the
`params` argument (an environment's parameters are fixed when it is made):

  obs, state = env.reset(key)
  obs, state, reward, terminated, truncated, info = env.step(key, state, action)

`step` auto-resets: when `terminated | truncated`, the returned `obs` and
`state` are those of a fresh episode. Both functions are pure, so they jit and
vmap (`jax.vmap(env.step)` steps a batch of environments).

This module knows none of its implementations (gridworlds.py, brax_envs.py,
the gymnax adapter); agents/environments.py is the registry that names them.
"""

import abc
from typing import Any, Dict, Tuple

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
