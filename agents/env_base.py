"""The environment interface every environment here implements, with auto-reset.

Every environment follows the gymnax 1.0 calling convention, without the
`params` argument (an environment's parameters are fixed when it is made):

  obs, state = env.reset(key)
  obs, state, reward, terminated, truncated, info = env.step(key, state, action)

`step` auto-resets: when `terminated | truncated`, the returned `obs` and
`state` are those of a fresh episode. Both functions are pure, so they jit and
vmap (`jax.vmap(env.step)` steps a batch of environments).

A step's randomness can also be drawn ahead of time, for a whole rollout at
once (agents/a2c.py does, so its loop body calls no PRNG):

  draws = env.draw(key)          # all that step(key, ...) would draw
  env.step_drawn(draws, state, action) == env.step(key, state, action)

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
    return auto_reset(self.step_env(key_step, state, action),
                      self.reset_env(key_reset))

  # Randomness drawn ahead of time. `step_drawn(draw(key), state, action)`
  # equals `step(key, state, action)`; a rollout draws all its steps'
  # randomness in one call before its loop (`draw` vmapped over steps and
  # envs) and steps with `step_drawn`, so its loop body draws nothing. On
  # XLA:CPU every PRNG call in a loop body is a small loop of its own, run
  # once per step. By default the draws are the key itself; an env whose
  # step takes a few fixed-shape draws (gridworlds.py) overrides both.

  def draw(self, key: Array) -> Any:
    """All the randomness `step(key, ...)` takes, drawn from `key`."""
    return key

  def step_drawn(self, draws: Any, state: Any, action: Array) -> StepOutput:
    """`step` with its randomness given as `draw(key)`."""
    return self.step(draws, state, action)


def auto_reset(stepped: Tuple[Array, Any, Array, Array, Array],
               fresh: Tuple[Array, Any]) -> StepOutput:
  """A `step_env` output with `fresh` (a `reset_env` output) in place of the
  observation and state where the episode ended: `step`'s auto-reset."""
  obs, state, reward, terminated, truncated = stepped
  obs_reset, state_reset = fresh
  done = jnp.logical_or(terminated, truncated)
  state = jax.tree.map(lambda a, b: jnp.where(done, a, b), state_reset, state)
  obs = jnp.where(done, obs_reset, obs)
  return obs, state, reward, terminated, truncated, {}
