"""Record a learner's gradients during training, at chosen training stages.

A `Learner` is two pure functions: `init(key) -> state` and
`step(state) -> (state, flat_grad[P], metrics)`, where `step` is one real
training update (the recorded gradient is the one that update applied).
Two learners are built here:

* `a2c_learner`: an A2C agent (`agents.a2c`) with any optax optimizer; the
  gradient is that of the A2C loss on one rollout, exactly as `a2c.update`.
* `regression_learner`: a small supervised MLP regression (a student MLP fits
  a fixed random teacher MLP plus noise on Gaussian inputs, minibatch MSE),
  the supervised contrast of the paper's gradient-statistics claim.

`collect(learner, key, starts, window)` trains one learner from scratch and
returns the gradients of the `window` consecutive updates that begin at each
update index in `starts`; it is pure in `key`, so `jax.vmap` over keys gives
several seeds at once.
"""

import dataclasses
from typing import Any, Callable, Dict, NamedTuple, Sequence, Tuple

import haiku as hk
import jax
from jax import flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from agents import a2c

Array = jax.Array


class Learner(NamedTuple):
  """`init(key) -> state`; `step(state) -> (state, flat_grad[P], metrics)`.

  `metrics` is a dict of scalars that are summed over a window (e.g.
  `return_sum` and `episodes`, or `loss_sum` and `count`).
  """
  init: Callable[[Array], Any]
  step: Callable[[Any], Tuple[Any, Array, Dict[str, Array]]]
  num_params: int


def a2c_learner(agent: a2c.A2C, optimizer: optax.GradientTransformation
                ) -> Learner:
  """One A2C update per step (as `a2c.update`), returning its flat gradient.

  Metrics: `return_sum` / `episodes` (episodes ended in the rollout).
  """

  def init(key):
    return a2c.init_state(agent, optimizer, key)

  def step(state: a2c.A2CState):
    key, key_rollout = jax.random.split(state.key)
    traj, actor, metrics = agent.rollout(state.params, state.actor,
                                         key_rollout)
    grads, _ = jax.grad(agent.loss, has_aux=True)(state.params, traj)
    updates, opt_state = optimizer.update(grads, state.opt_state,
                                          state.params)
    params = optax.apply_updates(state.params, updates)
    flat, _ = flatten_util.ravel_pytree(grads)
    out = {'return_sum': metrics['return_sum'],
           'episodes': metrics['episodes'].astype(jnp.float32)}
    return a2c.A2CState(params, opt_state, actor, key), flat, out

  params = jax.eval_shape(agent.init_params, jax.random.PRNGKey(0))
  num = sum(int(x.size) for x in jax.tree.leaves(params))
  return Learner(init, step, num)


@dataclasses.dataclass(frozen=True)
class RegressionConfig:
  """A supervised MLP regression task (teacher-student).

  Attributes:
    input_dim: dimension of the Gaussian inputs x ~ N(0, I).
    teacher_hidden: hidden widths of the fixed random tanh teacher MLP.
    student_hidden: hidden widths of the ReLU student MLP that is trained.
    batch_size: examples per minibatch (fresh samples every step).
    noise_std: std of the Gaussian noise added to the teacher's output.
  """
  input_dim: int = 16
  teacher_hidden: Tuple[int, ...] = (32,)
  student_hidden: Tuple[int, ...] = (64, 64)
  batch_size: int = 64
  noise_std: float = 0.1

  def validate(self) -> None:
    """Raises ValueError naming the first bad field."""
    for f in ('input_dim', 'batch_size'):
      if int(getattr(self, f)) < 1:
        raise ValueError(f'regression.{f}: must be an int >= 1, got '
                         f'{getattr(self, f)}')
    for f in ('teacher_hidden', 'student_hidden'):
      if not getattr(self, f) or any(int(h) < 1 for h in getattr(self, f)):
        raise ValueError(f'regression.{f}: must be positive widths, got '
                         f'{getattr(self, f)}')
    if not float(self.noise_std) >= 0:
      raise ValueError(
          f'regression.noise_std: must be >= 0, got {self.noise_std}')


class RegressionState(NamedTuple):
  """Student params, optimizer state, the task's teacher params, and rng."""
  params: Any
  opt_state: Any
  teacher: Any
  key: Array


