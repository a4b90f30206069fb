"""Meta-training from a config: `meta_train(cfg, workdir)` (meta_train.py,
quickstart.py).

Validates every field and builds each task's agent through the launchers'
one factory (`common.make_agent`, so env options such as `episode_length` and
`reset_mode` reach meta-training as they reach train.py), then runs
`lopt.meta` in `driver.Driver`'s loop and resumes from the latest checkpoint
in `workdir`. Writes into
`workdir`: config.json (at start), metrics.csv (one row per meta-iteration),
meta_training.png, meta_loss.png, checkpoints/, meta_summary.json and
meta_params.npz (the frozen meta-params, loadable by train.py with
--config.optimizer.name=learned --config.optimizer.meta_params_path=...).
"""

import functools
import json
import math
import os
import time
from typing import Any, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from agents import ppo
from launchers.lib import common
from launchers.lib import driver as driver_lib
from launchers.lib import multihost
from launchers.lib import suite_summary
import lopt
from lopt import checkpointing
from lopt import es as es_lib
from lopt import meta
from lopt import meta_losses


Array = jax.Array

# Config keys that may change between a run and its resumption.
RESUMABLE_CHANGES = ('num_meta_steps', 'save_every', 'keep_checkpoints')


def cell_config(cfg) -> lopt.CellConfig:
  return lopt.CellConfig(**{k: (tuple(v) if isinstance(v, (list, tuple))
                                else v) for k, v in cfg.optimizer.items()})


def start_meta_params(cfg):
  """The meta-params of `meta.init_path`, or with `meta.adam_start` the
  cell's init set so that its direction is Adam's
  (`lopt.imitation.adam_start`; inputs beyond the gradient's start unused),
  or None (the cell's own init from the seed). Raises ValueError if the file
  does not load or its cell differs from `optimizer` (the differing fields
  named), or if the cell cannot start at Adam's direction."""
  path = cfg.meta.get('init_path', '')
  if cfg.meta.get('adam_start', False):
    if path:
      raise ValueError('meta.adam_start: give it or meta.init_path, not both')
    config = cell_config(cfg)
    if config.adam_residual:
      raise ValueError('meta.adam_start: optimizer.adam_residual starts at '
                       "Adam's direction already; turn one of them off")
    if not config.second_moment:
      raise ValueError('meta.adam_start: needs optimizer.second_moment > 0 '
                       "(the magnitude path's input is then Adam's v)")
    init = lopt.learned_optimizer(config=config).init(
        jax.random.PRNGKey(cfg.seed))
    return lopt.imitation.adam_start(config, init)
  if not path:
    return None
  try:
    lo, meta_params = lopt.load(path)
  except (OSError, ValueError) as e:
    raise ValueError(f'meta.init_path: cannot load {path!r}: {e}') from e
  want = cell_config(cfg).to_dict()
  have = lo.config.to_dict()
  diff = [f'optimizer.{k}: the file has {have[k]!r}, the config {want[k]!r}'
          for k in sorted(want) if have.get(k) != want[k]]
  if diff:
    raise ValueError(f'meta.init_path: {path} is another cell: ' +
                     '; '.join(diff))
  return meta_params


