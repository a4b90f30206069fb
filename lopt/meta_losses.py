"""Meta-loss heads: score an agent after its inner updates.

A head is a pure function

    head(agent, params, actor, key) -> (loss, (actor, metrics))

where `agent` is any inner agent exposing `rollout(params, actor, key) ->
(traj, actor, metrics)` and `loss(params, traj) -> (loss, metrics)` (see
`lopt.meta`), `params` are the agent's parameters after its K inner updates
(a function of the meta-params), and `actor` its environment state. Heads
are registered by name; a new agent family (e.g. PPO) adds its head with
`register('ppo')` without touching the meta-training code.
"""

from typing import Callable, Dict

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


@register('a2c')
def a2c(agent, params, actor, key):
  """The paper's meta-loss: the agent's A2C loss on a fresh rollout.

  The rollout is taken with the updated parameters (it is data, no gradient
  flows through the sampled actions); the loss is differentiated w.r.t. the
  updated parameters, hence through the inner updates to the meta-params.
  """
  traj, actor, rollout_metrics = agent.rollout(params, actor, key)
  loss, loss_metrics = agent.loss(params, traj)
  return loss, (actor, {**rollout_metrics, **loss_metrics})
