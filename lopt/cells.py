"""Learned-optimizer cells: Haiku modules applied coordinate-wise.

A cell sees every parameter coordinate as an independent row of a batch: its
input is a flat gradient vector `g[N]`, its recurrent state holds one hidden
vector per coordinate (`[N, hidden_size]` per GRU), and its weights are shared
by all coordinates. It returns an update *direction* `d[N]`; the optimizer
(`lopt.optimizer`) applies `-learning_rate * d`.

Cells (Lan et al., 2023, and the baselines they compare against):

* `Optim4RL`: a sign path and a magnitude path.
    h1, x1 = GRU1(h1, features(g));    m = sign(g) * exp(MLP1(x1))
    h2, x2 = GRU2(h2, features(g^2));  v = exp(MLP2(x2))
    d = m / sqrt(v + eps)
  The sign of the update comes from the gradient; the network only learns
  magnitudes (an Adam-like `m / sqrt(v)` inductive bias). With
  `CellConfig.second_moment` the magnitude path sees Adam's second moment
  instead: the cell's input is the pair `(g, s)`, `s` a debiased moving
  average of the raw gradient's square (kept by `lopt.optimizer`), and
  `h2, x2 = GRU2(h2, features(s))`.
* `L2LGD2` (Andrychowicz et al., 2016): one GRU, `d = exp(MLP(x)) * g`.
* `LinearOptim`: one GRU with three outputs,
    d = exp(o1) * g + exp(o2) * o3.

Lifetime-aware inputs (OPEN, Goldie et al., 2024, "Can Learned Optimization
Make Reinforcement Learning Less Difficult?"), both off by default, so the
paper's cells and their meta-params are unchanged. Meta-gradients over a
few inner updates favour a bigger step whatever the stage of training (the
short-horizon bias); a cell that knows how far training has gone and how
the gradient has moved over several timescales can learn a step that
changes over the agent's lifetime:

* `CellConfig.momentum_decays = (b_1, ..., b_K)`: the cell also sees the
  debiased EMAs `m_k` of the raw gradient at those decays (kept per
  coordinate by `lopt.optimizer`), each through the cell's preprocessor
  like `g` (Optim4RL: `log|m_k|` and `sign(m_k)`).
* `CellConfig.progress_input`: the cell also sees `p = min(t / T, 1)` at
  step `t` of a run of `T = total_steps` updates, the same for every
  coordinate (one more feature column, not preprocessed).

Adam's residual (`CellConfig.adam_residual`, Optim4RL only, off by
default): the two paths output log-corrections of the moments they see
instead of the moments themselves,

    m = g * exp(MLP1(x1));    v = s * exp(MLP2(x2));    d = m / sqrt(v + eps)

(`s` = `g^2` without `second_moment`), and each MLP's last layer starts at
zero. With `grad_ema` and `second_moment` the untrained cell is then
exactly Adam (`eps` inside the square root), and the search starts there
with no imitation fit: a perturbation of the weights moves the step by a
factor near 1, where the paper's form, fitted to Adam's moments through
exp(), is so sharp that evolution strategies' perturbations break
training (docs/results/es).

These are extra feature columns of a path's GRU input; the maths of each
direction is unchanged. For Optim4RL the sign path (whose output scales
`sign(g)`, a first moment) sees `features(g)`, every `features(m_k)` and
`p`; the magnitude path (Adam's `v`) sees `features(g^2)` (or
`features(s)`) and `p`. So the direction's sign is still `sign(g)`, `g`
being the gradient or, with `grad_ema`, its momentum, and the update keeps
the form `m / sqrt(v)`: the momenta set only how large `m` is, the
progress both `m` and `v`. L2LGD2 and LinearOptim have one path, which sees
every feature; `d = exp(o) * g` keeps the sign of `g` too.
"""

import dataclasses
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from lopt import preprocessing

Array = jax.Array
CellState = Tuple[Array, ...]

ACTIVATIONS: Dict[str, Callable[[Array], Array]] = {
    'relu': jax.nn.relu,
    'tanh': jnp.tanh,
    'gelu': jax.nn.gelu,
    'elu': jax.nn.elu,
    'silu': jax.nn.silu,
}

# Default preprocessor of each cell, as in the paper.
DEFAULT_PREPROCESSOR = {
    'optim4rl': 'log_sign',
    'l2lgd2': 'andrychowicz',
    'linear': 'identity',
}
# Number of GRUs (hence recurrent state entries) of each cell.
NUM_GRUS = {'optim4rl': 2, 'l2lgd2': 1, 'linear': 1}


