"""Meta-training a learned optimizer by meta-gradients (agent-agnostic).

One meta-iteration, for every agent of a population (vmapped), in every task:

1. K inner updates: roll out, take the agent's loss gradient `g`, update the
   agent with the learned optimizer under the current meta-params `phi`.
2. Meta-loss: a head (`lopt.meta_losses`) scores the updated agent, e.g. its
   A2C loss on a fresh rollout.
3. Meta-gradient: d meta-loss / d phi through the K updates. The agents'
   states carry on to the next iteration, but no gradient flows across
   iterations (truncation).
4. Mean over agents, then over tasks; one meta-optimizer (optax) step. A NaN
   or inf meta-gradient skips the update (counted in `MetaState.skipped`).
   With `task_weighting='unit_norm'` each task's meta-gradient is divided by
   its global norm before the mean over tasks, so tasks whose meta-losses
   differ by orders of magnitude (reward scales, episode lengths) steer the
   meta-params equally.
5. Pipeline training (Lan et al., 2023): agent i of a task is reset (fresh
   params, optimizer state and environments) when
   `step % reset_interval == reset_index[i]`, with
   `reset_index = floor(linspace(0, reset_interval - 1, num_agents))`, so the
   meta-batch always covers every training stage. With `pipeline=False`
   all agents reset together (the paper's ablation).

An inner agent is any object with
    init_params(key) -> params
    init_actor(key) -> actor            (its environments)
    rollout(params, actor, key) -> (traj, actor, metrics)
    loss(params, traj) -> (loss, metrics)
whose rollout metrics include 'return_sum' and 'episodes' (completed episodes
and the sum of their returns). `agents.a2c.A2C` is one. Nothing here imports
`agents`.

The whole state is one pytree (`MetaState`), so a checkpoint is that pytree,
and `run` advances it by `steps_per_call` meta-iterations in one jitted call
(`lax.scan`), with no host sync inside.
"""

import functools
from typing import Any, NamedTuple, Optional, Sequence, Tuple

import jax
from jax.ad_checkpoint import checkpoint_name
import jax.numpy as jnp
import numpy as np
import optax

from lopt.cell_runtime import dispatch
from lopt import meta_losses
from lopt import optimizer as optimizer_lib

Array = jax.Array

CLIP_TYPES = ('elementwise', 'global_norm', 'none')
# How the tasks' meta-gradients are combined: 'mean', the gradient of the
# mean of the tasks' meta-losses; 'unit_norm', the mean of the tasks'
# meta-gradients, each divided by its global norm first.
TASK_WEIGHTINGS = ('mean', 'unit_norm')


def check_task_weighting(name: str, field: str = 'task_weighting') -> str:
  """`name` if it is one of `TASK_WEIGHTINGS`; else a ValueError naming
  `field` and what is allowed."""
  if name not in TASK_WEIGHTINGS:
    raise ValueError(f'{field}: unknown {name!r}; allowed: '
                     f'{list(TASK_WEIGHTINGS)}')
  return name


class Task(NamedTuple):
  """One meta-training task: an inner agent and its population settings.

  Attributes:
    name: for logs and metrics.
    agent: the inner agent (see module docstring).
    num_agents: population size of this task.
      learning_rate: the learned optimizer's step size for this task's agents:
      a float or an `optax.Schedule` of the agent's update count (counted
      from the agent's last reset).
  """
  name: str
  agent: Any
  num_agents: int
  learning_rate: Any


class AgentState(NamedTuple):
  """One inner agent (leading `[num_agents]` axis inside the population)."""
  params: Any
  opt_state: Any  # opt_fn(meta_params).init(params)
  actor: Any
  key: Array


class MetaState(NamedTuple):
  """Everything meta-training needs to continue; what a checkpoint holds."""
  meta_params: Any
  meta_opt_state: Any
  population: Tuple[AgentState, ...]  # one entry per task
  step: Array                         # meta-iterations done
  skipped: Array                      # meta-updates skipped (non-finite)


