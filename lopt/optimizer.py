"""The learned optimizer as an optax transformation, and its contract.

A learned optimizer is built in two optax pieces, as optax's own `adam` is
`chain(scale_by_adam(...), scale_by_learning_rate(lr))`:

    direction d = cell(meta_params, g, cell_state)     # scale_by_learned_optimizer
    update      = -learning_rate(count) * d           # optax.scale_by_learning_rate

so `learning_rate` may be a float or an `optax.Schedule`, and the optimizer
works under `optax.inject_hyperparams` (the rate changes between steps
without re-jitting).

    >>> import jax, jax.numpy as jnp, optax
    >>> import lopt
    >>> lo = lopt.learned_optimizer(cell='optim4rl', learning_rate=1e-3)
    >>> meta_params = lo.init(jax.random.PRNGKey(0))
    >>> schedule = optax.linear_schedule(1e-3, 0., transition_steps=1000)
    >>> opt = optax.chain(optax.clip_by_global_norm(1.0),
    ...                   lo.opt_fn(meta_params, learning_rate=schedule))
    >>> params = {'w': jnp.ones(3)}
    >>> state = opt.init(params)
    >>> updates, state = opt.update({'w': jnp.ones(3)}, state, params)

The contract of a learned optimizer (`LearnedOptimizer`, what meta-training,
serialization and the launchers rely on, and nothing else):

* `name`: a short string naming the optimizer family (the cell's name).
* `init(key) -> meta_params`: fresh meta-parameters (a pytree).
* `num_meta_params`: the number of scalars in `meta_params`.
* `opt_fn(meta_params, learning_rate=None, total_steps=None) ->
  optax.GradientTransformation`: a plain optax transformation. Its
  `init(params)` reads only the shapes of `params` (never the parameters'
  values, never the meta-params' values) and its state never holds the
  parameters, so it composes with `optax.chain`, `jit`, `vmap` (a
  population of agents) and `grad` w.r.t. `meta_params`.
  `learning_rate=None` uses the default rate given at construction, and
  `total_steps=None` the default run length (see below).
* `direction_fn(meta_params, total_steps=None) ->
  optax.GradientTransformation`: the direction alone
  (`scale_by_learned_optimizer`), for users who chain their own scaling.
* `total_steps`: the number of updates of the run, for a cell with the
  training-progress input (`CellConfig.progress_input`), which sees
  `min(count / total_steps, 1)` at each update. Like the learning rate, it
  is given to `opt_fn` (or as a default to `learned_optimizer`), never to
  `update`, so the optimizer stays an optax drop-in; an int, or a JAX
  scalar (`optax.inject_hyperparams` may inject it). A cell with
  `progress_input` and no `total_steps` is refused (ValueError naming
  `total_steps`): there is no run length it could assume. Other cells
  ignore it, so a launcher may always pass it.
* Non-finite gradients: NaN in, NaN out, as optax's Adam. A coordinate whose
  gradient is NaN or inf gets a non-finite update, the others are
  unaffected, and a stateful cell keeps that coordinate non-finite (as
  Adam's moments do) rather than silently freezing it. To skip such steps
  instead, wrap the optimizer in `optax.apply_if_finite`.
* `learning_rate`: a finite real number > 0 or an `optax.Schedule`; anything
  else (a string, a bool) is refused with an error naming the field.

`lopt.testing.check_learned_optimizer(lo)` checks these properties for any
learned optimizer; every shipped cell passes it (tests/test_optimizer.py).

All gradient leaves are concatenated into one flat float32 vector, so the cell
runs once per step whatever the number of leaves; the updates are split back
and cast to each leaf's dtype.
"""

import math
import numbers
from typing import Any, Callable, NamedTuple, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt import cells
from lopt.cell_runtime import dispatch

Array = jax.Array
MetaParams = Any
LearningRate = Union[float, optax.Schedule]


class ScaleByLearnedOptimizerState(NamedTuple):
  """State of `scale_by_learned_optimizer`.

  Attributes:
    count: [] int32, updates done.
    cell_state: the cell's recurrent state, one `[num_coords, hidden_size]`
      float32 array per GRU (`num_coords` = all parameter scalars).
  """
  count: Array
  cell_state: cells.CellState


