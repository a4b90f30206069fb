"""Evolution strategies over whole training runs: a meta-trainer without the
short-horizon bias.

Meta-gradients through K inner updates (`lopt.meta`) score an optimizer by
what it does in K steps, and over K steps a bigger step nearly always looks
better. Here the meta-params are scored by whole training runs instead
(OPEN, Goldie et al. 2024): the fitness of a candidate is a function of the
returns of agents trained from scratch to the end of their budget with it,
so nothing but the final (or area-under-curve) return is rewarded.

The search is OpenAI-ES (Salimans et al. 2017) from evosax: a Gaussian
around the current meta-params with antithetic pairs `mean +- sigma * z`,
centred-rank fitness shaping, and Adam on the estimated ascent direction

    grad ~ 1 / (P sigma) sum_i shaped_fitness_i z_i.

The two members of an antithetic pair are scored on the same run keys
(common random numbers), so the noise of the runs themselves cancels in
their difference.

Each generation also scores the mean itself (`fitness_center`, on the
first pair's run keys): that is the candidate meta-training returns, and
the population's fitness alone does not show how good it is. It is one
more run per generation, on every device (replicated); `score_center=False`
skips it (the metric is then NaN; the search is the same).

The trainer knows nothing about RL: `fitness_fn(meta_params, key) ->
scalar` (higher is better) trains and scores; launchers/lib/meta_training
builds it from the configured tasks. The state is one pytree (`ESState`) so
a checkpoint is that pytree, and the population is split over the devices
of every process along its member axis, as `lopt.meta` splits its agents.
"""

from typing import Any, Callable, NamedTuple, Optional

import jax
from jax import flatten_util
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array

FITNESS_SHAPING = ('centered_rank', 'standardize', 'none')


class ESState(NamedTuple):
  """Everything ES meta-training needs to continue; what a checkpoint holds.

  `meta_params` is the search distribution's mean as a pytree (what is
  exported and evaluated); `strategy` is evosax's state (the flat mean, the
  meta-optimizer's state, the generation count). `skipped` counts members
  whose fitness was not finite (ranked last)."""
  meta_params: Any
  strategy: Any
  key: Array
  step: Array
  skipped: Array


class ESTrainer(NamedTuple):
  """Built once by `make_es_trainer`.

  Attributes:
    init: `init(key) -> ESState` (pure).
    step: `step(state) -> (state, metrics)`: one generation (pure).
    run: `run(state) -> (state, metrics[steps_per_call])`: `steps_per_call`
      generations in one scan (pure; `run_sharded_fn` jits it).
    fitness: `fitness(meta_params, key) -> scalar`, the function the
      members are scored by (to score the mean itself, e.g. for validation).
    population_size: members per generation (even: antithetic pairs).
    steps_per_call: generations per `run` call.
  """
  init: Callable
  step: Callable
  run: Callable
  fitness: Callable
  population_size: int
  steps_per_call: int


def check_es_fields(population_size: int, sigma: float, learning_rate: float,
                    fitness_shaping: str, num_devices: int = 1,
                    field: str = 'meta.es') -> None:
  """Raises ValueError naming the field for values ES cannot run with."""
  if (isinstance(population_size, bool) or
      not isinstance(population_size, (int, np.integer)) or
      population_size < 2 or population_size % 2):
    raise ValueError(f'{field}.population_size: must be an even integer >= 2 '
                     f'(antithetic pairs), got {population_size!r}')
  if population_size % num_devices:
    raise ValueError(f'{field}.population_size: {population_size} members '
                     f'cannot be split evenly over {num_devices} devices')
  for name, value in (('sigma', sigma), ('learning_rate', learning_rate)):
    if (isinstance(value, bool) or not isinstance(value, (int, float))
        or not np.isfinite(value) or value <= 0):
      raise ValueError(f'{field}.{name}: must be a finite number > 0, got '
                       f'{value!r}')
  if fitness_shaping not in FITNESS_SHAPING:
    raise ValueError(f'{field}.fitness_shaping: unknown {fitness_shaping!r}; '
                     f'allowed: {list(FITNESS_SHAPING)}')


def _shaping_fn(name: str):
  from evosax.core import fitness_shaping  # pylint: disable=g-import-not-at-top
  return {'centered_rank': fitness_shaping.centered_rank_fitness_shaping_fn,
          'standardize': fitness_shaping.standardize_fitness_shaping_fn,
          'none': fitness_shaping.identity_fitness_shaping_fn}[name]