class MetaTrainer(NamedTuple):
  """Built once by `make_meta_trainer`.

  Attributes:
    init: `init(key) -> MetaState` (jitted).
    step: `step(state) -> (state, metrics)`, one meta-iteration (pure, not
      jitted: for tests and custom loops).
    run: `run(state) -> (state, metrics[steps_per_call])`, jitted, scanning
      `steps_per_call` meta-iterations; the input state is donated.
    reset_index: per task, the `[num_agents]` reset slot of each agent.
    init_agent: per task, `init_agent(key, meta_params) -> AgentState`.
    steps_per_call: meta-iterations per `run` call.
  """
  init: Any
  step: Any
  run: Any
  reset_index: Tuple[np.ndarray, ...]
  init_agent: Tuple[Any, ...]
  steps_per_call: int


def reset_index(num_agents: int, reset_interval: int,
                pipeline: bool = True) -> np.ndarray:
  """Reset slot of each agent: staggered uniformly, or all 0 without pipeline."""
  if not pipeline:
    return np.zeros((num_agents,), np.int32)
  return np.floor(np.linspace(0, reset_interval - 1, num_agents)).astype(
      np.int32)


def make_meta_optimizer(learning_rate: float, clip_type: str = 'elementwise',
                        clip: float = 1.0) -> optax.GradientTransformation:
  """Adam on the meta-params, after elementwise or global-norm clipping."""
  optimizer_lib.check_learning_rate(learning_rate, 'meta.learning_rate')
  if clip_type not in CLIP_TYPES:
    raise ValueError(f'meta.clip_type: unknown clip type {clip_type!r}; '
                     f'allowed: {list(CLIP_TYPES)}')
  if clip_type != 'none' and not clip > 0:
    raise ValueError(f'meta.clip: must be > 0, got {clip}')
  adam = optax.adam(learning_rate)
  if clip_type == 'elementwise':
    return optax.chain(optax.clip(clip), adam)
  if clip_type == 'global_norm':
    return optax.chain(optax.clip_by_global_norm(clip), adam)
  return adam


def _where(mask: Array, new, old):
  """Per-agent select over a population pytree (mask `[num_agents]`)."""
  def sel(a, b):
    return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)
  return jax.tree.map(sel, new, old)


def _all_finite(tree) -> Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _per_agent_finite(params) -> Array:
  leaves = [jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1)
            for x in jax.tree.leaves(params)]
  return jnp.all(jnp.stack(leaves), axis=0)


# K up to this (the paper's 4) runs its inner updates unrolled, not as a
# loop: what the backward keeps of each update is then its own buffer,
# where a loop stacks it into [K, ...] arrays that are zero-filled and
# written slice by slice every meta-iteration (the recurrent state alone is
# 20 MB at 64 agents). Longer K stays a loop, whose program (and compile
# time) does not grow with K.
MAX_UNROLLED = 4

# What `inner_unroll` keeps of an update for the backward pass when it
# recomputes the rest (`remat`): the rollout's trajectory (small: a few
# steps of observations; its loop would otherwise run again) and the fused
# cell kernel's direction (its own backward needs only the step's inputs,
# but what follows the cell, e.g. `unit_rms`, may need the direction: kept,
# the kernel's forward is not run again for it).
# First-order (`second_order=False`) it keeps the inner gradient too (4
# bytes a coordinate): the backward then needs only its value, not the
# agent's loss and its gradient computed again.
ROLLOUT = 'lopt_inner_rollout'
INNER_GRADS = 'lopt_inner_grads'
REMAT_POLICY = jax.checkpoint_policies.save_only_these_names(
    ROLLOUT, dispatch.KERNEL_OUTPUT)
FIRST_ORDER_REMAT_POLICY = jax.checkpoint_policies.save_only_these_names(
    ROLLOUT, dispatch.KERNEL_OUTPUT, INNER_GRADS)