def regression_learner(config: RegressionConfig,
                       optimizer: optax.GradientTransformation) -> Learner:
  """One minibatch MSE update per step; returns its flat gradient.

  Each seed draws its own teacher (the task) and student initialisation.
  Metrics: `loss_sum` / `count` (minibatch MSE before the update).
  """
  config.validate()

  def mlp(hidden, act):
    def forward(x):
      return hk.nets.MLP(tuple(hidden) + (1,), activation=act)(x)[..., 0]
    return hk.without_apply_rng(hk.transform(forward))

  teacher = mlp(config.teacher_hidden, jnp.tanh)
  student = mlp(config.student_hidden, jax.nn.relu)
  dummy = jnp.zeros((1, config.input_dim), jnp.float32)

  def init(key):
    k_teacher, k_student, key = jax.random.split(key, 3)
    params = student.init(k_student, dummy)
    return RegressionState(params, optimizer.init(params),
                           teacher.init(k_teacher, dummy), key)

  def loss_fn(params, x, y):
    return jnp.mean(jnp.square(student.apply(params, x) - y))

  def step(state: RegressionState):
    key, k_data = jax.random.split(state.key)
    data = jax.random.normal(k_data, (config.batch_size, config.input_dim + 1))
    x = data[:, :-1]  # inputs; the last column is the label noise
    y = teacher.apply(state.teacher, x) + config.noise_std * data[:, -1]
    loss, grads = jax.value_and_grad(loss_fn)(state.params, x, y)
    updates, opt_state = optimizer.update(grads, state.opt_state,
                                          state.params)
    params = optax.apply_updates(state.params, updates)
    flat, _ = flatten_util.ravel_pytree(grads)
    return (RegressionState(params, opt_state, state.teacher, key), flat,
            {'loss_sum': loss, 'count': jnp.ones(())})

  num = sum(int(x.size) for x in jax.tree.leaves(
      jax.eval_shape(student.init, jax.random.PRNGKey(0), dummy)))
  return Learner(init, step, num)


def check_starts(starts: Sequence[int], window: int, num_updates: int,
                 field: str = 'starts') -> Tuple[int, ...]:
  """Validates recording windows: increasing, non-overlapping, in budget.

  Raises:
    ValueError whose message starts with `field` (or 'window').
  """
  starts = tuple(int(s) for s in starts)
  if int(window) < 1:
    raise ValueError(f'window: must be an int >= 1, got {window}')
  if not starts:
    raise ValueError(f'{field}: at least one recording stage is needed')
  if starts[0] < 0:
    raise ValueError(f'{field}: first start must be >= 0, got {starts}')
  for a, b in zip(starts, starts[1:]):
    if b < a + window:
      raise ValueError(f'{field}: windows of {window} updates starting at '
                       f'{starts} overlap; raise num_updates or lower window')
  if starts[-1] + window > num_updates:
    raise ValueError(f'{field}: last window ({starts[-1]} + {window}) exceeds '
                     f'num_updates={num_updates}')
  return starts


def collect(learner: Learner, key: Array, starts: Sequence[int], window: int
            ) -> Tuple[Array, Dict[str, Array]]:
  """Trains from scratch; records gradients of windows starting at `starts`.

  The learner keeps training through every window (recorded updates are real
  updates); training stops at the end of the last window.

  Args:
    learner: the `Learner`.
    key: its seed.
    starts: update indices where a window begins (increasing, separated by at
      least `window`; static).
    window: consecutive updates recorded per stage (static).

  Returns:
    (grads `[num_stages, window, P]` float32, metrics: dict of
    `[num_stages]` sums over each window).
  """
  starts = tuple(int(s) for s in starts)
  num_stages = len(starts)
  total = starts[-1] + window
  # Where update i's gradient goes: row k * window + j of the buffer for the
  # j-th update of stage k, else a scratch row; likewise its stage (or a
  # scratch stage) for the metrics. One traced copy of `learner.step`.
  slot = np.full(total, num_stages * window, np.int32)
  stage = np.full(total, num_stages, np.int32)
  for k, s in enumerate(starts):
    slot[s:s + window] = k * window + np.arange(window)
    stage[s:s + window] = k
  slot, stage = jnp.asarray(slot), jnp.asarray(stage)

  state = learner.init(key)
  _, g_shape, m_shape = jax.eval_shape(learner.step, state)
  grads = jnp.zeros((num_stages * window + 1,) + g_shape.shape, g_shape.dtype)
  metrics = jax.tree.map(
      lambda x: jnp.zeros((num_stages + 1,) + x.shape, x.dtype), m_shape)

  def body(i, carry):
    state, grads, metrics = carry
    state, g, m = learner.step(state)
    grads = jax.lax.dynamic_update_index_in_dim(grads, g, slot[i], 0)
    metrics = jax.tree.map(lambda b, x: b.at[stage[i]].add(x), metrics, m)
    return state, grads, metrics

  _, grads, metrics = jax.lax.fori_loop(0, total, body,
                                        (state, grads, metrics))
  grads = grads[:-1].reshape((num_stages, window) + g_shape.shape)
  return grads, jax.tree.map(lambda x: x[:-1], metrics)

__all__ = ['Learner', 'a2c_learner', 'RegressionConfig', 'regression_learner',
           'check_starts', 'collect']