def validate(cfg, check_devices: bool = True) -> List[Any]:
  """Every check that can fail, on the host, before anything compiles.

  `check_devices=False` leaves out the population's fit on the devices (the
  caller checks it knowing the topology of the checkpoint it resumes).

  Returns each task's agent (A2C or PPO, in `tasks.env_names` order), built
  by `common.make_agent` with the task's reward scale.
  """
  t = cfg.tasks
  names = tuple(t.env_names)
  if not names:
    raise ValueError('tasks.env_names: at least one environment is required')
  for field in ('learning_rates', 'reward_scales'):
    if len(t[field]) != len(names):
      raise ValueError(f'tasks.{field}: {len(t[field])} values for '
                       f'{len(names)} tasks {names}')
  for lr in t.learning_rates:
    lopt.optimizer.check_learning_rate(lr, 'tasks.learning_rates')
  common.check_lr_schedule(t.get('lr_schedule', 'constant'),
                           t.get('lr_end', 0.), 'tasks')
  if t.reset_intervals and len(t.reset_intervals) != len(names):
    raise ValueError(f'tasks.reset_intervals: {len(t.reset_intervals)} '
                     f'values for {len(names)} tasks')
  for r in tuple(t.reset_intervals) or (cfg.meta.reset_interval,):
    common.check_positive_int(r, 'meta.reset_interval')
  if algorithm(cfg) == 'es':
    validate_es(cfg)
  elif check_devices:
    check_population_fits(t.num_agents)
  cell_config(cfg)  # cell, preprocessor, activation, sizes
  start_meta_params(cfg)  # meta.init_path: readable, the same cell
  meta.make_meta_optimizer(cfg.meta.learning_rate, cfg.meta.clip_type,
                           cfg.meta.clip)
  meta_losses.get(cfg.meta.meta_loss)
  meta.check_task_weighting(cfg.meta.get('task_weighting', 'mean'),
                            'meta.task_weighting')
  common.check_positive_int(cfg.meta.num_inner_steps, 'meta.num_inner_steps')
  for field in ('num_meta_steps', 'log_every', 'save_every',
                'keep_checkpoints'):
    common.check_positive_int(cfg[field], field)
  if cfg.save_every % cfg.log_every:
    raise ValueError(f'save_every: must be a multiple of log_every '
                     f'({cfg.log_every}), got {cfg.save_every}')
  # Last, as it builds the envs: each task's agent, through the factory that
  # train.py and evaluate.py use (env options, agent and network fields).
  return [common.make_agent(cfg, name, scale, field='tasks.env_names',
                            kind=kind)[0]
          for name, scale, kind in zip(names, t.reward_scales,
                                       task_agents(cfg))]


def task_agents(cfg) -> tuple:
  """The inner agent of each task: `tasks.agents`, or `agent` for all."""
  names = tuple(cfg.tasks.env_names)
  kinds = tuple(cfg.tasks.get('agents', ()))
  if not kinds:
    return (cfg.get('agent', 'a2c'),) * len(names)
  if len(kinds) != len(names):
    raise ValueError(f'tasks.agents: {len(kinds)} values for {len(names)} '
                     f'tasks {names}')
  for k in kinds:
    if k not in common.AGENTS:
      raise ValueError(f'tasks.agents: unknown agent {k!r}; allowed: '
                       f'{sorted(common.AGENTS)}')
  return kinds


def check_population_fits(num_agents, saved_topology: Optional[dict] = None):
  """Every task's population must split evenly over all devices (of all
  processes); `saved_topology` (a checkpoint's) is named in the error."""
  num_agents = common.check_positive_int(num_agents, 'tasks.num_agents')
  here = multihost.topology()
  if num_agents % here['devices']:
    resume = (f' (the checkpoint was written on '
              f'{multihost.describe(saved_topology)}; it restores on any '
              'device count that divides num_agents)'
              if saved_topology else '')
    raise ValueError(
        f'tasks.num_agents: {num_agents} agents cannot be split evenly over '
        f'{multihost.describe(here)}{resume}; use a multiple of '
        f'{here["devices"]} devices')


def build(cfg, agents: Optional[Sequence[Any]] = None):
  """Config -> (tasks, learned optimizer, meta-trainer).

  `agents` are `validate(cfg)`'s (validated and built here when not given).
  A PPO agent enters meta-training as `ppo.inner_agent` (one full-batch
  step per inner update).
  """
  if agents is None:
    agents = validate(cfg)
  tasks = []
  intervals = (tuple(cfg.tasks.reset_intervals) or
               (cfg.meta.reset_interval,) * len(agents))
  for name, lr, agent, interval in zip(
      cfg.tasks.env_names, cfg.tasks.learning_rates, agents, intervals):
    if isinstance(agent, ppo.PPO):
      agent = ppo.inner_agent(agent)
    # A schedule runs over an agent's life: from a reset to the next, its
    # interval x K inner updates (one optimizer step each).
    rate = common.make_learning_rate(
        lr, cfg.tasks.get('lr_schedule', 'constant'),
        cfg.tasks.get('lr_end', 0.),
        int(interval) * cfg.meta.num_inner_steps)
    tasks.append(meta.Task(name, agent, cfg.tasks.num_agents, rate))
  # An agent's life: from a reset to the next (the progress input's run).
  lifetime = max(intervals) * cfg.meta.num_inner_steps
  lo = lopt.learned_optimizer(learning_rate=cfg.tasks.learning_rates[0],
                              config=cell_config(cfg), total_steps=lifetime)
  start = start_meta_params(cfg)
  if start is not None:  # meta.init_path: every key starts from the file
    lo = lo._replace(init=lambda key: jax.tree.map(jnp.asarray, start))
  trainer = meta.make_meta_trainer(
      tasks, lo,
      meta.make_meta_optimizer(cfg.meta.learning_rate, cfg.meta.clip_type,
                               cfg.meta.clip),
      num_inner_steps=cfg.meta.num_inner_steps,
      reset_interval=(tuple(cfg.tasks.reset_intervals) or
                      cfg.meta.reset_interval),
      pipeline=cfg.meta.pipeline, meta_loss=cfg.meta.meta_loss,
      second_order=cfg.meta.second_order, remat=cfg.meta.remat,
      agent_groups=cfg.meta.get('agent_groups', 1),
      task_weighting=cfg.meta.get('task_weighting', 'mean'),
      steps_per_call=cfg.log_every, num_devices=jax.device_count())
  return tasks, lo, trainer