def make_init_agent(task: Task, learned_opt: optimizer_lib.LearnedOptimizer):
  """`init_agent(key, meta_params) -> AgentState`: a fresh agent of `task`.

  The optimizer state comes from `opt_fn(meta_params).init(params)` (it
  reads only the parameters' shapes), so the agent starts with a zero
  recurrent state and step count.
  """
  agent = task.agent

  def init_agent(key: Array, meta_params) -> AgentState:
    k_params, k_actor, k_next = jax.random.split(key, 3)
    params = agent.init_params(k_params)
    opt = learned_opt.opt_fn(meta_params, task.learning_rate)
    return AgentState(params, opt.init(params), agent.init_actor(k_actor),
                      k_next)

  return init_agent


def inner_unroll(agent, opt: optax.GradientTransformation,
                 state: AgentState, keys: Array, *, second_order: bool = True,
                 remat: bool = True):
  """K = len(keys) inner updates of one agent with a learned optimizer.

  Each update rolls out, takes the agent's loss gradient and applies the
  optimizer. Returns `((params, opt_state, actor), (return_sum[K],
  episodes[K]))`; differentiable w.r.t. the meta-params inside `opt`.

  Args:
    agent: the inner agent (see module docstring).
    opt: `learned_opt.opt_fn(meta_params, lr)`.
    state: the agent before the updates.
    keys: `[K, 2]` one key per update.
    second_order: differentiate through the inner gradients too, or treat
      them as constants (`stop_gradient`, cheaper).
    remat: recompute each update on the backward pass (`jax.checkpoint`),
      all but the rollout's trajectory and the fused kernel's direction
      (`REMAT_POLICY`), and first-order the inner gradient
      (`FIRST_ORDER_REMAT_POLICY`).

  K up to `MAX_UNROLLED` is unrolled (same values, no stacked buffers).
  """
  def update(carry, k):
    params, opt_state, actor = carry
    traj, actor, metrics = agent.rollout(params, actor, k)
    traj = jax.tree.map(lambda x: checkpoint_name(x, ROLLOUT), traj)
    grads, _ = jax.grad(agent.loss, has_aux=True)(params, traj)
    if not second_order:
      grads = jax.tree.map(lambda g: checkpoint_name(g, INNER_GRADS),
                           jax.lax.stop_gradient(grads))
    updates, opt_state = opt.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return (params, opt_state, actor), (metrics['return_sum'],
                                        metrics['episodes'])

  if remat:
    update = jax.checkpoint(update, policy=(
        REMAT_POLICY if second_order else FIRST_ORDER_REMAT_POLICY))
  return jax.lax.scan(update, (state.params, state.opt_state, state.actor),
                      keys, unroll=len(keys) <= MAX_UNROLLED)


def make_agent_meta_loss(task: Task,
                         learned_opt: optimizer_lib.LearnedOptimizer,
                         head, *, num_inner_steps: int, second_order: bool,
                         remat: bool):
  """`loss(meta_params, agent_state, key) -> (meta_loss, (state, metrics))`.

  K inner updates (`inner_unroll`), then the meta-loss head on the updated
  agent. Metrics: the head's scalar terms, and `return_sum` / `episodes`
  over the K + 1 rollouts.
  """
  agent = task.agent

  def loss(meta_params, state: AgentState, key: Array):
    opt = learned_opt.opt_fn(meta_params, task.learning_rate)
    k_inner, k_meta = jax.random.split(key)
    (params, opt_state, actor), (ret, num) = inner_unroll(
        agent, opt, state, jax.random.split(k_inner, num_inner_steps),
        second_order=second_order, remat=remat)
    value, (actor, m) = head(agent, params, actor, k_meta)
    # The head's loss terms (e.g. pg_loss, value_loss, entropy) are logged
    # per task: they show what the meta-objective is made of.
    metrics = {k: v for k, v in m.items()
               if k not in ('return_sum', 'episodes') and jnp.ndim(v) == 0}
    metrics.update(return_sum=jnp.sum(ret) + m['return_sum'],
                   episodes=jnp.sum(num) + m['episodes'])
    return value, (AgentState(params, opt_state, actor, state.key), metrics)

  return loss


