"""Can a small RNN reproduce its input gradient? (the paper's processing test)

Lan et al. (2023, Sec. 4.1) train an RNN to approximate the identity `g -> g`
on real agent-gradients: fed raw `g`, it fails; fed `[log(|g| + eps),
sign(g)]`, it succeeds. Here the model is the learned-optimizer cell's
building block: a GRU (hidden 8) and an MLP head, applied coordinate-wise
(every coordinate is one row of the batch with its own hidden state, weights
shared), run over a sequence of T consecutive gradients of each coordinate:

    features_t = preprocessor(g_t)                  ('identity' or 'log_sign')
    h_t, x_t = GRU(h_{t-1}, features_t);   o_t = MLP(x_t)
    head 'linear':    g_hat_t = o_t
    head 'sign_exp':  g_hat_t = sign(g_t) * exp(o_t)   (Optim4RL's m path)

The comparison holds the head, loss, budget and data fixed and changes only
the input features. Losses, means over the coordinates with g_t != 0:

    'log_mse' (default):  (log|g_hat_t| - log|g_t|)^2   (= (o_t - log|g_t|)^2
                          for 'sign_exp'; scale-free: a 1e-9 coordinate counts
                          as much as a 1e-2 one)
    'relative':           |g_hat_t - g_t| / |g_t|        (scale-free too)
    'mse':                (g_hat_t - g_t)^2              (the reference code's;
                          dominated by the largest coordinates)

A bounded loss such as log(1 + relative error) is a trap for 'sign_exp': as
o -> -inf it flattens at log 2, and training settles on predicting zero.
Coordinates where `g_t == 0` are fed to the model but masked out of the loss
and the metrics (their relative error is undefined).

Metrics (`metrics`), over nonzero held-out coordinates: mean and median
relative error, fraction within 10% (`|g_hat - g| <= 0.1 |g|`, the reference
code's "accuracy"; also split into |g| below / above 1e-5) and fraction with
the correct sign. Predicting zero scores
a relative error of exactly 1 and 0% within 10%.
"""

import dataclasses
import functools
from typing import Dict, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt import preprocessing

Array = jax.Array

HEADS = ('linear', 'sign_exp')
LOSSES = ('log_mse', 'relative', 'mse')
PREPROCESSORS = ('identity', 'log_sign')


@dataclasses.dataclass(frozen=True)
class IdentityFitConfig:
  """One identity-fit run.

  Attributes:
    preprocessor: input features, 'identity' ([g]) or 'log_sign'
      ([log(|g| + eps), sign g]), from `lopt.preprocessing`.
    head: output map, 'linear' (g_hat = o) or 'sign_exp'
      (g_hat = sign(g) exp(o)).
    loss: 'log_mse', 'relative' or 'mse' (see the module docstring).
    eps: eps of 'log_sign'.
    hidden_size: GRU hidden size (8, as the cells).
    mlp_dims: hidden widths of the MLP head (as the cells' default).
    learning_rate: Adam step size.
    num_steps: Adam steps (minibatches).
    batch_size: sequences (coordinates) per minibatch.
    tolerance: relative tolerance of the `frac_within` metric.
  """
  preprocessor: str = 'log_sign'
  head: str = 'sign_exp'
  loss: str = 'log_mse'
  eps: float = 1e-18
  hidden_size: int = 8
  mlp_dims: Tuple[int, ...] = (16, 16)
  learning_rate: float = 3e-3
  num_steps: int = 1000
  batch_size: int = 1024
  tolerance: float = 0.1

  def __post_init__(self):
    object.__setattr__(self, 'mlp_dims', tuple(int(d) for d in self.mlp_dims))
    self.validate()

  def validate(self) -> None:
    """Raises ValueError naming the first bad field and what is allowed."""
    for field, allowed in (('preprocessor', PREPROCESSORS), ('head', HEADS),
                           ('loss', LOSSES)):
      if getattr(self, field) not in allowed:
        raise ValueError(f'{field}: unknown {field} {getattr(self, field)!r}; '
                         f'allowed: {list(allowed)}')
    for field in ('hidden_size', 'num_steps', 'batch_size'):
      value = getattr(self, field)
      if int(value) != value or int(value) < 1:
        raise ValueError(f'{field}: must be an int >= 1, got {value}')
    if any(d < 1 for d in self.mlp_dims):
      raise ValueError(f'mlp_dims: widths must be positive, got '
                       f'{self.mlp_dims}')
    for field in ('eps', 'learning_rate', 'tolerance'):
      if not float(getattr(self, field)) > 0:
        raise ValueError(f'{field}: must be > 0, got {getattr(self, field)}')


def make_model(config: IdentityFitConfig) -> hk.Transformed:
  """`apply(params, g[T, N]) -> g_hat[T, N]`, coordinate-wise, built once."""
  kwargs = {'eps': config.eps} if config.preprocessor == 'log_sign' else {}
  features = preprocessing.get_preprocessor(config.preprocessor, **kwargs)

  def forward(g):
    g = jnp.asarray(g, jnp.float32)
    core = hk.GRU(config.hidden_size, name='gru')
    x, _ = hk.dynamic_unroll(core, features(g),
                             core.initial_state(g.shape[1]))
    o = hk.nets.MLP(config.mlp_dims + (1,), activation=jax.nn.relu,
                    name='mlp')(x)[..., 0]
    if config.head == 'linear':
      return o
    return jnp.sign(g) * jnp.exp(o)

  return hk.without_apply_rng(hk.transform(forward))


