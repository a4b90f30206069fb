"""The learned optimizer as an `optax.GradientTransformation`.

    >>> import jax, jax.numpy as jnp, optax
    >>> from lopt import optimizer
    >>> lo = optimizer.learned_optimizer(cell='optim4rl', learning_rate=1e-3)
    >>> meta_params = lo.init(jax.random.PRNGKey(0))
    >>> opt = optax.chain(optax.clip(1.0), lo.opt_fn(meta_params))
    >>> params = {'w': jnp.ones(3)}
    >>> state = opt.init(params)
    >>> updates, state = opt.update({'w': jnp.ones(3)}, state, params)

All gradient leaves are concatenated into one flat float32 vector, so the cell
runs once per step whatever the number of leaves; the updates are split back
and cast to each leaf's dtype. The optimizer state holds only a step count and
the cell's per-coordinate recurrent state (never the parameters), so it
composes with `optax.chain`, `jit`, `vmap` and `grad` w.r.t. the meta-params.
"""

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from lopt import cells

Array = jax.Array
MetaParams = Any


class LearnedOptimizerState(NamedTuple):
  """State of the learned optimizer: a step count and the cell state."""
  count: Array
  cell_state: cells.CellState


class LearnedOptimizer(NamedTuple):
  """A learned optimizer: `init(key) -> meta_params` and `opt_fn`.

  Attributes:
    config: the cell architecture (`cells.CellConfig`).
    learning_rate: default learning rate of `opt_fn`.
    init: `init(key) -> meta_params`.
    opt_fn: `opt_fn(meta_params, learning_rate=None) ->
      optax.GradientTransformation`.
    cell: the cell's Haiku transform (built once).
  """
  config: cells.CellConfig
  learning_rate: float
  init: Callable[[Array], MetaParams]
  opt_fn: Callable[..., optax.GradientTransformation]
  cell: Any


def check_learning_rate(learning_rate, field='learning_rate') -> float:
  lr = float(learning_rate)
  if not lr > 0 or lr != lr or lr == float('inf'):
    raise ValueError(f'{field}: must be a finite number > 0, got '
                     f'{learning_rate}')
  return lr


def flatten(tree) -> Array:
  """Concatenates all leaves into one flat float32 vector."""
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.zeros((0,), jnp.float32)
  return jnp.concatenate([jnp.ravel(x).astype(jnp.float32) for x in leaves])


def unflatten(flat: Array, like):
  """Splits a flat vector into the structure, shapes and dtypes of `like`."""
  leaves, treedef = jax.tree.flatten(like)
  out, start = [], 0
  for leaf in leaves:
    out.append(flat[start:start + leaf.size].reshape(leaf.shape).astype(
        leaf.dtype))
    start += leaf.size
  return jax.tree.unflatten(treedef, out)


def learned_optimizer(learning_rate: float = 1e-3,
                      config: Optional[cells.CellConfig] = None,
                      **config_kwargs) -> LearnedOptimizer:
  """Builds a learned optimizer (cell transform built once, here).

  Args:
    learning_rate: default step size: updates are `-learning_rate * d` where
      `d` is the cell's direction.
    config: a `cells.CellConfig`; or give its fields as keyword arguments,
      e.g. `learned_optimizer(cell='optim4rl', hidden_size=8)`.
    **config_kwargs: `CellConfig` fields, when `config` is None.

  Returns:
    A `LearnedOptimizer`.
  """
  if config is None:
    config = cells.CellConfig(**config_kwargs)
  elif config_kwargs:
    raise ValueError('give either config or config fields, not both')
  default_lr = check_learning_rate(learning_rate)
  cell = cells.make_cell(config)

  def init(key: Array) -> MetaParams:
    g = jnp.zeros((1,), jnp.float32)
    return cell.init(key, g, config.initial_state(1))

  def opt_fn(meta_params: MetaParams,
             learning_rate: Optional[float] = None
             ) -> optax.GradientTransformation:
    lr = default_lr if learning_rate is None else learning_rate

    def init_fn(params) -> LearnedOptimizerState:
      num_coords = cells.coordinate_count(params)
      return LearnedOptimizerState(
          count=jnp.zeros((), jnp.int32),
          cell_state=config.initial_state(num_coords))

    def update_fn(updates, state, params=None):
      del params
      direction, cell_state = cell.apply(
          meta_params, flatten(updates), state.cell_state)
      new_updates = unflatten(-lr * direction, updates)
      return new_updates, LearnedOptimizerState(
          count=optax.safe_increment(state.count), cell_state=cell_state)

    return optax.GradientTransformation(init_fn, update_fn)

  return LearnedOptimizer(config=config, learning_rate=default_lr, init=init,
                          opt_fn=opt_fn, cell=cell)
