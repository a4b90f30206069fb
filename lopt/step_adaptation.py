"""A step size that adapts itself over the run: any direction times exp(h).

`step_adapted(inner)` wraps a direction transformation (optax's
`scale_by_adam()`, a learned optimizer's `direction_fn(meta_params)`) and
scales its direction `u_t` by `exp(h_t)`, one log-scale `h` for the whole
run, moved at every step by how the new gradient agrees with the last
direction:

    c_t = cos(g_t, u_{t-1})                 (over all coordinates)
    h_t = clip(h_{t-1} + beta * (c_t - target_cosine), -limit, limit)
    d_t = exp(h_t) * u_t

A gradient that still points along the last step (c > target) says the
step was short of the valley, one that turns against it (c < target) that
it overshot: a multiplicative, normalised form of hypergradient descent on
the learning rate (Baydin et al. 2018), whose plain form moves the rate by
`beta * g_t . u_{t-1}`. RL gradients are noisy, and Adam's direction keeps
momentum, so the cosine of a well-sized step is a little above 0:
`target_cosine` is where the scale stays put. `beta = 0` is `inner`.

Chain it with the learning rate as any direction:

    >>> import optax, lopt
    >>> opt = optax.chain(lopt.step_adapted(optax.scale_by_adam()),
    ...                   optax.scale_by_learning_rate(1e-3))

The state holds the last direction (the parameters' shapes, never their
values) and `h`. Non-finite coordinates are left out of the cosine: their
updates are non-finite as `inner` makes them (Adam's stay so), and `h` goes
on adapting on the others.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt import optimizer as optimizer_lib


class StepAdaptationState(NamedTuple):
  """State of `step_adapted`.

  Attributes:
    inner: the wrapped transformation's state.
    last: the last direction `u_{t-1}` (zeros before the first step), in the
      updates' structure.
    log_scale: [] float32, `h`: the direction is scaled by `exp(h)`.
  """
  inner: Any
  last: Any
  log_scale: jax.Array


def cosine(a, b) -> jax.Array:
  """The cosine between two pytrees as flat vectors, over the coordinates
  finite in both; 0 if either is 0 there."""
  x, y = optimizer_lib.flatten(a), optimizer_lib.flatten(b)
  finite = jnp.isfinite(x) & jnp.isfinite(y)
  x, y = jnp.where(finite, x, 0.), jnp.where(finite, y, 0.)
  norms = jnp.linalg.norm(x) * jnp.linalg.norm(y)
  return jnp.where(norms > 0, jnp.dot(x, y) / jnp.where(norms > 0, norms, 1.),
                   0.)


def step_adapted(inner: optax.GradientTransformation, beta: float = 1.,
                 target_cosine: float = 0.01, limit: float = 3.
                 ) -> optax.GradientTransformation:
  """`inner`'s direction times `exp(h)`, `h` adapted by the gradient's
  cosine with the last direction (module docstring).

  Args:
    inner: a direction transformation (no learning rate, no sign flip):
      `optax.scale_by_adam()`, a learned optimizer's `direction_fn(...)`.
    beta: >= 0, how far one step's cosine moves `h`.
    target_cosine: in [-1, 1], the cosine at which `h` stays put.
    limit: > 0, `|h| <= limit`: the step stays within `exp(+-limit)` of
      `inner`'s.

  Returns:
    An optax transformation whose updates are the scaled directions; chain
    `optax.scale_by_learning_rate(lr)` after it.
  """
  beta, target_cosine, limit = float(beta), float(target_cosine), float(limit)
  if not beta >= 0:
    raise ValueError(f'beta: must be >= 0 (0 = no adaptation), got {beta}')
  if not -1. <= target_cosine <= 1.:
    raise ValueError('target_cosine: must be a cosine, in [-1, 1], got '
                     f'{target_cosine}')
  if not limit > 0:
    raise ValueError(f'limit: must be > 0, got {limit}')

  def init_fn(params):
    return StepAdaptationState(
        inner=inner.init(params),
        last=jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params),
        log_scale=jnp.zeros((), jnp.float32))

  def update_fn(updates, state, params=None):
    direction, inner_state = inner.update(updates, state.inner, params)
    c = cosine(updates, state.last)
    log_scale = jnp.clip(state.log_scale + beta * (c - target_cosine),
                         -limit, limit)
    scale = jnp.exp(log_scale)
    scaled = jax.tree.map(lambda u: (scale * u).astype(u.dtype), direction)
    last = jax.tree.map(lambda u: u.astype(jnp.float32), direction)
    return scaled, StepAdaptationState(inner_state, last, log_scale)

  return optax.GradientTransformation(init_fn, update_fn)


def adam(learning_rate, beta: float = 1., target_cosine: float = 0.01,
         limit: float = 3.) -> optax.GradientTransformation:
  """optax's Adam (default moments) with a self-adapting step
  (`step_adapted`); `learning_rate` a float or a schedule."""
  return optax.chain(
      step_adapted(optax.scale_by_adam(), beta, target_cosine, limit),
      optax.scale_by_learning_rate(learning_rate))