def _in_groups(agent_loss, num_groups: int):
  """`agent_loss` over a population, vmapped within `num_groups` groups
  that run one after another (`lax.map`), each recomputed on the backward
  pass (`jax.checkpoint`): peak memory is one group's, not the population's.
  """
  batched = jax.vmap(agent_loss, in_axes=(None, 0, 0))
  if num_groups == 1:
    return batched
  batched = jax.checkpoint(batched)

  def grouped(meta_params, pop, keys):
    split = lambda x: x.reshape((num_groups, -1) + x.shape[1:])
    out = jax.lax.map(lambda a: batched(meta_params, *a),
                      jax.tree.map(split, (pop, keys)))
    return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), out)

  return grouped


def population_loss(agent_losses: Sequence[Any], meta_params,
                    population: Sequence[AgentState], keys: Sequence[Array],
                    agent_groups: int = 1):
  """Mean meta-loss over each task's agents (vmapped), then over tasks.

  `agent_groups` > 1 runs each task's agents in that many sequential groups
  (`_in_groups`): same values, less memory, somewhat slower.

  Returns `(loss, (new_population, per-task metrics))`.
  """
  total, new_pop, metrics = 0., [], []
  for agent_loss, pop, k in zip(agent_losses, population, keys):
    losses, (p, m) = _in_groups(agent_loss, agent_groups)(meta_params, pop,
                                                          k)
    total += jnp.mean(losses) / len(agent_losses)
    new_pop.append(p)
    metrics.append({'meta_loss': jnp.mean(losses), **m})
  return total, (tuple(new_pop), metrics)


def population_grads(agent_losses: Sequence[Any], meta_params,
                     population: Sequence[AgentState], keys: Sequence[Array],
                     agent_groups: int = 1, task_weighting: str = 'mean'):
  """The population's meta-loss and the meta-gradient that steps phi.

  'mean': the gradient of `population_loss`. 'unit_norm': each task's
  meta-gradient (of its agents' mean meta-loss) divided by its global norm,
  then the mean over tasks; each task's norm before the division is in its
  metrics (`meta_grad_norm`). The loss returned is the mean over tasks in
  both cases.

  Returns `((loss, (new_population, per-task metrics)), meta_grads)`.
  """
  if check_task_weighting(task_weighting) == 'mean':
    return jax.value_and_grad(population_loss, argnums=1, has_aux=True)(
        agent_losses, meta_params, population, keys, agent_groups)
  total, grads, new_pop, metrics = 0., [], [], []
  for agent_loss, pop, k in zip(agent_losses, population, keys):
    (loss, (p, m)), g = jax.value_and_grad(
        population_loss, argnums=1, has_aux=True)(
            (agent_loss,), meta_params, (pop,), (k,), agent_groups)
    norm = optax.global_norm(g)
    # A zero gradient stays zero; a non-finite one stays non-finite, so the
    # guarded update skips the step.
    scale = 1. / (len(agent_losses) * jnp.maximum(norm, 1e-30))
    grads.append(jax.tree.map(lambda x, s=scale: x * s, g))
    total += loss / len(agent_losses)
    new_pop.append(p[0])
    metrics.append({**m[0], 'meta_grad_norm': norm})
  return (total, (tuple(new_pop), metrics)), jax.tree.map(
      lambda *x: sum(x), *grads)


def guarded_meta_update(meta_optimizer: optax.GradientTransformation, grads,
                        meta_params, meta_opt_state):
  """One meta-optimizer step, skipped whole if any meta-gradient is NaN/inf.

  Returns `(meta_params, meta_opt_state, finite)`.
  """
  finite = _all_finite(grads)
  updates, new_opt_state = meta_optimizer.update(grads, meta_opt_state,
                                                 meta_params)
  new_params = optax.apply_updates(meta_params, updates)
  keep = lambda new, old: jax.tree.map(
      lambda a, b: jnp.where(finite, a, b), new, old)
  return (keep(new_params, meta_params), keep(new_opt_state, meta_opt_state),
          finite)