@dataclasses.dataclass(frozen=True)
class CellConfig:
  """The architecture of a learned-optimizer cell (what meta-params fit).

  Attributes:
    cell: 'optim4rl', 'l2lgd2' or 'linear'.
    hidden_size: GRU hidden size (8 in the paper).
    mlp_dims: hidden widths of the MLP(s) after each GRU.
    activation: MLP activation, one of `ACTIVATIONS`.
    preprocessor: gradient preprocessor name (see `lopt.preprocessing`); ''
      picks the cell's default ('log_sign', 'andrychowicz', 'identity').
    preprocessor_eps: eps of 'log_sign'.
    andrychowicz_p: p of 'andrychowicz'.
    update_eps: eps in Optim4RL's `m / sqrt(v + eps)`.
    grad_ema: decay of a debiased moving average of the gradient that the
      cell sees in place of `g` (momentum input; the update's sign is then
      the average's); 0 = the gradient itself, as in the paper. Applied by
      `lopt.learned_optimizer` before the cell (`optax.ema`, or kept with
      the other moments when `second_moment` or `momentum_decays` needs the
      raw gradient too), so the cell's maths and meta-params are the same
      for every value.
    unit_rms: divide each update's direction by its root-mean-square over
      all the coordinates of that update (`lopt.optimizer`; per agent under
      `vmap`), so the step's overall size is the learning rate's and the
      cell sets only how it is spread over coordinates: meta-training cannot
      grow or shrink the step as a whole.
    second_moment: decay of a debiased moving average `s` of the raw
      gradient's square (Adam's `v`) that Optim4RL's magnitude path sees in
      place of `g^2`; 0 = `g^2`, as in the paper. Kept by `lopt.optimizer`
      (`MomentsState`); the cell's input is then the pair `(g, s)`.
    momentum_decays: decays in (0, 1) of debiased moving averages of the
      raw gradient (momentum at several timescales, OPEN's) that the cell
      sees besides `g`, each through the preprocessor like `g`; () = none,
      as in the paper. Kept per coordinate by `lopt.optimizer`
      (`MomentaState`). Optim4RL feeds them to its sign path only (see the
      module docstring).
    progress_input: the cell also sees the training progress
      `min(t / total_steps, 1)` at update `t` (0 at the first), the same
      for every coordinate; False = no such input, as in the paper. The
      optimizer then needs `total_steps` (`learned_optimizer(...,
      total_steps=)` or `opt_fn(..., total_steps=)`) and refuses to run
      without it, since a cell meta-trained on its lifetime has no sound
      default for it.
    adam_residual: Optim4RL's paths scale the moments they see,
      `m = g * exp(o1)`, `v = s * exp(o2)`, from a zero last layer, so the
      untrained cell is Adam with `grad_ema` and `second_moment` (module
      docstring); False = the paper's `m = sign(g) * exp(o1)`,
      `v = exp(o2)`.
  """
  cell: str = 'optim4rl'
  hidden_size: int = 8
  mlp_dims: Tuple[int, ...] = (16, 16)
  activation: str = 'relu'
  preprocessor: str = ''
  preprocessor_eps: float = 1e-18
  andrychowicz_p: float = 10.
  update_eps: float = 1e-18
  grad_ema: float = 0.
  unit_rms: bool = False
  second_moment: float = 0.
  momentum_decays: Tuple[float, ...] = ()
  progress_input: bool = False
  adam_residual: bool = False

  def __post_init__(self):
    object.__setattr__(self, 'mlp_dims', tuple(int(d) for d in self.mlp_dims))
    object.__setattr__(self, 'momentum_decays',
                       _decays_tuple(self.momentum_decays))
    if not self.preprocessor and self.cell in DEFAULT_PREPROCESSOR:
      object.__setattr__(self, 'preprocessor',
                         DEFAULT_PREPROCESSOR[self.cell])
    self.validate()

  def validate(self) -> None:
    """Raises ValueError naming the first bad field and what is allowed."""
    if self.cell not in CELLS:
      raise ValueError(
          f'cell: unknown cell {self.cell!r}; allowed: {sorted(CELLS)}')
    preprocessing.check_name(self.preprocessor)
    if self.activation not in ACTIVATIONS:
      raise ValueError(f'activation: unknown activation {self.activation!r}; '
                       f'allowed: {sorted(ACTIVATIONS)}')
    if int(self.hidden_size) < 1:
      raise ValueError(
          f'hidden_size: must be a positive int, got {self.hidden_size}')
    if any(d < 1 for d in self.mlp_dims):
      raise ValueError(
          f'mlp_dims: widths must be positive ints, got {self.mlp_dims}')
    if not isinstance(self.unit_rms, (bool, np.bool_)):
      raise ValueError(f'unit_rms: must be a bool, got {self.unit_rms!r}')
    for field in ('grad_ema', 'second_moment'):
      if not 0. <= float(getattr(self, field)) < 1.:
        raise ValueError(
            f'{field}: must be in [0, 1), got {getattr(self, field)}')
    if self.second_moment and self.cell != 'optim4rl':
      raise ValueError(f'second_moment: only the optim4rl cell has a '
                       f'magnitude path, got cell {self.cell!r}')
    for field in ('preprocessor_eps', 'update_eps', 'andrychowicz_p'):
      if not float(getattr(self, field)) > 0:
        raise ValueError(
            f'{field}: must be > 0, got {getattr(self, field)}')
    if not isinstance(self.progress_input, (bool, np.bool_)):
      raise ValueError(
          f'progress_input: must be a bool, got {self.progress_input!r}')
    if not isinstance(self.adam_residual, (bool, np.bool_)):
      raise ValueError(
          f'adam_residual: must be a bool, got {self.adam_residual!r}')
    if self.adam_residual and self.cell != 'optim4rl':
      raise ValueError(f'adam_residual: only the optim4rl cell has moment '
                       f'paths, got cell {self.cell!r}')
    decays = self.momentum_decays
    if not all(0. < b < 1. for b in decays):
      raise ValueError('momentum_decays: each decay must be in (0, 1), got '
                       f'{decays}')
    if len(set(decays)) != len(decays):
      raise ValueError(f'momentum_decays: decays must differ, got {decays}')

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d['mlp_dims'] = list(self.mlp_dims)
    d['momentum_decays'] = list(self.momentum_decays)
    d['progress_input'] = bool(self.progress_input)
    d['adam_residual'] = bool(self.adam_residual)
    return d

  @classmethod
  def from_dict(cls, d: dict) -> 'CellConfig':
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f'optimizer config: unknown fields {unknown}; '
                       f'allowed: {sorted(known)}')
    return cls(**d)

  def features(self, g: Array) -> Array:
    kwargs = {}
    if self.preprocessor == 'log_sign':
      kwargs = {'eps': self.preprocessor_eps}
    elif self.preprocessor == 'andrychowicz':
      kwargs = {'p': self.andrychowicz_p}
    return preprocessing.get_preprocessor(self.preprocessor, **kwargs)(g)

  @property
  def input_names(self) -> Tuple[str, ...]:
    """The cell's inputs, each `[N]`, in the order it takes them: 'g';
    's' with `second_moment`; 'momentum_<decay>' for each of
    `momentum_decays`; 'progress' with `progress_input`."""
    return (('g',) + (('s',) if self.second_moment else ())
            + tuple(f'momentum_{b:g}' for b in self.momentum_decays)
            + (('progress',) if self.progress_input else ()))

  @property
  def input_arity(self) -> int:
    """1: the cell's input is `g[N]`; more: the tuple of `input_names`
    (e.g. the pair `(g[N], s[N])` with `second_moment`)."""
    return len(self.input_names)

  def initial_state(self, num_coords: int) -> CellState:
    """Zero recurrent state: one `[num_coords, hidden_size]` array per GRU."""
    return tuple(jnp.zeros((num_coords, self.hidden_size), jnp.float32)
                 for _ in range(NUM_GRUS[self.cell]))