# ES over whole training runs (meta.algorithm = 'es'; lopt.es).
ALGORITHMS = ('meta_gradient', 'es')
# How many times the reference's Adam rates may be extended past an edge.
REFERENCE_EXTENSIONS = 3
ES_FITNESS = ('final', 'auc')


def algorithm(cfg) -> str:
  name = cfg.meta.get('algorithm', 'meta_gradient')
  if name not in ALGORITHMS:
    raise ValueError(f'meta.algorithm: unknown {name!r}; allowed: '
                     f'{list(ALGORITHMS)}')
  return name


def validate_es(cfg) -> None:
  """The ES fields (meta.es), checked on the host before anything compiles."""
  e = cfg.meta.es
  es_lib.check_es_fields(e.population_size, e.sigma, e.learning_rate,
                          e.fitness_shaping, jax.device_count())
  common.check_positive_int(e.run_updates, 'meta.es.run_updates')
  common.check_positive_int(e.seeds_per_member, 'meta.es.seeds_per_member')
  common.check_positive_int(e.reference_seeds, 'meta.es.reference_seeds')
  rates = tuple(e.reference_rates)
  if not rates or any(isinstance(r, bool) or not isinstance(r, (int, float))
                      or not r > 0 for r in rates):
    raise ValueError('meta.es.reference_rates: factors > 0 of each task\'s '
                     f'rate (at least one), got {rates!r}')
  factors = tuple(e.get('rate_factors', ()))
  if any(isinstance(r, bool) or not isinstance(r, (int, float))
         or not 0 < r < float('inf') for r in factors):
    raise ValueError('meta.es.rate_factors: factors > 0 of each task\'s '
                     f'rate, or () for the rate itself; got {factors!r}')
  if e.fitness not in ES_FITNESS:
    raise ValueError(f'meta.es.fitness: unknown {e.fitness!r}; allowed: '
                     f'{list(ES_FITNESS)}')