def pipeline_reset(init_agent, population: AgentState, step: Array,
                   slots: np.ndarray, interval: int, keys: Array,
                   meta_params) -> Tuple[AgentState, Array]:
  """Resets the agents due at `step` (and any with non-finite parameters).

  Agent i is due when `step % interval == slots[i]`; it is replaced by
  `init_agent(keys[i], meta_params)`. Fresh agents are built for the whole
  population and selected: building only the due ones (a gather, a scatter
  and a `lax.cond` for non-finite agents) was no faster on
  small_dense_short and compiled slower. Returns the new population
  and how many agents were reset.
  """
  due = jnp.logical_or(step % interval == jnp.asarray(slots),
                       ~_per_agent_finite(population.params))
  fresh = jax.vmap(init_agent, in_axes=(0, None))(keys, meta_params)
  return _where(due, fresh, population), jnp.sum(due)


def step_metrics(tasks: Sequence[Task], loss, grads, finite, num_reset,
                 task_metrics) -> dict:
  """The logged scalars of one meta-iteration (overall and per task)."""
  ret = sum(m['return_sum'].sum() for m in task_metrics)
  num = sum(m['episodes'].sum() for m in task_metrics)
  metrics = {
      'meta_loss': loss,
      'agent_return': jnp.where(num > 0, ret / jnp.maximum(num, 1), jnp.nan),
      'episodes': num,
      'grad_norm': optax.global_norm(grads),
      'finite': finite,
      'resets': num_reset,
  }
  for t, m in zip(tasks, task_metrics):
    metrics[f'meta_loss/{t.name}'] = m['meta_loss']
    for k, v in m.items():
      if k not in ('meta_loss', 'return_sum', 'episodes'):
        metrics[f'{k}/{t.name}'] = jnp.mean(v)
  return metrics


def _check_trainer_args(tasks, num_inner_steps, steps_per_call, intervals,
                        num_devices, agent_groups=1) -> None:
  if not tasks:
    raise ValueError('tasks: at least one task is required')
  if len(intervals) != len(tasks):
    raise ValueError(f'reset_interval: {len(intervals)} values for '
                     f'{len(tasks)} tasks')
  for field, value in ((('num_inner_steps', num_inner_steps),
                        ('steps_per_call', steps_per_call)) +
                       tuple(('reset_interval', r) for r in intervals)):
    if int(value) != value or value < 1:
      raise ValueError(f'{field}: must be an int >= 1, got {value}')
  for t in tasks:
    if int(t.num_agents) < 1:
      raise ValueError(f'num_agents: must be >= 1, got {t.num_agents} '
                       f'(task {t.name})')
    if t.num_agents % num_devices:
      raise ValueError(
          f'num_agents: {t.num_agents} agents of task {t.name} cannot be '
          f'split evenly over {num_devices} devices; use a multiple of '
          f'{num_devices}')
    optimizer_lib.check_learning_rate(t.learning_rate,
                                      f'learning_rate (task {t.name})')
    if int(agent_groups) != agent_groups or agent_groups < 1 or (
        t.num_agents % (agent_groups * num_devices)):
      raise ValueError(
          f'agent_groups: must be an int >= 1 dividing num_agents / devices '
          f'({t.num_agents} / {num_devices}, task {t.name}); got '
          f'{agent_groups}')


