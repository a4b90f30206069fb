"""Meta-loss heads: score an agent after its inner updates.

A head is a pure function

    head(agent, params, actor, key) -> (loss, (actor, metrics))

where `agent` is any inner agent exposing `rollout(params, actor, key) ->
(traj, actor, metrics)` and `loss(params, traj) -> (loss, metrics)` (see
`lopt.meta`), `params` are the agent's parameters after its K inner updates
(a function of the meta-params), and `actor` its environment state. Heads
are registered by name.

One head, `rollout_loss`, serves every agent: the agent's own loss on a fresh
rollout. What differs between agent families is what the agent provides, not
the head: A2C's `rollout` returns the time-major trajectory and its `loss` is
the A2C loss; PPO's (`agents.ppo.inner_agent`) returns the flattened batch
with GAE advantages and its `loss` is the clipped surrogate. 'a2c' and 'ppo'
are both names of `rollout_loss`; a new family with its own objective
registers a new head with `register(name)` without touching the
meta-training code.
"""

from typing import Callable, Dict

import chex
import jax
import jax.numpy as jnp

MetaLoss = Callable

_HEADS: Dict[str, MetaLoss] = {}


def register(name: str):
  """Decorator: registers a meta-loss head under `name`."""

  def wrap(fn):
    if name in _HEADS:
      raise ValueError(f'meta_loss: head {name!r} is already registered')
    _HEADS[name] = fn
    return fn

  return wrap


def names():
  return tuple(sorted(_HEADS))


def get(name: str) -> MetaLoss:
  if name not in _HEADS:
    raise ValueError(f'meta_loss: unknown meta-loss head {name!r}; '
                     f'allowed: {list(names())}')
  return _HEADS[name]


def check_key(key, where: str) -> None:
  """Asserts `key` is one PRNG key (typed scalar or raw uint32 vector)."""
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    chex.assert_rank(key, 0, custom_message=f'{where}: key must be one key')
  else:
    chex.assert_rank(key, 1, custom_message=f'{where}: key must be one raw '
                     'key [2] (not a batch of keys; vmap the head)')
    chex.assert_type(key, jnp.uint32, custom_message=f'{where}: key')


def rollout_loss(agent, params, actor, key):
  """The agent's own loss on a fresh rollout with the updated parameters.

    L(theta) = agent.loss(params_K(theta), agent.rollout(params_K, actor))

  The rollout is data (the agents stop its gradient; no gradient flows
  through the sampled actions); the loss is differentiated w.r.t. the updated
  parameters, hence through the inner updates to the meta-params. With an
  A2C agent this is the paper's meta-loss; with a PPO inner agent it is the
  clipped-surrogate PPO loss.

  Args:
    agent: one inner agent (`rollout`, `loss`; see the module docstring).
    params: its parameters after the inner updates (unbatched).
    actor: its environment state.
    key: one PRNG key (unbatched: the caller vmaps over agents).

  Returns:
    (scalar loss, (actor after the rollout, metrics)); the metrics hold the
    rollout's scalar `return_sum` and `episodes` and the loss terms.
  """
  check_key(key, 'rollout_loss')
  traj, actor, rollout_metrics = agent.rollout(params, actor, key)
  loss, loss_metrics = agent.loss(params, traj)
  chex.assert_rank(loss, 0, custom_message='rollout_loss: agent.loss must '
                   'return a scalar loss')
  chex.assert_rank(
      [rollout_metrics['return_sum'], rollout_metrics['episodes']], 0,
      custom_message='rollout_loss: agent.rollout metrics return_sum, '
      'episodes must be scalars')
  return loss, (actor, {**rollout_metrics, **loss_metrics})


register('a2c')(rollout_loss)
register('ppo')(rollout_loss)
