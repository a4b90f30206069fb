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

import math
import os
import time
from typing import Any, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from agents import ppo
from launchers.lib import common
from launchers.lib import driver as driver_lib
from launchers.lib import multihost
import lopt
from lopt import checkpointing
from lopt import meta
from lopt import meta_losses


# Config keys that may change between a run and its resumption.
RESUMABLE_CHANGES = ('num_meta_steps', 'save_every', 'keep_checkpoints')


def cell_config(cfg) -> lopt.CellConfig:
  return lopt.CellConfig(**{k: (tuple(v) if isinstance(v, (list, tuple))
                                else v) for k, v in cfg.optimizer.items()})


def start_meta_params(cfg):
  """The meta-params of `meta.init_path` (None when unset: the cell's own
  init from the seed). Raises ValueError if the file does not load or its
  cell differs from `optimizer` (the differing fields named)."""
  path = cfg.meta.get('init_path', '')
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
  if check_devices:
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
  lo = lopt.learned_optimizer(learning_rate=cfg.tasks.learning_rates[0],
                              config=cell_config(cfg))
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
  check_population_fits(cfg.tasks.num_agents,
                        ckpt.saved_topology() if start_step else None)
  if primary:
    common.write_json(os.path.join(workdir, 'config.json'), cfg.to_dict())
  _, lo, trainer = build(cfg, agents)
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
      'meta_init', lambda: meta.init_sharded_fn(trainer, key), (key,),
      'meta_run', lambda shapes: meta.run_sharded_fn(trainer, shapes))
  if start_step:
    state, start_step = ckpt.restore(state)
    if verbose:
      print(f'resumed from checkpoint at meta-step {start_step}', flush=True)
  start_step = int(start_step or 0)

  def record(step, metrics, state):
    rows = [{'meta_step': step - cfg.log_every + i + 1,
             **{k: float(np.asarray(v)[i]) for k, v in metrics.items()}}
            for i in range(cfg.log_every)]
    return rows, {'meta-loss': float(np.mean(metrics['meta_loss'])),
                  'agent return': float(np.nanmean(metrics['agent_return'])),
                  'skipped': int(state.skipped)}

  def save(step, state, last):
    if step % cfg.save_every == 0 or last:
      ckpt.save(step, state, force=True)

  run = driver.loop(state, first_step=start_step, total=total,
                    per_call=cfg.log_every,
                    units_per_step=env_steps_per_iteration(cfg),
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
  if rows:
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