def make_meta_trainer(tasks: Sequence[Task],
                      learned_opt: optimizer_lib.LearnedOptimizer,
                      meta_optimizer: optax.GradientTransformation,
                      *,
                      num_inner_steps: int = 4,
                      reset_interval=32,
                      pipeline: bool = True,
                      meta_loss: str = 'a2c',
                      second_order: bool = True,
                      remat: bool = True,
                      steps_per_call: int = 1,
                      num_devices: int = 1,
                      agent_groups: int = 1,
                      task_weighting: str = 'mean') -> MetaTrainer:
  """Builds the meta-training functions (validates everything first).

  Assembles the pieces of this module: `make_init_agent`,
  `make_agent_meta_loss` (K `inner_unroll` updates + the head), and
  `meta_init` / `meta_step` (`population_loss`, `guarded_meta_update`,
  `pipeline_reset`, `step_metrics`).

  Args:
    tasks: one or more `Task`s, meta-trained together (meta-gradients are
      averaged over agents within a task, then over tasks).
    learned_opt: the learned optimizer being meta-trained.
    meta_optimizer: optax optimizer of the meta-params.
    num_inner_steps: K inner updates per meta-iteration.
    reset_interval: meta-iterations between two resets of an agent: one int
      for all tasks, or one per task.
    pipeline: stagger resets (True) or reset all agents together (False).
    meta_loss: name of a `lopt.meta_losses` head.
    second_order: differentiate through the inner gradients too (True, the
      paper's meta-gradient) or treat them as constants (cheaper).
    remat: recompute each inner update on the backward pass
      (`jax.checkpoint`) instead of storing its activations.
    steps_per_call: meta-iterations per jitted `run` call.
    num_devices: devices the population is sharded over; every task's
      num_agents must be divisible by it.
    agent_groups: run each task's agents in this many sequential groups,
      each recomputed on the backward pass: the same meta-gradient with the
      peak memory of one group (every num_agents / num_devices must be
      divisible by it).
    task_weighting: how the tasks' meta-gradients are combined
      (`TASK_WEIGHTINGS`): 'mean' (the gradient of the mean meta-loss) or
      'unit_norm' (each task's meta-gradient at unit global norm, then the
      mean).

  Returns:
    A `MetaTrainer`.
  """
  tasks = tuple(tasks)
  intervals = (tuple(reset_interval) if isinstance(reset_interval,
                                                   (tuple, list))
               else (reset_interval,) * len(tasks))
  _check_trainer_args(tasks, num_inner_steps, steps_per_call, intervals,
                      num_devices, agent_groups)
  check_task_weighting(task_weighting)
  head = meta_losses.get(meta_loss)
  parts = _Parts(
      tasks=tasks, learned_opt=learned_opt, meta_optimizer=meta_optimizer,
      intervals=intervals,
      slots=tuple(reset_index(t.num_agents, r, pipeline)
                  for t, r in zip(tasks, intervals)),
      init_agents=tuple(make_init_agent(t, learned_opt) for t in tasks),
      agent_losses=tuple(
          make_agent_meta_loss(t, learned_opt, head,
                               num_inner_steps=num_inner_steps,
                               second_order=second_order, remat=remat)
          for t in tasks),
      agent_groups=agent_groups, task_weighting=task_weighting)
  step = functools.partial(meta_step, parts)

  def run(state: MetaState):
    return jax.lax.scan(lambda s, _: step(s), state, None,
                        length=steps_per_call)

  return MetaTrainer(init=jax.jit(functools.partial(meta_init, parts)),
                     step=step, run=jax.jit(run, donate_argnums=0),
                     reset_index=parts.slots, init_agent=parts.init_agents,
                     steps_per_call=steps_per_call)


class _Parts(NamedTuple):
  """What `make_meta_trainer` assembles (all static, built once)."""
  tasks: Tuple[Task, ...]
  learned_opt: Any
  meta_optimizer: optax.GradientTransformation
  intervals: Tuple[int, ...]
  slots: Tuple[np.ndarray, ...]
  init_agents: Tuple[Any, ...]
  agent_losses: Tuple[Any, ...]
  agent_groups: int
  task_weighting: str


def meta_init(parts: _Parts, key: Array) -> MetaState:
  """Fresh meta-params and a fresh population of every task."""
  k_meta, *k_tasks = jax.random.split(key, len(parts.tasks) + 1)
  meta_params = parts.learned_opt.init(k_meta)
  population = tuple(
      jax.vmap(init_agent, in_axes=(0, None))(
          jax.random.split(k, t.num_agents), meta_params)
      for init_agent, t, k in zip(parts.init_agents, parts.tasks, k_tasks))
  return MetaState(meta_params, parts.meta_optimizer.init(meta_params),
                   population, jnp.zeros((), jnp.int32),
                   jnp.zeros((), jnp.int32))


