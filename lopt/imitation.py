"""A cell's meta-params set to imitate Adam: a start for meta-training.

Meta-training starts from the cell's random init, whose step is sign-like
(about as long on noise as on signal: launchers/studies/step_profile.py). Adam's is
not: `m / sqrt(v)` shrinks where the gradient is noise. With the moments as
the cell's inputs (`CellConfig.grad_ema` for the sign path's `m`,
`CellConfig.second_moment` for the magnitude path's `s`), Optim4RL's
`sign(m) exp(o1) / sqrt(exp(o2))` is Adam when `o1 = log|m|` and
`o2 = log s`: an identity of each path's `log_sign` feature. `adam_start`
writes weights that compute it in closed form, so that meta-training can
start from Adam's step and learn where to depart from it.

`evaluate` measures how close a cell is to Adam's direction without its
eps (`optax.scale_by_adam`), with the same decays as the moments the cell
sees (scale-free, as the cell is):

    m_t = debiased EMA(grad_ema) of g (g itself when grad_ema = 0)
    s_t = debiased EMA(second_moment) of g^2
    target_t = m_t / sqrt(s_t)
    error = |log|d_t| - log|target_t||   (over coordinates with target != 0)

on synthetic streams (`synthetic_streams`) that mix scales from 1e-8 to
1e-1, signal-to-noise ratios from pure noise to clean signal, and a change
of scale and sign at a random step.
"""

import functools
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt import cells
from lopt import optimizer as optimizer_lib

Array = jax.Array


def synthetic_streams(key: Array, num_coords: int, length: int,
                      log10_scale=(-8., -1.), log10_snr=(-2., 1.)) -> Array:
  """Gradient streams `g[length, num_coords]`.

  Each coordinate has a scale `sigma` (log-uniform in `log10_scale`), a
  mean `+-snr * sigma` (snr log-uniform in `log10_snr`) and noise
  `sigma * z_t`; at a random step its scale changes by a log-uniform
  factor in [0.1, 10] and its mean's sign flips with probability 1/2.
  """
  k = jax.random.split(key, 6)
  shape = (num_coords,)
  sigma = 10. ** jax.random.uniform(k[0], shape, minval=log10_scale[0],
                                    maxval=log10_scale[1])
  snr = 10. ** jax.random.uniform(k[1], shape, minval=log10_snr[0],
                                  maxval=log10_snr[1])
  sign = jnp.where(jax.random.bernoulli(k[2], 0.5, shape), 1., -1.)
  change = jax.random.randint(k[3], shape, 1, max(length, 2))
  factor = 10. ** jax.random.uniform(k[4], shape, minval=-1., maxval=1.)
  flip = jnp.where(jax.random.bernoulli(k[5], 0.5, shape), -1., 1.)
  after = jnp.arange(length)[:, None] >= change[None]
  sigma_t = jnp.where(after, sigma * factor, sigma)
  sign_t = jnp.where(after, sign * flip, sign)
  z = jax.random.normal(jax.random.fold_in(key, 7), (length, num_coords))
  return sigma_t * (sign_t * snr + z)


def adam_target(g: Array, grad_ema: float, second_moment: float) -> Array:
  """Adam's direction without eps, `m_t / sqrt(s_t)` over a stream `g[T, N]`
  (`optax.scale_by_adam` with b1 = `grad_ema`, b2 = `second_moment` or
  0.999 when 0, eps 0): `[T, N]`, zero where it is undefined."""
  adam = optax.scale_by_adam(b1=grad_ema, b2=second_moment or 0.999, eps=0.)

  def step(state, g_t):
    u, state = adam.update(g_t, state)
    return state, u

  u = jax.lax.scan(step, adam.init(g[0]), g)[1]
  return jnp.where(jnp.isfinite(u), u, 0.)


def cell_directions(config: cells.CellConfig, meta_params,
                    g: Array) -> Array:
  """The cell's direction over a stream `g[T, N]`, from a fresh state, as
  `lopt.learned_optimizer` computes it (its moments included): `[T, N]`."""
  direction = optimizer_lib.learned_optimizer(config=config).direction_fn(
      meta_params)

  def step(state, g_t):
    d, state = direction.update(g_t, state)
    return state, d

  return jax.lax.scan(step, direction.init(g[0]), g)[1]


def log_error(d: Array, target: Array) -> Tuple[Array, Array]:
  """`(|log|d| - log|target||, mask target != 0)`, 0 where masked."""
  mask = target != 0
  safe = lambda x: jnp.where(mask, jnp.abs(x), 1.)
  return jnp.where(mask, jnp.abs(jnp.log(safe(d)) - jnp.log(safe(target))),
                   0.), mask


