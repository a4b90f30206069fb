"""A step size that adapts itself over the run: any direction times exp(h).

`step_adapted(inner)` wraps a direction transformation (optax's
`scale_by_adam()`, a learned optimizer's `direction_fn(meta_params)`) and
scales its direction `u_t` by `exp(h_t)`, one log-scale `h` for the whole
run, moved at every step by how the new gradient agrees with the last
direction (or the last ~`horizon` ones):

    c_t = cos(g_t, U_{t-1})                 (over all coordinates)
    h_t = clip(h_{t-1} + beta * (c_t - target_t), -limit, limit)
    d_t = exp(h_t) * u_t
    U_t = (1 - 1 / horizon) * U_{t-1} + u_t

with `U` the last direction (`horizon` 1, the default) or a decayed sum
of the last ~`horizon` directions, and `target_t = target_cosine +
target_slope * p_t`, `p_t` the training progress `min(t / total_steps, 1)`
(a lifetime-aware target: `target_slope` > 0 asks for more agreement late
in the run, so the step shrinks there). With `adapt_until` < 1, `h`
adapts only over that first fraction of the run and is then held, so a
rate schedule chained after it (annealing) acts on the step it found
rather than being undone by it: a step that keeps the gradient's agreement
at its target grows as the schedule shrinks the rate.

A gradient that still points along the last step (c > target) says the
step was short of the valley, one that turns against it (c < target) that
it overshot: a multiplicative, normalised form of hypergradient descent on
the learning rate (Baydin et al. 2018), whose plain form moves the rate by
`beta * g_t . u_{t-1}`: the derivative of the loss after one more step
with respect to the log rate, a greedy objective whose best step is short
when gradients are noisy (the short-horizon bias, Wu et al. 2018). With a
longer `horizon`, `g_t . U_{t-1}` is, up to curvature terms, that
derivative for the loss ~`horizon` steps on. RL gradients are noisy, and
Adam's direction keeps momentum, so the cosine of a well-sized step is a
little above 0: `target_cosine` is where the scale stays put. `beta = 0`
is `inner`. Within `limit`, the rate then sets only where `h` starts:
every run is steered to the step at which the cosine averages the target,
and which step that is depends on the task's gradient noise.
The constants may be JAX values (traced, e.g. searched by `lopt.es`).

Chain it with the learning rate as any direction:

    >>> import optax, lopt
    >>> opt = optax.chain(
    ...     lopt.step_adaptation.step_adapted(optax.scale_by_adam()),
    ...     optax.scale_by_learning_rate(1e-3))

With `group_by`, each group of parameters (e.g. one per network,
`by_network`: a PPO agent's policy and value nets) has its own `h`, moved
by the cosine over that group's coordinates only. With `delay` d, the
gradient is compared with directions at least d + 1 steps old: with one
agent update's steps, not those fitted to the gradient's own batch.

The state holds `U` (the parameters' shapes, never their values) and
`h`. Non-finite coordinates are left out of the cosine: their
updates are non-finite as `inner` makes them (Adam's stay so), and `h` goes
on adapting on the others.
"""

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt import optimizer as optimizer_lib


class StepAdaptationState(NamedTuple):
  """State of `step_adapted`.

  Attributes:
    count: [] int32, updates done.
    inner: the wrapped transformation's state.
    last: `U_{t-1}`, the last direction or the decayed sum of the last
      directions (zeros before the first step), in the updates' structure.
    log_scale: [] float32, `h`: the direction is scaled by `exp(h)`
      ([G], one per group, with `group_by`).
    recent: with `delay` d > 0, the last d directions, not yet in `last`
      ([d, ...] per leaf; step t's at index t mod d); else ().
  """
  count: jax.Array
  inner: Any
  last: Any
  log_scale: jax.Array
  recent: Any = ()


def cosine(a, b, standardize: bool = False) -> jax.Array:
  """The cosine between two pytrees as flat vectors, over the coordinates
  finite in both; 0 if either is 0 there. `standardize`: times the square
  root of that number of coordinates, so in standard deviations of the
  cosine between two independent random directions (whose spread is
  `1 / sqrt(N)`): the same scale for any model size."""
  x, y = optimizer_lib.flatten(a), optimizer_lib.flatten(b)
  finite = jnp.isfinite(x) & jnp.isfinite(y)
  x, y = jnp.where(finite, x, 0.), jnp.where(finite, y, 0.)
  norms = jnp.linalg.norm(x) * jnp.linalg.norm(y)
  c = jnp.where(norms > 0, jnp.dot(x, y) / jnp.where(norms > 0, norms, 1.),
                0.)
  if standardize:
    c = c * jnp.sqrt(jnp.sum(finite).astype(jnp.float32))
  return c