def relative_error(g_hat: Array, g: Array) -> Tuple[Array, Array]:
  """`(|g_hat - g| / |g|, mask g != 0)`; 0 where g == 0 (NaN-free)."""
  mask = g != 0
  denom = jnp.where(mask, jnp.abs(g), 1.)
  return jnp.where(mask, jnp.abs(g_hat - g) / denom, 0.), mask


def loss_fn(config: IdentityFitConfig, g_hat: Array, g: Array) -> Array:
  """The training loss over nonzero coordinates (see module docstring)."""
  rel, mask = relative_error(g_hat, g)
  count = jnp.maximum(jnp.sum(mask), 1)
  if config.loss == 'mse':
    per = jnp.square(g_hat - g)
  elif config.loss == 'relative':
    per = rel
  else:  # log_mse: (log|g_hat| - log|g|)^2 = (o - log|g|)^2 for sign_exp
    safe_g = jnp.where(mask, jnp.abs(g), 1.)
    safe_hat = jnp.where(mask, jnp.abs(g_hat), 1.)
    per = jnp.square(jnp.log(safe_hat) - jnp.log(safe_g))
  return jnp.sum(jnp.where(mask, per, 0.)) / count


def metrics(g_hat, g, tolerance: float = 0.1, split: float = 1e-5
            ) -> Dict[str, float]:
  """Held-out metrics over nonzero coordinates of `g` (host-side, float64).

  Returns:
    `mean_rel_err`, `median_rel_err`, `frac_within` (|g_hat - g| <=
    tolerance |g|), `frac_sign` (sign(g_hat) == sign(g)), `n` (coordinates
    scored), and `frac_within_small` / `frac_within_large`: `frac_within`
    over the coordinates with |g| < split / |g| >= split (NaN if none).
  """
  g_hat = np.asarray(g_hat, np.float64).ravel()
  g = np.asarray(g, np.float64).ravel()
  mask = g != 0
  if not mask.any():
    raise ValueError('g: no nonzero coordinates to score')
  g_hat, g = g_hat[mask], g[mask]
  rel = np.abs(g_hat - g) / np.abs(g)
  rel = np.where(np.isfinite(rel), rel, np.inf)
  within = rel <= tolerance
  small = np.abs(g) < split
  return {'mean_rel_err': float(np.mean(rel)),
          'median_rel_err': float(np.median(rel)),
          'frac_within': float(np.mean(within)),
          'frac_sign': float(np.mean(np.sign(g_hat) == np.sign(g))),
          'n': float(g.size),
          'frac_within_small': (float(np.mean(within[small])) if small.any()
                                else float('nan')),
          'frac_within_large': (float(np.mean(within[~small]))
                                if (~small).any() else float('nan'))}


@functools.lru_cache(maxsize=None)
def _functions(config: IdentityFitConfig):
  """(model, jitted train(params, key, data), jitted apply), once per config."""
  model = make_model(config)
  opt = optax.adam(config.learning_rate)

  def step(data, carry, key):
    params, opt_state = carry
    idx = jax.random.randint(key, (config.batch_size,), 0, data.shape[0])
    batch = data[idx].T  # [T, B]
    loss, grads = jax.value_and_grad(
        lambda p: loss_fn(config, model.apply(p, batch), batch))(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  @jax.jit
  def train(params, key, data):
    keys = jax.random.split(key, config.num_steps)
    (params, _), losses = jax.lax.scan(
        functools.partial(step, data), (params, opt.init(params)), keys)
    return params, losses

  apply = jax.jit(lambda p, x: model.apply(p, x.T).T)
  return model, train, apply


def fit(config: IdentityFitConfig, train_g, key: Array
        ) -> Tuple[hk.Params, np.ndarray]:
  """Trains the model to reproduce `train_g[N, T]` (sequences as rows).

  Minibatches of `batch_size` rows are drawn uniformly with replacement;
  the whole loop is one jitted `lax.scan` (compiled once per config and data
  shape, so seeds reuse it).

  Returns:
    (params, per-step training loss `[num_steps]`).
  """
  data = jnp.asarray(train_g, jnp.float32)
  if data.ndim != 2 or data.shape[0] < 1:
    raise ValueError(f'train_g: must be [N, T] with N >= 1, got {data.shape}')
  model, train, _ = _functions(config)
  key_init, key_batches = jax.random.split(key)
  params = model.init(key_init, data[:1].T)
  params, losses = train(params, key_batches, data)
  return params, np.asarray(losses)


def predict(config: IdentityFitConfig, params, g, chunk: int = 65536
            ) -> np.ndarray:
  """The model's output for `g[N, T]` (rows = coordinates), `[N, T]`."""
  _, _, apply = _functions(config)
  g = np.asarray(g, np.float32)
  return np.concatenate([np.asarray(apply(params, g[i:i + chunk]))
                         for i in range(0, g.shape[0], chunk)], axis=0)

__all__ = ['HEADS', 'LOSSES', 'PREPROCESSORS', 'IdentityFitConfig',
           'make_model', 'relative_error', 'loss_fn', 'metrics', 'fit',
           'predict']