class LearnedOptimizer(NamedTuple):
  """A learned optimizer: see the module docstring for the contract.

  Attributes:
    name: the optimizer family (the cell: 'optim4rl', 'l2lgd2', 'linear').
    config: the cell architecture (`cells.CellConfig`).
    learning_rate: default learning rate of `opt_fn` (float or schedule), or
      None, in which case `opt_fn` must be given one.
    init: `init(key) -> meta_params`.
    opt_fn: `opt_fn(meta_params, learning_rate=None, total_steps=None) ->
      optax.GradientTransformation`.
    direction_fn: `direction_fn(meta_params, total_steps=None) ->
      optax.GradientTransformation` giving the cell's direction `d` (no
      learning rate, no sign flip).
    num_meta_params: scalars in the meta-params.
    cell: the cell's Haiku transform (built once).
    implementation: 'fused' or 'haiku', as resolved (see
      `lopt.cell_runtime.dispatch`).
    total_steps: default run length (updates) of `opt_fn`, for a cell with
      `progress_input`; None: every `opt_fn` call of such a cell must give
      one.
  """
  name: str
  config: cells.CellConfig
  learning_rate: Optional[LearningRate]
  init: Callable[[Array], MetaParams]
  opt_fn: Callable[..., optax.GradientTransformation]
  direction_fn: Callable[[MetaParams], optax.GradientTransformation]
  num_meta_params: int
  cell: Any
  implementation: str = 'haiku'
  total_steps: Optional[Any] = None