def member_keys(key: Array, population_size: int) -> Array:
  """One run key per member; the two members of each antithetic pair (i and
  i + P/2, as evosax orders them) share theirs."""
  half = jax.random.split(key, population_size // 2)
  return jnp.concatenate([half, half])


def make_es_trainer(fitness_fn: Callable[[Any, Array], Array],
                    meta_params: Any, *, population_size: int = 16,
                    sigma: float = 0.01, learning_rate: float = 1e-2,
                    fitness_shaping: str = 'centered_rank',
                    steps_per_call: int = 1,
                    score_center: bool = True,
                    mesh: Optional[jax.sharding.Mesh] = None) -> ESTrainer:
  """Builds the ES meta-trainer (validates first).

  Args:
    fitness_fn: `fitness_fn(meta_params, key) -> scalar`, higher is better:
      train agents with the learned optimizer at `meta_params` from scratch
      and score their whole run. Vmapped over the population.
    meta_params: where the search starts (its structure is the solution's).
    population_size: members per generation, even (antithetic pairs).
    sigma: the search distribution's standard deviation, in meta-param
      units.
    learning_rate: Adam's rate on the ES ascent direction.
    fitness_shaping: 'centered_rank' (OPEN's and OpenAI-ES's choice: only
      the order of the members counts), 'standardize' or 'none'.
    steps_per_call: generations per `run` call.
    score_center: also score the mean each generation (one more run, on
      every device); False reports NaN as `fitness_center`.
    mesh: a one-axis mesh ('agents') to split the members over; default:
      every device (`lopt.meta.population_mesh`).

  Returns:
    An `ESTrainer`.
  """
  from evosax.algorithms.distribution_based import open_es  # pylint: disable=g-import-not-at-top
  from lopt import meta  # pylint: disable=g-import-not-at-top
  mesh = meta.population_mesh() if mesh is None else mesh
  check_es_fields(population_size, sigma, learning_rate, fitness_shaping,
                  mesh.size)
  meta_params = jax.tree.map(jnp.asarray, meta_params)
  strategy = open_es.Open_ES(
      population_size=population_size, solution=meta_params,
      use_antithetic_sampling=True,
      # evosax minimises and steps with `-lr * grad` of what it minimises:
      # the fitness is negated below, so this ascends the fitness.
      optimizer=optax.adam(learning_rate),
      std_schedule=optax.constant_schedule(sigma),
      fitness_shaping_fn=_shaping_fn(fitness_shaping))
  params = strategy.default_params
  by_member = jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec('agents'))
  flat, unravel = flatten_util.ravel_pytree(meta_params)

  def init(key: Array) -> ESState:
    key, k = jax.random.split(key)
    state = strategy.init(k, flat, params)
    return ESState(meta_params=meta_params, strategy=state, key=key,
                   step=jnp.zeros((), jnp.int32),
                   skipped=jnp.zeros((), jnp.int32))

  def step(state: ESState):
    key, k_ask, k_runs, k_tell = jax.random.split(state.key, 4)
    population, strategy_state = strategy.ask(k_ask, state.strategy, params)
    keys = member_keys(k_runs, population_size)
    # The mean the members were drawn around, on the first pair's runs: the
    # candidate meta-training returns, scored as they are.
    center = (fitness_fn(state.meta_params, keys[0]) if score_center
              else jnp.full((), jnp.nan))
    population, keys = jax.lax.with_sharding_constraint(
        (population, keys), by_member)
    fitness = jax.vmap(fitness_fn)(population, keys)
    finite = jnp.isfinite(fitness)
    # Non-finite members rank last (evosax ranks NaN as the worst loss).
    loss = jnp.where(finite, -fitness, jnp.nan)
    strategy_state, _ = strategy.tell(k_tell, population, loss,
                                      strategy_state, params)
    safe = jnp.where(finite, fitness, jnp.nan)
    metrics = {'fitness_center': center,
               'fitness_mean': jnp.nanmean(safe),
               'fitness_max': jnp.nanmax(safe),
               'fitness_std': jnp.nanstd(safe),
               'nonfinite_members': jnp.sum(~finite)}
    new = ESState(meta_params=unravel(strategy_state.mean),
                  strategy=strategy_state, key=key, step=state.step + 1,
                  skipped=state.skipped + jnp.sum(~finite))
    return new, metrics

  def run(state: ESState):
    return jax.lax.scan(lambda s, _: step(s), state, None,
                        length=steps_per_call)

  return ESTrainer(init=init, step=step, run=run, fitness=fitness_fn,
                   population_size=population_size,
                   steps_per_call=steps_per_call)


def state_shardings(state: ESState, mesh: jax.sharding.Mesh) -> ESState:
  """Everything replicated: the members live only inside a generation."""
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.tree.map(lambda _: replicated, state)


def init_sharded_fn(trainer: ESTrainer, key: Array,
                    mesh: Optional[jax.sharding.Mesh] = None):
  """`trainer.init` jitted with its state replicated on `mesh`."""
  from lopt import meta  # pylint: disable=g-import-not-at-top
  mesh = meta.population_mesh() if mesh is None else mesh
  key = jax.ShapeDtypeStruct(np.shape(key), np.asarray(key).dtype)
  shardings = state_shardings(jax.eval_shape(trainer.init, key), mesh)
  return jax.jit(trainer.init, out_shardings=shardings)


def run_sharded_fn(trainer: ESTrainer, state: ESState,
                   mesh: Optional[jax.sharding.Mesh] = None):
  """`trainer.run` jitted, the state pinned replicated on `mesh` (the
  members inside are split over it); the input state is donated."""
  from lopt import meta  # pylint: disable=g-import-not-at-top
  mesh = meta.population_mesh() if mesh is None else mesh
  return jax.jit(trainer.run, donate_argnums=0,
                 out_shardings=(state_shardings(state, mesh), None))