def run_return(metrics, statistic: str) -> Array:
  """A whole run's score from its per-update metrics (`return_sum`,
  `episodes`: `[updates, envs]`): 'final', the mean return of the episodes
  that ended in the last 10% of updates, or 'auc', of all episodes. NaN if
  none ended there."""
  ret, num = metrics['return_sum'], metrics['episodes']
  if statistic == 'final':
    tail = max(1, ret.shape[0] // 10)
    ret, num = ret[-tail:], num[-tail:]
  total = jnp.sum(num)
  return jnp.where(total > 0, jnp.sum(ret) / jnp.maximum(total, 1), jnp.nan)


def _task_run(cfg, kind: str, agent):
  """`run(optimizer, key) -> score`: one agent trained from scratch for
  `meta.es.run_updates` updates and scored by `meta.es.fitness`."""
  algo = common.AGENTS[kind]
  updates = int(cfg.meta.es.run_updates)

  def run(optimizer, key):
    state = algo.init_state(agent, optimizer, key)
    _, metrics = algo.make_train(agent, optimizer, updates)(state)
    return run_return(metrics, cfg.meta.es.fitness)

  return run


def task_optimizer_steps(cfg, kind: str) -> int:
  """Optimizer steps of one whole ES run of a task (PPO: epochs x
  minibatches per update)."""
  per_update = (int(cfg.ppo.num_epochs) * int(cfg.ppo.num_minibatches)
                if kind == 'ppo' else 1)
  return int(cfg.meta.es.run_updates) * per_update


def es_references(cfg, agents) -> List[Tuple[float, float]]:
  """Per task, (random policy's score, tuned Adam's score): the 0 and 1 of
  its normalised fitness. Adam runs the same whole run
  (`meta.es.reference_seeds` seeds) at the task's rate times each of
  `meta.es.reference_rates` (extended past an edge that wins), with the
  task's schedule; the best mean counts, so a candidate scores above 1 only
  by beating Adam at its best rate, not by stepping further than Adam at
  one rate."""
  refs = []
  key = jax.random.PRNGKey(cfg.seed + 7919)
  for i, (name, kind, agent, lr) in enumerate(zip(
      cfg.tasks.env_names, task_agents(cfg), agents,
      cfg.tasks.learning_rates)):
    steps = task_optimizer_steps(cfg, kind)
    rate = common.make_learning_rate(
        lr, cfg.tasks.get('lr_schedule', 'constant'),
        cfg.tasks.get('lr_end', 0.), steps)
    run = _task_run(cfg, kind, agent)
    keys = jax.random.split(jax.random.fold_in(key, i),
                            cfg.meta.es.reference_seeds)
    # One program a task: the factor is an argument, not a constant.
    scores_of = jax.jit(jax.vmap(
        lambda k, factor, rate=rate, run=run: run(
            optax.adam(_scaled(rate, factor)), k), in_axes=(0, None)))

    def adam_score(factor, scores_of=scores_of, keys=keys):
      return float(np.nanmean(scores_of(keys, jnp.float32(factor))))

    grid = sorted(float(f) for f in cfg.meta.es.reference_rates)
    scores = {f: adam_score(f) for f in grid}
    # A best rate on an edge of the grid is not bracketed: extend past it by
    # the grid's own step there, at most REFERENCE_EXTENSIONS times an edge,
    # by the suite's rule (suite_summary.extension).
    while len(grid) > 1:
      factor = suite_summary.extension(max(scores, key=scores.get), scores,
                                       grid, REFERENCE_EXTENSIONS)
      if factor is None:
        break
      scores[factor] = adam_score(factor)
    best = max(scores, key=scores.get)
    adam = scores[best]
    print(f'es reference {name}: Adam best at x{best:g} of the task rate '
          f'({adam:.4g}; ' + ', '.join(f'x{f:g} {v:.3g}' for f, v in
                                       sorted(scores.items())) + ')',
          flush=True)
    env = common.make_env(cfg, name, 'tasks.env_names')
    num_envs = (cfg.ppo.num_envs if kind == 'ppo' else cfg.a2c.num_envs)
    floor, _ = jax.jit(jax.vmap(functools.partial(
        common.random_policy_return, env, num_envs=int(num_envs),
        num_steps=2000)))(keys)
    floor = float(np.nanmean(floor))
    if not adam > floor:
      raise ValueError(
          f'meta.es: Adam at tasks.learning_rates[{i}] = {lr} scores {adam:.4g}'
          f' on {name}, not above the random policy ({floor:.4g}); the '
          'normalised fitness needs Adam to learn the task: raise '
          'meta.es.run_updates or change the rate')
    refs.append((floor, adam))
  return refs


def _scaled(rate, factor):
  """A learning rate (float or schedule) times `factor`, as a schedule (a
  traced factor then scales it inside the optimizer, past the host's rate
  checks)."""
  if callable(rate):
    return lambda count: factor * rate(count)
  return lambda count: factor * rate


def drawn_rate_factor(key, factors) -> Array:
  """The rate factor of the run with this key: one of `factors` (a 1-D
  array), drawn from the key, so the two members of an antithetic pair,
  which share their run keys, share it too."""
  return factors[jax.random.randint(jax.random.fold_in(key, 1), (), 0,
                                    factors.size)]


def build_es(cfg, agents, references):
  """Config -> (learned optimizer, ES trainer) scoring each candidate by
  whole runs of every task, normalised per task (random 0, Adam 1) and
  averaged over tasks and `meta.es.seeds_per_member` runs. With
  `meta.es.rate_factors` each run's rate is the task's times a factor drawn
  from them: the fitness then rewards an optimizer that trains well at
  rates it was not tuned to (Adam's 1 is still its best rate's score)."""
  e = cfg.meta.es
  lo = lopt.learned_optimizer(learning_rate=cfg.tasks.learning_rates[0],
                              config=cell_config(cfg), total_steps=None)
  runs = []
  for kind, agent, lr in zip(task_agents(cfg), agents,
                             cfg.tasks.learning_rates):
    steps = task_optimizer_steps(cfg, kind)
    rate = common.make_learning_rate(
        lr, cfg.tasks.get('lr_schedule', 'constant'),
        cfg.tasks.get('lr_end', 0.), steps)
    runs.append((_task_run(cfg, kind, agent), rate, steps))

  factors = jnp.asarray(tuple(e.get('rate_factors', ())) or (1.,),
                        jnp.float32)

  def scored_run(meta_params, run, rate, steps, key):
    factor = drawn_rate_factor(key, factors)
    opt = lo.opt_fn(meta_params, _scaled(rate, factor),
                    total_steps=steps)
    return run(opt, key)

  def fitness(meta_params, key):
    scores = []
    for i, ((run, rate, steps), (floor, adam)) in enumerate(
        zip(runs, references)):
      keys = jax.random.split(jax.random.fold_in(key, i), e.seeds_per_member)
      score = jnp.mean(jax.vmap(functools.partial(
          scored_run, meta_params, run, rate, steps))(keys))
      scores.append((score - floor) / (adam - floor))
    return jnp.mean(jnp.stack(scores))

  start = start_meta_params(cfg)
  meta_params = (lo.init(jax.random.PRNGKey(cfg.seed)) if start is None
                 else start)
  trainer = es_lib.make_es_trainer(
      fitness, meta_params, population_size=int(e.population_size),
      sigma=float(e.sigma), learning_rate=float(e.learning_rate),
      fitness_shaping=e.fitness_shaping, steps_per_call=cfg.log_every,
      score_center=bool(e.get('score_center', True)))
  return lo, trainer


def es_references_in(workdir: str, cfg, agents, primary: bool):
  """`es_references`, computed once and kept in `workdir` (a resumed run
  reads them back, so its fitness is on the same scale)."""
  path = os.path.join(workdir, 'es_references.json')
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if saved['config'] == _reference_context(cfg):
      return [tuple(r) for r in saved['references']]
  refs = es_references(cfg, agents)
  if primary:
    common.write_json(path, {'config': _reference_context(cfg),
                             'references': [list(r) for r in refs],
                             'meaning': '(random policy, Adam) per task'})
  return refs


def _reference_context(cfg) -> dict:
  """What the references depend on (a workdir's are reused only for it):
  the tasks, their agents and runs, not the search's own settings."""
  e = cfg.meta.es
  return json.loads(json.dumps({  # as read back (tuples are lists)
      'tasks': cfg.tasks.to_dict(),
      'es': {k: e[k] for k in ('run_updates', 'fitness', 'reference_seeds',
                               'reference_rates')},
      'a2c': cfg.a2c.to_dict(), 'network': cfg.network.to_dict(),
      'ppo': cfg.ppo.to_dict() if 'ppo' in cfg else None,
      'seed': cfg.seed}))


def es_env_steps_per_generation(cfg) -> int:
  e = cfg.meta.es
  per_run = sum((cfg.ppo.num_envs * cfg.ppo.unroll_len if kind == 'ppo'
                 else cfg.a2c.num_envs * cfg.a2c.rollout_len)
                for kind in task_agents(cfg))
  return int(e.population_size * e.seeds_per_member * e.run_updates) * per_run


def program_context(cfg) -> dict:
  """What the compiled meta-training programs depend on besides the code:
  the config without the fields a resumed run may change."""
  return {k: v for k, v in cfg.to_dict().items()
          if k not in RESUMABLE_CHANGES}


def env_steps_per_iteration(cfg) -> int:
  per_rollout = sum(cfg.ppo.num_envs * cfg.ppo.unroll_len if kind == 'ppo'
                    else cfg.a2c.num_envs * cfg.a2c.rollout_len
                    for kind in task_agents(cfg))
  return cfg.tasks.num_agents * (cfg.meta.num_inner_steps + 1) * per_rollout


# Set by SIGTERM/SIGINT (the apps install it).
StopFlag = driver_lib.StopFlag


def _checkpointer(cfg, workdir: str) -> checkpointing.Checkpointer:
  return checkpointing.Checkpointer(
      os.path.join(workdir, 'checkpoints'), cfg.to_dict(),
      ignore=RESUMABLE_CHANGES, keep=cfg.keep_checkpoints,
      topology=multihost.topology())


def _save(path: str, meta_params, lo, step: int, cfg) -> None:
  lopt.save(path, meta_params, lo,
            extra={'meta_step': step, 'config': cfg.to_dict()})


def export_checkpoint(cfg, workdir: str, step: int,
                      out: Optional[str] = None) -> str:
  """Writes the meta-params of checkpoint `step` in `workdir` as an .npz.

  For choosing a checkpoint after the run (e.g. on a validation set): the
  file is what `meta_train` would have exported had the run stopped at
  `step`. `cfg` is the run's config (as to resume it; a changed run length
  is fine); nothing is trained or compiled beyond building the population,
  and nothing in `workdir` changes.

  Args:
    cfg: the run's config.
    workdir: the run's directory.
    step: a kept checkpoint's meta-step.
    out: where to write; default `workdir/meta_params_<step>.npz`.

  Returns:
    The path written (by process 0; every process restores its shards).

  Raises:
    ValueError, before anything is built: no checkpoint of `step` (the kept
    ones named), or checkpoints of another configuration.
  """
  agents = validate(cfg, check_devices=False)
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise ValueError(f'workdir: no checkpoints in {workdir}')
  ckpt = _checkpointer(cfg, workdir)
  step = ckpt.check_compatible(step)
  check_population_fits(cfg.tasks.num_agents, ckpt.saved_topology(step))
  _, lo, trainer = build(cfg, agents)
  state, _ = ckpt.restore(meta.init_sharded(trainer,
                                            jax.random.PRNGKey(cfg.seed)),
                          step)
  ckpt.close()
  meta_params = multihost.fetch(state.meta_params)
  out = out or os.path.join(workdir, f'meta_params_{step}.npz')
  if multihost.is_primary():
    _save(out, meta_params, lo, step, cfg)
  return out


def meta_train(cfg, workdir: str, verbose: bool = True,
               stop: Optional['StopFlag'] = None) -> dict:
  """Runs (or resumes) meta-training; returns a summary dict.

  Under `jax.distributed` every process calls this with the same config:
  the population is split over the devices of all processes (each builds
  only its own agents), every process writes its shards of a checkpoint,
  and only process 0 writes config.json, metrics.csv, plots and the export.
  """
  primary = multihost.is_primary()
  agents = validate(cfg, check_devices=False)
  os.makedirs(workdir, exist_ok=True)
  ckpt = _checkpointer(cfg, workdir)
  start_step = ckpt.check_compatible() or 0  # before compiling anything
  use_es = algorithm(cfg) == 'es'
  score_center = use_es and bool(cfg.meta.es.get('score_center', True))
  if not use_es:
    check_population_fits(cfg.tasks.num_agents,
                          ckpt.saved_topology() if start_step else None)
  if primary:
    common.write_json(os.path.join(workdir, 'config.json'), cfg.to_dict())
  if use_es:
    references = es_references_in(workdir, cfg, agents, primary)
    lo, trainer = build_es(cfg, agents, references)
    trainer_lib, per_step = es_lib, es_env_steps_per_generation(cfg)
  else:
    _, lo, trainer = build(cfg, agents)
    trainer_lib, per_step = meta, env_steps_per_iteration(cfg)
  stop = stop or StopFlag()
  t0 = time.time()
  total = math.ceil(cfg.num_meta_steps / cfg.log_every) * cfg.log_every

  # Built in place, split over every device; a checkpoint restores into the
  # same placement, whatever topology wrote it. Both programs come from the
  # executable cache when it is on and this config ran before.
  driver = driver_lib.Driver(
      program_context(cfg),
      csv_path=os.path.join(workdir, 'metrics.csv') if primary else '',
      key='meta_step', unit='agent env-steps', verbose=verbose)
  key = np.asarray(jax.random.PRNGKey(cfg.seed))
  state = driver.start(
      'meta_init', lambda: trainer_lib.init_sharded_fn(trainer, key), (key,),
      'meta_run', lambda shapes: trainer_lib.run_sharded_fn(trainer, shapes))
  if start_step:
    state, start_step = ckpt.restore(state)
    if verbose:
      print(f'resumed from checkpoint at meta-step {start_step}', flush=True)
  start_step = int(start_step or 0)

  def record(step, metrics, state):
    rows = [{'meta_step': step - cfg.log_every + i + 1,
             **{k: float(np.asarray(v)[i]) for k, v in metrics.items()}}
            for i in range(cfg.log_every)]
    if use_es:  # fitness: normalised whole-run score (random 0, Adam 1)
      return rows, {'fitness': float(np.nanmean(metrics['fitness_mean'])),
                    **({'search mean': float(np.nanmean(
                        metrics['fitness_center']))} if score_center else {}),
                    'best member': float(np.nanmax(metrics['fitness_max'])),
                    'non-finite members': int(state.skipped)}
    return rows, {'meta-loss': float(np.mean(metrics['meta_loss'])),
                  'agent return': float(np.nanmean(metrics['agent_return'])),
                  'skipped': int(state.skipped)}

  def save(step, state, last):
    if step % cfg.save_every == 0 or last:
      ckpt.save(step, state, force=True)

  run = driver.loop(state, first_step=start_step, total=total,
                    per_call=cfg.log_every,
                    units_per_step=per_step,
                    record=record, stop=stop, save=save)
  ckpt.close()
  state, step, rows = run.state, run.step, run.rows

  meta_params = multihost.fetch(state.meta_params)
  export = os.path.join(workdir, 'meta_params.npz')
  summary = {'meta_step': step, 'skipped_meta_updates': int(state.skipped),
             'first_call_seconds': run.first_call_seconds,
             'executable_cache': driver.statuses(),
             # Meta-iterations per second after the first (compiling) call.
             'meta_steps_per_second': (
                 run.later_calls * cfg.log_every / run.later_seconds
                 if run.later_calls else float('nan')),
             'meta_params_path': export, 'stopped_early': run.stopped_early,
             'elapsed_seconds': time.time() - t0,
             'topology': multihost.topology()}
  if not primary:
    return summary
  _save(export, meta_params, lo, step, cfg)
  if rows and use_es:
    x = np.array([float(r['meta_step']) for r in rows])
    curve = lambda k: _smooth([float(r[k]) for r in rows])
    common.plot_curves(
        os.path.join(workdir, 'meta_training.png'),
        {**({'search mean': curve('fitness_center')}
            if score_center else {}),
         'population mean': curve('fitness_mean'),
         'best member': curve('fitness_max')},
        x, 'generation', 'fitness (random 0, Adam 1; smoothed)',
        f'ES on whole runs, {cfg.optimizer.cell} on ' +
        (','.join(cfg.tasks.env_names) if len(cfg.tasks.env_names) <= 2
         else f'{len(cfg.tasks.env_names)} tasks'))
  elif rows:
    x = np.array([float(r['meta_step']) for r in rows])
    common.plot_curves(
        os.path.join(workdir, 'meta_training.png'),
        {'agent return': _smooth([float(r['agent_return']) for r in rows])},
        x, 'meta-iteration', 'mean agent return (smoothed)',
        f'meta-training {cfg.optimizer.cell} on ' +
        (','.join(cfg.tasks.env_names) if len(cfg.tasks.env_names) <= 2
         else f'{len(cfg.tasks.env_names)} tasks'))
    common.plot_curves(
        os.path.join(workdir, 'meta_loss.png'),
        {'meta-loss': _smooth([float(r['meta_loss']) for r in rows])},
        x, 'meta-iteration', 'meta-loss (smoothed)', 'meta-loss')
  common.write_json(os.path.join(workdir, 'meta_summary.json'), summary)
  return summary


def _smooth(y, window: int = 20) -> np.ndarray:
  y = np.asarray(y, np.float64)
  out = np.empty_like(y)
  for i in range(len(y)):
    out[i] = np.nanmean(y[max(0, i - window + 1):i + 1])
  return out