def _positive_real(value, allowed: str) -> float:
  """`value` as a float if it is a finite real number > 0 (not a string or
  a bool); else ValueError `'{allowed}, got ...'`."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (numbers.Real, np.ndarray, jax.Array)):
    raise ValueError(f'{allowed}, got {type(value).__name__} {value!r}')
  try:
    number = float(value)
  except (TypeError, ValueError) as e:
    raise ValueError(f'{allowed}, got {value!r}') from e
  if not number > 0 or math.isinf(number):
    raise ValueError(f'{allowed}, got {value}')
  return number


def check_learning_rate(learning_rate, field='learning_rate'
                        ) -> LearningRate:
  """A finite real number > 0 (not a string or a bool), or a schedule (a
  callable of the step count)."""
  if callable(learning_rate):
    return learning_rate
  return _positive_real(
      learning_rate,
      f'{field}: must be a finite number > 0 or an optax schedule')


def check_total_steps(total_steps, field='total_steps'):
  """None, a finite number > 0 of updates (not a string or a bool), or a
  JAX scalar (traced or injected by `optax.inject_hyperparams`; its value
  is not checked)."""
  if total_steps is None or isinstance(total_steps, jax.core.Tracer):
    return total_steps
  if isinstance(total_steps, (jax.Array, np.ndarray)) and (
      total_steps.ndim == 0 and (
          jnp.issubdtype(total_steps.dtype, jnp.integer)
          or jnp.issubdtype(total_steps.dtype, jnp.floating))):
    return total_steps
  _positive_real(total_steps, f'{field}: must be the number of updates of '
                 'the run, a finite number > 0')
  return total_steps


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


class MomentsState(NamedTuple):
  """Adam's running averages of the raw gradient, flat over all coordinates
  (`scale_by_learned_optimizer` with `second_moment` or `momentum_decays`).

  Attributes:
    count: [] int32, updates done (for the debiasing).
    mean: `[N]` EMA of g (`[0]` when `grad_ema` is 0: the cell sees g).
    second: `[N]` EMA of g^2 (`[0]` when `second_moment` is 0).
  """
  count: Array
  mean: Array
  second: Array


class MomentaState(NamedTuple):
  """Momentum at several timescales (`CellConfig.momentum_decays`, OPEN's
  lifetime-aware inputs), beside a `MomentsState`, whose `count` debiases
  them.

  Attributes:
    momenta: `[K, N]` EMAs of the raw gradient, row k at decay
      `momentum_decays[k]` (not debiased: the cell sees
      `momenta[k] / (1 - decay_k^count)`).
  """
  momenta: Array


def _debiased(ema: Array, decay, count: Array) -> Array:
  return ema / (1. - jnp.asarray(decay, jnp.float32) ** count)


def progress(count: Array, total_steps) -> Array:
  """`min(count / total_steps, 1)`, clipped at 0 too: the training
  progress (`CellConfig.progress_input`) at the update after `count` done
  (0 at the first, as an optax schedule sees `count`)."""
  p = (jnp.asarray(count, jnp.float32)
       / jnp.asarray(total_steps, jnp.float32))
  return jnp.clip(p, 0., 1.)


def scale_by_learned_optimizer(
    implementation: dispatch.Implementation,
    meta_params: MetaParams, grad_ema: float = 0.,
    second_moment: float = 0., momentum_decays: Tuple[float, ...] = (),
    total_steps=None) -> optax.GradientTransformation:
  """The cell's update direction `d` as an optax transformation.

  The cell's input is the tuple, in this order, of: the incoming updates
  `g` (or their EMA at `grad_ema`); `s` with `second_moment`; one `m_k` for
  each of `momentum_decays`; the progress `p` given `total_steps` (or `g`
  alone when there is nothing else), as `CellConfig.input_names` says.

  Args:
    implementation: how the cell runs (`dispatch.make(config, ...)`): its
      initial state and `apply(meta_params, inputs, state) -> (d[N],
      state)`.
    meta_params: the cell's weights.
    grad_ema: used with `second_moment` or `momentum_decays` only
      (otherwise an `optax.ema` chained before this gives the cell a
      momentum input): the decay of the debiased EMA of g that the cell
      sees in place of g (0: g itself).
    second_moment: > 0 (`CellConfig.second_moment`): the cell also sees
      `s`, the raw gradient's square's debiased EMA of this decay, as
      Adam's `v`, kept here (`MomentsState`).
    momentum_decays: (`CellConfig.momentum_decays`) the cell also sees the
      raw gradient's debiased EMA `m_k` at each of these decays, kept here
      (`MomentaState`).
    total_steps: None: no progress input. Else (`CellConfig.
      progress_input`) the cell also sees `progress(count, total_steps)`
      for every coordinate, `count` the updates done before this one
      (`ScaleByLearnedOptimizerState.count`); a number or a JAX scalar.

  Returns:
    A transformation whose updates are the direction `d` (same sign as the
    gradient for the shipped cells); chain it with
    `optax.scale_by_learning_rate(lr)` to get descent steps. Its state is
    a `ScaleByLearnedOptimizerState`; with `second_moment`, `(MomentsState,
    ScaleByLearnedOptimizerState)`; with `momentum_decays`,
    `(MomentsState, MomentaState, ScaleByLearnedOptimizerState)`.
  """
  decays = tuple(float(b) for b in momentum_decays)
  total_steps = check_total_steps(total_steps)

  def cell_init(params) -> ScaleByLearnedOptimizerState:
    return ScaleByLearnedOptimizerState(
        count=jnp.zeros((), jnp.int32),
        cell_state=implementation.initial_state(
            cells.coordinate_count(params)))

  def cell_update(inputs, state):
    if total_steps is not None:  # CellConfig.progress_input
      p = progress(state.count, total_steps)
      inputs = (*inputs, jnp.broadcast_to(p, inputs[0].shape))
    inputs = inputs[0] if len(inputs) == 1 else tuple(inputs)
    direction, cell_state = implementation.apply(
        meta_params, inputs, state.cell_state)
    # NaN in, NaN out: a cell's saturating gates may map a non-finite input
    # to a finite (and then frozen) update; 0 * x is 0 for finite x and NaN
    # for NaN or inf, so this changes no finite update.
    for x in (inputs if isinstance(inputs, tuple) else (inputs,)):
      direction = direction + 0. * x
    return direction, ScaleByLearnedOptimizerState(
        count=optax.safe_increment(state.count), cell_state=cell_state)

  if grad_ema and not (second_moment or decays):
    raise ValueError('grad_ema: scale_by_learned_optimizer takes it with '
                     'second_moment or momentum_decays only; chain optax.ema '
                     'before it instead')
  if not (second_moment or decays):
    def update_fn(updates, state, params=None):
      del params
      direction, state = cell_update((flatten(updates),), state)
      return unflatten(direction, updates), state

    return optax.GradientTransformation(cell_init, update_fn)

  def init_fn(params):
    n = cells.coordinate_count(params)
    zeros = jnp.zeros((n,), jnp.float32)
    empty = jnp.zeros((0,), jnp.float32)
    moments = MomentsState(jnp.zeros((), jnp.int32),
                           zeros if grad_ema else empty,
                           zeros if second_moment else empty)
    if not decays:
      return moments, cell_init(params)
    return (moments, MomentaState(jnp.zeros((len(decays), n), jnp.float32)),
            cell_init(params))

  def moments_update_fn(updates, state, params=None):
    del params
    moments, cell_state = state[0], state[-1]
    g = flatten(updates)
    count = optax.safe_increment(moments.count)
    mean, second = moments.mean, moments.second
    inputs = [g]
    if grad_ema:
      mean = grad_ema * mean + (1. - grad_ema) * g
      inputs = [_debiased(mean, grad_ema, count)]
    if second_moment:
      second = second_moment * second + (1. - second_moment) * g * g
      inputs.append(_debiased(second, second_moment, count))
    moments = MomentsState(count, mean, second)
    if decays:
      b = jnp.asarray(decays, jnp.float32)[:, None]
      momenta = b * state[1].momenta + (1. - b) * g
      inputs.extend(_debiased(momenta, b, count))
    direction, cell_state = cell_update(tuple(inputs), cell_state)
    direction = unflatten(direction, updates)
    if decays:
      return direction, (moments, MomentaState(momenta), cell_state)
    return direction, (moments, cell_state)

  return optax.GradientTransformation(init_fn, moments_update_fn)


def scale_to_unit_rms() -> optax.GradientTransformation:
  """Updates divided by their root-mean-square over all coordinates (all
  leaves together; a zero update stays zero): `CellConfig.unit_rms`."""

  def update_fn(updates, state, params=None):
    del params
    leaves = jax.tree.leaves(updates)
    count = sum(x.size for x in leaves)
    rms = jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32)))
                       for x in leaves) / max(count, 1))
    safe = jnp.where(rms > 0, rms, 1.)
    return jax.tree.map(lambda x: (x / safe).astype(x.dtype), updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(),
                                      update_fn)


def learned_optimizer(learning_rate: Optional[LearningRate] = 1e-3,
                      config: Optional[cells.CellConfig] = None,
                      implementation: str = 'auto',
                      fold_vmap: Optional[bool] = None,
                      total_steps=None,
                      **config_kwargs) -> LearnedOptimizer:
  """Builds a learned optimizer (cell transform built once, here).

  Args:
    learning_rate: default step size, a float or an `optax.Schedule` of the
      step count: updates are `-learning_rate(count) * d` where `d` is the
      cell's direction. None: every `opt_fn` call must give one.
    config: a `cells.CellConfig`; or give its fields as keyword arguments,
      e.g. `learned_optimizer(cell='optim4rl', hidden_size=8)`.
    implementation: how the cell runs (`lopt.cell_runtime`); both give the
      same updates and meta-gradients to float tolerance and keep the state
      `[N, hidden]` per GRU. 'auto' (the default): 'fused' on a single CPU
      device where its kernel builds, else 'haiku'. 'fused': the whole step
      (features, each path's GRU and MLP, the direction) in one C++ kernel
      through XLA's FFI, reverse-mode differentiable; XLA:CPU only.
      'haiku': the plain Haiku module; any backend.
    fold_vmap: under `vmap` over agents or seeds with shared meta-params,
      run the cell once on all their coordinates laid end to end
      (`dispatch.fold_vmap`): the same values and meta-gradients, fewer
      and larger calls. None: on.
    total_steps: default number of updates of a run, for a cell with
      `CellConfig.progress_input` (it sees `min(count / total_steps, 1)`);
      `opt_fn(..., total_steps=)` overrides it. None: every `opt_fn` call
      of such a cell must give one. Ignored by other cells.
    **config_kwargs: `CellConfig` fields, when `config` is None.

  Returns:
    A `LearnedOptimizer`.
  """
  if config is None:
    config = cells.CellConfig(**config_kwargs)
  elif config_kwargs:
    raise ValueError('give either config or config fields, not both')
  default_lr = (None if learning_rate is None
                else check_learning_rate(learning_rate))
  default_steps = check_total_steps(total_steps)
  cell = cells.make_cell(config)
  implementation = dispatch.resolve(implementation, config)
  if fold_vmap is None:
    fold_vmap = True
  impl = dispatch.make(config, implementation, cell, fold=fold_vmap)

  def init(key: Array) -> MetaParams:
    return cell.init(key, cells.example_inputs(config),
                     config.initial_state(1))

  def run_length(total_steps):
    """The `total_steps` a step of this cell takes: None without
    `progress_input`; else the given or default one, which must exist."""
    steps = default_steps if total_steps is None else check_total_steps(
        total_steps)
    if not config.progress_input:
      return None
    if steps is None:
      raise ValueError(
          'total_steps: this learned optimizer has the training-progress '
          'input (CellConfig.progress_input) and no default run length; '
          'pass opt_fn(meta_params, learning_rate, total_steps=...) or '
          'learned_optimizer(..., total_steps=...), the number of updates '
          'of the run')
    return steps

  def direction_fn(meta_params: MetaParams, total_steps=None
                   ) -> optax.GradientTransformation:
    steps = run_length(total_steps)
    # The raw gradient feeds moments kept inside (Adam's, the momenta).
    inside = bool(config.second_moment or config.momentum_decays)
    if inside:
      direction = scale_by_learned_optimizer(
          impl, meta_params, config.grad_ema, config.second_moment,
          config.momentum_decays, total_steps=steps)
    else:
      direction = scale_by_learned_optimizer(impl, meta_params,
                                             total_steps=steps)
    if config.unit_rms:  # CellConfig.unit_rms
      direction = optax.chain(direction, scale_to_unit_rms())
    if config.grad_ema and not inside:  # momentum input
      return optax.chain(optax.ema(config.grad_ema, debias=True), direction)
    return direction

  def opt_fn(meta_params: MetaParams,
             learning_rate: Optional[LearningRate] = None,
             total_steps=None) -> optax.GradientTransformation:
    lr = default_lr if learning_rate is None else learning_rate
    if lr is None:
      raise ValueError('learning_rate: this learned optimizer has no default '
                       'rate; pass opt_fn(meta_params, learning_rate=...)')
    if isinstance(lr, jax.core.Tracer) or (  # traced or injected rates
        isinstance(lr, (jax.Array, np.ndarray)) and lr.ndim == 0
        and jnp.issubdtype(lr.dtype, jnp.floating)):
      pass
    else:
      lr = check_learning_rate(lr)
    return optax.chain(direction_fn(meta_params, total_steps),
                       optax.scale_by_learning_rate(lr))

  shapes = jax.eval_shape(init, jax.random.PRNGKey(0))
  num_meta_params = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))
  return LearnedOptimizer(name=config.cell, config=config,
                          learning_rate=default_lr, init=init, opt_fn=opt_fn,
                          direction_fn=direction_fn,
                          num_meta_params=int(num_meta_params), cell=cell,
                          implementation=impl.name,
                          total_steps=default_steps)


def direction_state(opt_state) -> ScaleByLearnedOptimizerState:
  """The `ScaleByLearnedOptimizerState` inside an `opt_fn(...)` state.

  Works on the state of `opt_fn(...)` itself, of an `optax.chain` holding it
  and of `optax.inject_hyperparams` around either: the first such state
  found in the tree.
  """
  found = [s for s in jax.tree.leaves(
      opt_state, is_leaf=lambda s: isinstance(s, ScaleByLearnedOptimizerState))
           if isinstance(s, ScaleByLearnedOptimizerState)]
  if not found:
    raise ValueError('opt_state: holds no learned-optimizer state')
  return found[0]