def _decays_tuple(decays) -> Tuple[float, ...]:
  """`momentum_decays` as a tuple of floats (a list from JSON, a tuple
  from a config), or a ValueError naming the field."""
  if isinstance(decays, (str, bytes)) or not isinstance(
      decays, (tuple, list, np.ndarray)):
    raise ValueError('momentum_decays: must be a tuple of decays in (0, 1), '
                     f'got {decays!r}')
  try:
    return tuple(float(b) for b in decays)
  except (TypeError, ValueError) as e:
    raise ValueError('momentum_decays: must be a tuple of decays in (0, 1), '
                     f'got {decays!r}') from e


class _Inputs(NamedTuple):
  """A cell's inputs by role (each `[N]` float32; see `input_names`)."""
  g: Array
  s: Optional[Array]
  momenta: Tuple[Array, ...]
  progress: Optional[Array]


def _unpack(config: CellConfig, inputs) -> _Inputs:
  """The cell's input (`split_inputs`) by role, from `input_names`."""
  x = split_inputs(config, inputs)
  k = len(config.momentum_decays)
  s = x[1] if config.second_moment else None
  first = 2 if config.second_moment else 1
  return _Inputs(g=x[0], s=s, momenta=x[first:first + k],
                 progress=x[-1] if config.progress_input else None)