# The closed-form start (`adam_start`): each path's GRU passes
# tanh(ALPHA * feature) through (update gate shut open, no recurrence) and
# its MLP inverts the tanh by a piecewise-linear fit on a grid of the
# feature's range (log|m| and log s for gradients from ~1e-13 to ~1).
ALPHA = {'sign_path': 0.03, 'magnitude_path': 0.015}
LOG_RANGE = {'sign_path': (-30., 1.), 'magnitude_path': (-60., 2.)}
_GATE_BIAS = 20.  # sigmoid(20) = 1 - 2e-9: h_t = a_t


def adam_start(config: cells.CellConfig, meta_params):
  """Meta-params (of `meta_params`' structure) whose Optim4RL direction is
  close to Adam's, in closed form: the sign path's output is log|m| and the
  magnitude path's log s, so `d = sign(m) exp(log|m|) / sqrt(exp(log s))`.

  Each path uses one GRU unit, `h = tanh(ALPHA x)` of its log feature `x`
  (update gate at 1, no recurrence), and the MLP's first layer as a
  piecewise-linear basis `relu(h - t_k)` (later layers pass it on), whose
  output weights are the least-squares fit of `x` on a grid. The rest of
  the weights are zero. Needs the 'log_sign' features and a 'relu' MLP.
  """
  if config.cell != 'optim4rl':
    raise ValueError(f'cell: only optim4rl has the m / sqrt(v) form that '
                     f'imitates Adam, got {config.cell!r}')
  if config.preprocessor != 'log_sign':
    raise ValueError(f"preprocessor: adam_start needs 'log_sign' features, "
                     f'got {config.preprocessor!r}')
  if config.mlp_dims and config.activation != 'relu':
    raise ValueError(f"activation: adam_start needs a 'relu' MLP, got "
                     f'{config.activation!r}')
  size = config.hidden_size
  knots = min(config.mlp_dims) if config.mlp_dims else 0
  out = {k: {f: np.zeros(v.shape, np.float64) for f, v in layer.items()}
         for k, layer in jax.device_get(meta_params).items()}
  for path, alpha in ALPHA.items():
    gru = out[f'{path}/gru']
    gru['b'][:2 * size] = 0.
    gru['b'][:size] = _GATE_BIAS           # update gate z = 1
    gru['w_i'][0, 2 * size] = alpha        # candidate a_0 = tanh(alpha x)
    x = np.linspace(*LOG_RANGE[path], 2001)
    h = np.tanh(alpha * x)
    if knots:
      t = np.tanh(alpha * np.linspace(LOG_RANGE[path][0],
                                      LOG_RANGE[path][1], knots + 1)[:-1])
      basis = np.maximum(h[:, None] - t[None], 0.)
      first = out[f'{path}/mlp/~/linear_0']
      first['w'][0, :knots] = 1.
      first['b'][:knots] = -t
      for i in range(1, len(config.mlp_dims)):
        layer = out[f'{path}/mlp/~/linear_{i}']
        layer['w'][:knots, :knots] = np.eye(knots)
    else:
      basis = h[:, None]
    design = np.concatenate([basis, np.ones_like(h[:, None])], 1)
    coef = np.linalg.lstsq(design, x, rcond=None)[0]
    last = out[f'{path}/mlp/~/linear_{len(config.mlp_dims)}']
    last['w'][:coef.size - 1, 0] = coef[:-1]
    last['b'][0] = coef[-1]
  return jax.tree.map(lambda a, b: jnp.asarray(a, b.dtype), out,
                      meta_params)


@functools.lru_cache(maxsize=None)
def _errors_fn(config: cells.CellConfig):

  @jax.jit
  def errors(meta_params, g):
    target = adam_target(g, config.grad_ema, config.second_moment)
    return log_error(cell_directions(config, meta_params, g), target)

  return errors


def evaluate(config: cells.CellConfig, meta_params, key: Array,
             num_coords: int = 4096, length: int = 256,
             log10_scale=(-8., -1.), log10_snr=(-2., 1.)) -> Dict[str, float]:
  """How close the cell's direction is to Adam's on `synthetic_streams`:
  the median and 90th percentile over steps and coordinates of
  |log(d / target)|, and the fraction within 10% (|log ratio| < log 1.1)."""
  g = synthetic_streams(key, num_coords, length, log10_scale, log10_snr)
  err, mask = jax.device_get(_errors_fn(config)(meta_params, g))
  err = np.asarray(err)[np.asarray(mask)]
  return {'median_log_error': float(np.median(err)),
          'p90_log_error': float(np.percentile(err, 90)),
          'within_10_percent': float(np.mean(err < np.log(1.1)))}


__all__ = ['ALPHA', 'LOG_RANGE', 'adam_start', 'adam_target',
           'cell_directions', 'evaluate', 'log_error', 'synthetic_streams']