def meta_step(parts: _Parts, state: MetaState) -> Tuple[MetaState, dict]:
  """One meta-iteration: population loss and meta-gradient, the guarded
  meta-update, then pipeline resets (and resets of non-finite agents)."""
  split = [jax.vmap(lambda k: jax.random.split(k, 3))(p.key)
           for p in state.population]
  population = tuple(p._replace(key=s[:, 0])
                     for p, s in zip(state.population, split))
  (loss, (new_pop, task_metrics)), grads = population_grads(
      parts.agent_losses, state.meta_params, population,
      [s[:, 1] for s in split], parts.agent_groups, parts.task_weighting)
  meta_params, meta_opt_state, finite = guarded_meta_update(
      parts.meta_optimizer, grads, state.meta_params, state.meta_opt_state)
  resets = [pipeline_reset(init_agent, pop, state.step, slot, interval,
                           s[:, 2], meta_params)
            for init_agent, pop, slot, interval, s in zip(
                parts.init_agents, new_pop, parts.slots, parts.intervals,
                split)]
  metrics = step_metrics(parts.tasks, loss, grads, finite,
                         sum(n for _, n in resets), task_metrics)
  return MetaState(meta_params, meta_opt_state, tuple(p for p, _ in resets),
                   state.step + 1,
                   state.skipped + (~finite).astype(jnp.int32)), metrics


def population_mesh(devices=None) -> jax.sharding.Mesh:
  """A one-axis mesh ('agents') over `devices` (default: every device of
  every process, so under `jax.distributed` it spans all hosts)."""
  devices = list(jax.devices() if devices is None else devices)
  return jax.sharding.Mesh(np.array(devices), ('agents',))


def state_shardings(state: MetaState, mesh: jax.sharding.Mesh) -> MetaState:
  """The placement of a (possibly abstract) `MetaState` on `mesh`: every
  agent's state split on its leading agent axis, all else replicated."""
  by_agent = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
      'agents'))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return MetaState(
      meta_params=jax.tree.map(lambda _: replicated, state.meta_params),
      meta_opt_state=jax.tree.map(lambda _: replicated, state.meta_opt_state),
      population=jax.tree.map(lambda _: by_agent, state.population),
      step=replicated, skipped=replicated)


def init_sharded(trainer: MetaTrainer, key: Array,
                 mesh: Optional[jax.sharding.Mesh] = None) -> MetaState:
  """`trainer.init(key)` built in place on `mesh` (default
  `population_mesh()`): each device, and so each host, computes only its own
  agents. Every process passes the same key."""
  key = np.asarray(key)
  return init_sharded_fn(trainer, key, mesh)(key)


def init_sharded_fn(trainer: MetaTrainer, key: Array,
                    mesh: Optional[jax.sharding.Mesh] = None):
  """The jitted function of `init_sharded`: `key -> MetaState` on `mesh`,
  its out-shardings from a trace of `trainer.init` on a key like `key`."""
  mesh = population_mesh() if mesh is None else mesh
  key = jax.ShapeDtypeStruct(np.shape(key), np.asarray(key).dtype)
  shardings = state_shardings(jax.eval_shape(trainer.init, key), mesh)
  return jax.jit(trainer.init, out_shardings=shardings)


def run_sharded_fn(trainer: MetaTrainer, state: MetaState,
                   mesh: Optional[jax.sharding.Mesh] = None):
  """`trainer.run` with its state output pinned to `state_shardings` on
  `mesh` (default `population_mesh()`, as `init_sharded`'s), metrics as XLA
  places them; `state` may be abstract. Without the pin XLA's propagation
  may hand some population leaves back replicated, and the next call then
  takes another layout (another program)."""
  mesh = population_mesh() if mesh is None else mesh
  return jax.jit(trainer.run, donate_argnums=0,
                 out_shardings=(state_shardings(state, mesh), None))


def shard(state: MetaState, devices=None) -> MetaState:
  """Places an existing state on `population_mesh(devices)` (population
  split over the devices, the rest replicated); jit then runs each device's
  agents locally and averages the meta-gradient across devices."""
  return jax.device_put(state,
                        state_shardings(state, population_mesh(devices)))