def _features(c: CellConfig, main: Array, momenta: Tuple[Array, ...] = (),
              progress: Optional[Array] = None) -> Array:
  """A path's GRU input `[N, F]`: `features(main)`, then each momentum's
  features, then the progress as one more column. With neither, exactly
  `features(main)` (the paper's cells)."""
  extra = [c.features(m) for m in momenta]
  if progress is not None:
    extra.append(progress[:, None])
  f = c.features(main)
  return jnp.concatenate([f] + extra, axis=-1) if extra else f


class _Path(hk.Module):
  """GRU followed by an MLP head, applied to a batch of coordinates."""

  def __init__(self, config: CellConfig, num_outputs: int, name: str):
    super().__init__(name=name)
    self._config = config
    self._num_outputs = num_outputs

  def __call__(self, features: Array, state: Array) -> Tuple[Array, Array]:
    c = self._config
    x, state = hk.GRU(c.hidden_size, name='gru')(features, state)
    if c.adam_residual:
      # The hidden layers, then a last layer from zero (the output 0).
      x = hk.nets.MLP(tuple(c.mlp_dims), activation=ACTIVATIONS[c.activation],
                      activate_final=True, name='mlp')(x)
      return hk.Linear(self._num_outputs, w_init=jnp.zeros,
                       name='out')(x), state
    mlp = hk.nets.MLP(
        tuple(c.mlp_dims) + (self._num_outputs,),
        activation=ACTIVATIONS[c.activation], name='mlp')
    return mlp(x), state


def _optim4rl(c: CellConfig, x: _Inputs, state: CellState):
  g = x.g
  # The sign path (m's magnitude) sees the first moments, the magnitude
  # path (v) the second; both see the progress (module docstring).
  sign_out, h1 = _Path(c, 1, 'sign_path')(
      _features(c, g, x.momenta, x.progress), state[0])
  mag_out, h2 = _Path(c, 1, 'magnitude_path')(
      _features(c, g * g if x.s is None else x.s, (), x.progress), state[1])
  if c.adam_residual:  # log-corrections of the moments (docstring)
    m = g * jnp.exp(sign_out[:, 0])
    v = (g * g if x.s is None else x.s) * jnp.exp(mag_out[:, 0])
  else:
    m = jnp.sign(g) * jnp.exp(sign_out[:, 0])
    v = jnp.exp(mag_out[:, 0])
  return m / jnp.sqrt(v + c.update_eps), (h1, h2)


def _l2lgd2(c: CellConfig, x: _Inputs, state: CellState):
  out, h = _Path(c, 1, 'path')(
      _features(c, x.g, x.momenta, x.progress), state[0])
  return jnp.exp(out[:, 0]) * x.g, (h,)


def _linear(c: CellConfig, x: _Inputs, state: CellState):
  out, h = _Path(c, 3, 'path')(
      _features(c, x.g, x.momenta, x.progress), state[0])
  return jnp.exp(out[:, 0]) * x.g + jnp.exp(out[:, 1]) * out[:, 2], (h,)


# Each cell's step `(config, inputs: _Inputs, state) -> (d[N], state)`;
# every one takes the lifetime inputs (extra feature columns of its paths).
CELLS = {'optim4rl': _optim4rl, 'l2lgd2': _l2lgd2, 'linear': _linear}


def split_inputs(config: CellConfig, inputs) -> Tuple[Array, ...]:
  """The cell's input as a tuple of float32 arrays in the order of
  `config.input_names`: `(g,)`, or e.g. `(g, s)` with `second_moment`."""
  inputs = tuple(inputs) if config.input_arity > 1 else (inputs,)
  return tuple(jnp.asarray(x, jnp.float32) for x in inputs)


def make_cell(config: CellConfig) -> hk.Transformed:
  """The cell as a pure Haiku transform, built once.

  `init(key, g[N], state)` gives meta-params; `apply(meta_params, g[N],
  state) -> (direction[N], state)` runs one step for all N coordinates.
  With more than one input (`config.input_names`: `second_moment`,
  `momentum_decays`, `progress_input`) the input is their tuple, e.g. the
  pair `(g[N], s[N])`.
  """
  fn = CELLS[config.cell]

  def forward(inputs, state: CellState):
    return fn(config, _unpack(config, inputs), state)

  return hk.without_apply_rng(hk.transform(forward))