def by_network(path) -> str:
  """A leaf's group for `step_adapted(group_by=...)`: the first name of
  its top-level module (Haiku's `'policy/~/linear_1'` -> `'policy'`), so
  one group per network of an agent with separate policy and value nets,
  and one per top-level layer otherwise."""
  if not path:
    return ''
  first = path[0]
  name = getattr(first, 'key', getattr(first, 'name', getattr(
      first, 'idx', first)))
  return str(name).split('/')[0]


def groups(tree, group_by) -> tuple:
  """(group index of each leaf of `tree`, in leaf order; number of
  groups), groups numbered in order of first appearance; one group (0)
  when `group_by` is None."""
  paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
  if group_by is None:
    return (0,) * len(paths), 1
  labels = [group_by(p) for p in paths]
  order = list(dict.fromkeys(labels))
  return tuple(order.index(label) for label in labels), len(order)


def _check(value, field: str, ok, allowed: str):
  """`value` (a number) if `ok(value)`, else ValueError naming `field`; a
  JAX value passes unchecked (it may be traced)."""
  if isinstance(value, (jax.Array, jax.core.Tracer)):
    return value
  value = float(value)
  if not ok(value):
    raise ValueError(f'{field}: must be {allowed}, got {value}')
  return value


def step_adapted(inner: optax.GradientTransformation, beta=1.,
                 target_cosine=0.01, limit: float = 3.,
                 target_slope=0., total_steps=None,
                 standardize: bool = False, horizon: float = 1.,
                 adapt_until: float = 1., group_by=None,
                 delay: int = 0) -> optax.GradientTransformation:
  """`inner`'s direction times `exp(h)`, `h` adapted by the gradient's
  cosine with the last direction (module docstring).

  Args:
    inner: a direction transformation (no learning rate, no sign flip):
      `optax.scale_by_adam()`, a learned optimizer's `direction_fn(...)`.
    beta: >= 0, how far one step's cosine moves `h`.
    target_cosine: in [-1, 1] (any number with `standardize`), the
      cosine at which `h` stays put (at the start of the run, with
      `target_slope`).
    limit: > 0, `|h| <= limit`: the step stays within `exp(+-limit)` of
      `inner`'s.
    target_slope: the target's change over the run (0: constant).
    total_steps: the run's number of updates, for the progress; needed when
      `target_slope` is not 0.
    standardize: measure the cosine (and so the target, then any number)
      in standard deviations of the cosine between independent random
      directions, `c * sqrt(N)` over N coordinates (`cosine`), so one target
      means the same agreement above chance for a small and a large model.
      A cosine's noise is then about 1 a step whatever the model, so beta
      is in those units too (about `1 / sqrt(N)` of the raw one's).
    horizon: >= 1, the number of steps (the decay's time scale) of the
      past directions the gradient is compared with; 1: the last one.
    adapt_until: in (0, 1], the fraction of the run over which `h`
      adapts; it is held after. Below 1 it needs `total_steps`.
    group_by: None (one `h` for all parameters) or a function of a leaf's
      tree path (`jax.tree_util` keys) to a group label: one `h` per group,
      moved by the cosine over its coordinates (`by_network`: one per
      top-level network).
    delay: >= 0 steps: the gradient is compared with the directions taken
      at least `delay` + 1 steps before (`U_{t-1-delay}`), not the most
      recent ones. With the optimizer steps of one agent update (PPO:
      epochs x minibatches), the comparison leaves out the steps taken on
      the gradient's own batch, which agree with it because they fit the
      same samples.

  Returns:
    An optax transformation whose updates are the scaled directions; chain
    `optax.scale_by_learning_rate(lr)` after it.
  """
  beta = _check(beta, 'beta', lambda v: v >= 0, '>= 0 (0 = no adaptation)')
  target_cosine = _check(
      target_cosine, 'target_cosine',
      math.isfinite if standardize else lambda v: -1. <= v <= 1.,
      'a finite number' if standardize else 'a cosine, in [-1, 1]')
  limit = _check(limit, 'limit', lambda v: v > 0, '> 0')
  target_slope = _check(target_slope, 'target_slope', math.isfinite,
                        'a finite number')
  horizon = _check(horizon, 'horizon', lambda v: v >= 1,
                   '>= 1 (a number of steps; 1 = the last direction)')
  keep = 1. - 1. / horizon
  adapt_until = _check(adapt_until, 'adapt_until', lambda v: 0. < v <= 1.,
                       'a fraction of the run, in (0, 1]')
  if total_steps is None:
    if isinstance(target_slope, jax.Array) or target_slope:
      raise ValueError('total_steps: a target_slope needs the run length '
                       '(the number of updates) for the training progress')
    if isinstance(adapt_until, jax.Array) or adapt_until < 1.:
      raise ValueError('total_steps: adapt_until < 1 needs the run length '
                       '(the number of updates) for the training progress')
  else:
    total_steps = optimizer_lib.check_total_steps(total_steps)

  if (isinstance(delay, bool) or not isinstance(delay, (int, float)) or
      int(delay) != delay or delay < 0):
    raise ValueError(f'delay: must be an int >= 0 (steps), got {delay!r}')
  delay = int(delay)
  if group_by is not None and not callable(group_by):
    raise ValueError('group_by: must be None or a function of a tree path '
                     f'(e.g. step_adaptation.by_network), got {group_by!r}')

  def init_fn(params):
    num_groups = groups(params, group_by)[1]
    return StepAdaptationState(
        count=jnp.zeros((), jnp.int32),
        inner=inner.init(params),
        last=jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params),
        log_scale=jnp.zeros(() if group_by is None else (num_groups,),
                            jnp.float32),
        recent=() if not delay else jax.tree.map(
            lambda p: jnp.zeros((delay,) + p.shape, jnp.float32), params))

  def group_cosines(updates, last, ids, num_groups):
    """[G] cosines, group by group (a scalar without group_by)."""
    if group_by is None:
      return cosine(updates, last, standardize)
    ups, lasts = jax.tree.leaves(updates), jax.tree.leaves(last)
    return jnp.stack([
        cosine([u for u, i in zip(ups, ids) if i == g],
               [v for v, i in zip(lasts, ids) if i == g], standardize)
        for g in range(num_groups)])

  def update_fn(updates, state, params=None):
    direction, inner_state = inner.update(updates, state.inner, params)
    target, rate = target_cosine, beta
    if total_steps is not None:
      p = optimizer_lib.progress(state.count, total_steps)
      target = target + target_slope * p
      # Held from `adapt_until` on (never, at 1: also past the run's end).
      rate = jnp.where((p < adapt_until) | (adapt_until >= 1.), beta, 0.)
    ids, num_groups = groups(updates, group_by)  # static, at trace time
    c = group_cosines(updates, state.last, ids, num_groups)
    log_scale = jnp.clip(state.log_scale + rate * (c - target),
                         -limit, limit)
    scale = jnp.exp(log_scale)
    if group_by is None:
      scaled = jax.tree.map(lambda u: (scale * u).astype(u.dtype), direction)
    else:
      leaves, treedef = jax.tree.flatten(direction)
      scaled = treedef.unflatten([
          (scale[i] * u).astype(u.dtype)
          for u, i in zip(leaves, ids)])
    new = jax.tree.map(lambda u: u.astype(jnp.float32), direction)
    recent = state.recent
    if delay:
      # U takes the direction of `delay` steps ago; this one waits.
      slot = state.count % delay
      new, recent = (jax.tree.map(lambda r: r[slot], recent),
                     jax.tree.map(lambda r, u: r.at[slot].set(u), recent,
                                  new))
    last = jax.tree.map(lambda v, u: keep * v + u, state.last, new)
    return scaled, StepAdaptationState(optax.safe_increment(state.count),
                                       inner_state, last, log_scale, recent)

  return optax.GradientTransformation(init_fn, update_fn)


# The calibrated rule (`adam_step_calibrated` in the launchers): the
# gradient against ~100 past directions, target 0, `h` adapting over the
# first 10% of the run and held after (docs/results/es). Needs total_steps.
CALIBRATED = dict(target_cosine=0., horizon=100., adapt_until=0.1)


def adam(learning_rate, beta: float = 1., target_cosine: float = 0.01,
         limit: float = 3., standardize: bool = False, horizon: float = 1.,
         adapt_until: float = 1., total_steps=None, group_by=None,
         delay: int = 0) -> optax.GradientTransformation:
  """optax's Adam (default moments) with a self-adapting step
  (`step_adapted`); `learning_rate` a float or a schedule."""
  return optax.chain(
      step_adapted(optax.scale_by_adam(), beta, target_cosine, limit,
                   standardize=standardize, horizon=horizon,
                   adapt_until=adapt_until, total_steps=total_steps,
                   group_by=group_by, delay=delay),
      optax.scale_by_learning_rate(learning_rate))
