"""Gradient preprocessors: map raw gradients `g` to per-coordinate features.

Each preprocessor is a pure function `g[...] -> features[..., F]` in float32.
They are chosen by name with `get_preprocessor` (configs say e.g.
`preprocessor='log_sign'`).

Agent-gradients in RL span many orders of magnitude (|g| from ~1e-10 to
~1e-1) while their absolute values are tiny; a network fed raw `g` cannot map
them to accurate updates. Optim4RL feeds `[log(|g| + eps), sign(g)]` instead
(Lan et al., 2023, "Learning to Optimize for Reinforcement Learning").
"""

import functools
from typing import Callable, Dict

import jax
import jax.numpy as jnp

Array = jax.Array
Preprocessor = Callable[[Array], Array]


def identity(g: Array) -> Array:
  """Raw gradient as a single feature: `g -> [g]`."""
  return jnp.asarray(g, jnp.float32)[..., None]


def log_sign(g: Array, eps: float = 1e-18) -> Array:
  """Optim4RL gradient processing: `g -> [log(|g| + eps), sign(g)]`.

  Args:
    g: gradients of any shape and float dtype.
    eps: keeps the log finite at g = 0 (log(eps) there).

  Returns:
    float32 features of shape `g.shape + (2,)`.
  """
  g = jnp.asarray(g, jnp.float32)
  return jnp.stack([jnp.log(jnp.abs(g) + eps), jnp.sign(g)], axis=-1)


def andrychowicz(g: Array, p: float = 10.) -> Array:
  """Andrychowicz et al. (2016) preprocessing with parameter p.

    g -> (log|g| / p, sign(g))   if |g| >= e^-p
    g -> (-1, e^p * g)           otherwise

  The log is taken of a guarded magnitude so that the unused branch never
  produces -inf (and no NaN leaks into gradients through `where`).

  Args:
    g: gradients of any shape and float dtype.
    p: the scheme's scale parameter (10 in the paper).

  Returns:
    float32 features of shape `g.shape + (2,)`.
  """
  g = jnp.asarray(g, jnp.float32)
  abs_g = jnp.abs(g)
  big = abs_g >= jnp.exp(-p)
  safe_abs = jnp.where(big, abs_g, 1.)  # double-where: log of 1 when unused
  first = jnp.where(big, jnp.log(safe_abs) / p, -1.)
  second = jnp.where(big, jnp.sign(g), jnp.exp(p) * g)
  return jnp.stack([first, second], axis=-1)


PREPROCESSORS: Dict[str, Preprocessor] = {
    'identity': identity,
    'log_sign': log_sign,
    'andrychowicz': andrychowicz,
}

NUM_FEATURES: Dict[str, int] = {
    'identity': 1,
    'log_sign': 2,
    'andrychowicz': 2,
}


def get_preprocessor(name: str, **kwargs) -> Preprocessor:
  """Returns the preprocessor called `name`, with keyword overrides bound.

  Args:
    name: one of `PREPROCESSORS` ('identity', 'log_sign', 'andrychowicz').
    **kwargs: e.g. `eps=1e-8` for 'log_sign' or `p=10.` for 'andrychowicz'.

  Raises:
    ValueError: for an unknown name.
  """
  check_name(name)
  fn = PREPROCESSORS[name]
  return functools.partial(fn, **kwargs) if kwargs else fn


def check_name(name: str) -> None:
  if name not in PREPROCESSORS:
    raise ValueError(f'preprocessor: unknown preprocessor {name!r}; '
                     f'allowed: {sorted(PREPROCESSORS)}')