def check_inputs(config: CellConfig, inputs, state: CellState,
                 coordinate_axis: int = 0) -> None:
  """The door of every cell call: the input a float vector `g[N]` (with
  several `config.input_names`, a tuple of them, e.g. `(g, s)` with
  `second_moment`), `state` one array per GRU with N on `coordinate_axis`
  and `hidden_size` on the other.

  Raises a clear error naming the argument, before anything is traced
  further.
  """
  arity = config.input_arity
  if arity > 1:
    if not isinstance(inputs, (tuple, list)) or len(inputs) != arity:
      got = (f'{len(inputs)} inputs' if isinstance(inputs, (tuple, list))
             else type(inputs).__name__)
      raise ValueError(f'inputs: this cell takes the tuple '
                       f'({", ".join(config.input_names)}), got {got}')
    chex.assert_equal_shape(list(inputs))
    g = inputs[0]
  else:
    g = inputs
  for x in (inputs if arity > 1 else (g,)):
    chex.assert_rank(x, 1)
    chex.assert_type(x, float)
  num_grus = NUM_GRUS[config.cell]
  if not isinstance(state, (tuple, list)) or len(state) != num_grus:
    raise ValueError(f'state: the {config.cell} cell needs a tuple of '
                     f'{num_grus} arrays, got {type(state).__name__}')
  shape = [config.hidden_size, config.hidden_size]
  shape[coordinate_axis] = g.shape[0]
  chex.assert_shape(list(state), tuple(shape))


def example_inputs(config: CellConfig, num_coords: int = 1):
  """Zero inputs of `num_coords` coordinates, in the cell's arity."""
  g = jnp.zeros((num_coords,), jnp.float32)
  return (g,) * config.input_arity if config.input_arity > 1 else g


def make_apply(config: CellConfig, cell: hk.Transformed = None) -> Callable:
  """`apply(meta_params, g[N], state) -> (d[N], state)` (the tuple of
  `config.input_names` with several inputs, e.g. `(g, s)` with
  `second_moment`), shapes checked (`check_inputs`); state
  `[N, hidden_size]` per GRU."""
  cell = make_cell(config) if cell is None else cell

  def apply(meta_params, inputs, state: CellState):
    check_inputs(config, inputs, state)
    if config.input_arity > 1:
      inputs = tuple(inputs)
    return cell.apply(meta_params, inputs, tuple(state))

  return apply


# Each cell's outputs that enter its direction through exp(), as the path's
# name and the output indices: every term of the direction is proportional
# to exp of one of them (Optim4RL's m; L2LGD2's exp(o); LinearOptim's exp(o1)
# and exp(o2)), so adding log(s) to their final biases scales it by s.
EXP_OUTPUTS = {'optim4rl': ('sign_path', (0,)), 'l2lgd2': ('path', (0,)),
               'linear': ('path', (0, 1))}


def rescale(config: CellConfig, meta_params, scale: float):
  """Meta-params whose direction is exactly `scale` times `meta_params`'.

  The step scale is part of a learned optimizer (what meta-training
  learns), so a fixed factor is kept in its meta-params rather than asked
  of the learning rate: `log(scale)` is added to the final bias of each
  output in `EXP_OUTPUTS`. The rest of the maths, and the state, are
  unchanged.
  """
  if not float(scale) > 0:
    raise ValueError(f'scale: must be > 0, got {scale}')
  path, outputs = EXP_OUTPUTS[config.cell]
  layer = (f'{path}/out' if config.adam_residual else
           f'{path}/mlp/~/linear_{len(config.mlp_dims)}')
  if layer not in meta_params:
    raise ValueError(f'meta_params: no layer {layer!r} for a {config.cell} '
                     f'cell with mlp_dims {config.mlp_dims}')
  bias = meta_params[layer]['b']
  shift = jnp.zeros_like(bias).at[jnp.asarray(outputs)].set(
      jnp.log(jnp.asarray(scale, bias.dtype)))
  return {**meta_params, layer: {**meta_params[layer], 'b': bias + shift}}


def coordinate_count(params) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))


__all__ = ['CellConfig', 'check_inputs', 'example_inputs', 'make_apply',
           'make_cell', 'rescale', 'split_inputs',
           'ACTIVATIONS', 'CELLS', 'EXP_OUTPUTS']
