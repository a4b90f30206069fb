r"""Meta-trains a learned optimizer (Optim4RL by default) on A2C agents.

    python -m launchers.meta_train --config=configs/meta_catch.py \
        --workdir=runs/meta_catch
    python -m launchers.meta_train --config=configs/meta_gridworlds.py:six \
        --workdir=runs/meta_six --config.optimizer.cell=l2lgd2 \
        --config.meta.pipeline=False

Resumes automatically from the latest checkpoint in --workdir; SIGTERM saves a
checkpoint and exits cleanly. Writes into --workdir: config.json (at start),
metrics.csv (one row per meta-iteration), meta_training.png, checkpoints/,
and meta_params.npz (the frozen meta-params, loadable by train.py with
--config.optimizer.name=learned --config.optimizer.meta_params_path=...).
"""

import csv
import math
import os
import signal
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from agents import a2c
from agents import environments
from agents import ppo
from launchers import common
import lopt
from lopt import checkpointing
from lopt import meta
from lopt import meta_losses
from ml_collections import config_flags


# Config keys that may change between a run and its resumption.
RESUMABLE_CHANGES = ('num_meta_steps', 'save_every', 'keep_checkpoints')


def cell_config(cfg) -> lopt.CellConfig:
  return lopt.CellConfig(**{k: (tuple(v) if isinstance(v, (list, tuple))
                                else v) for k, v in cfg.optimizer.items()})


def validate(cfg) -> None:
  """Every check that can fail, on the host, before anything compiles."""
  t = cfg.tasks
  names = tuple(t.env_names)
  if not names:
    raise ValueError('tasks.env_names: at least one environment is required')
  for name in names:
    if name not in environments.names():
      raise ValueError(f'tasks.env_names: unknown environment {name!r}; '
                       f'allowed: {list(environments.names())}')
  for field in ('learning_rates', 'reward_scales'):
    if len(t[field]) != len(names):
      raise ValueError(f'tasks.{field}: {len(t[field])} values for '
                       f'{len(names)} tasks {names}')
  for lr in t.learning_rates:
    lopt.optimizer.check_learning_rate(lr, 'tasks.learning_rates')
  if t.reset_intervals and len(t.reset_intervals) != len(names):
    raise ValueError(f'tasks.reset_intervals: {len(t.reset_intervals)} '
                     f'values for {len(names)} tasks')
  for r in tuple(t.reset_intervals) or (cfg.meta.reset_interval,):
    common.check_positive_int(r, 'meta.reset_interval')
  num_agents = common.check_positive_int(t.num_agents, 'tasks.num_agents')
  if num_agents % jax.device_count():
    raise ValueError(
        f'tasks.num_agents: {num_agents} agents cannot be split evenly over '
        f'{jax.device_count()} devices; use a multiple of '
        f'{jax.device_count()}')
  cell_config(cfg)  # cell, preprocessor, activation, sizes
  meta.make_meta_optimizer(cfg.meta.learning_rate, cfg.meta.clip_type,
                           cfg.meta.clip)
  meta_losses.get(cfg.meta.meta_loss)
  common.check_positive_int(cfg.meta.num_inner_steps, 'meta.num_inner_steps')
  for field in ('num_meta_steps', 'log_every', 'save_every',
                'keep_checkpoints'):
    common.check_positive_int(cfg[field], field)
  if cfg.save_every % cfg.log_every:
    raise ValueError(f'save_every: must be a multiple of log_every '
                     f'({cfg.log_every}), got {cfg.save_every}')
  agent = cfg.get('agent', 'a2c')
  if agent not in ('a2c', 'ppo'):
    raise ValueError(f"agent: unknown inner agent {agent!r}; allowed: "
                     "['a2c', 'ppo']")
  if agent == 'ppo' and 'ppo' not in cfg:
    raise ValueError('ppo: agent=ppo needs a ppo section (see '
                     'configs/meta_ppo_brax.py)')
  for name, scale in zip(names, t.reward_scales):
    if agent == 'ppo':
      ppo_config(cfg, scale).validate()
    else:
      a2c.A2CConfig(reward_scale=scale, **dict(cfg.a2c)).validate()
      if getattr(environments.make(name), 'continuous', False):
        raise ValueError(f'tasks.env_names: {name} has continuous actions; '
                         'A2C needs discrete ones (use agent=ppo)')


def build(cfg):
  """Config -> (tasks, learned optimizer, meta-trainer). Validates first."""
  validate(cfg)
  tasks = []
  for name, lr, scale in zip(cfg.tasks.env_names, cfg.tasks.learning_rates,
                             cfg.tasks.reward_scales):
    env = environments.make(name)
    if cfg.get('agent', 'a2c') == 'ppo':
      agent = ppo.inner_agent(ppo.make_ppo(env, ppo_config(cfg, scale)))
    else:
      agent = a2c.make_a2c(env, common.network_config(name, cfg.network),
                           a2c.A2CConfig(reward_scale=scale, **dict(cfg.a2c)))
    tasks.append(meta.Task(name, agent, cfg.tasks.num_agents, float(lr)))
  lo = lopt.learned_optimizer(learning_rate=cfg.tasks.learning_rates[0],
                              config=cell_config(cfg))
  trainer = meta.make_meta_trainer(
      tasks, lo,
      meta.make_meta_optimizer(cfg.meta.learning_rate, cfg.meta.clip_type,
                               cfg.meta.clip),
      num_inner_steps=cfg.meta.num_inner_steps,
      reset_interval=(tuple(cfg.tasks.reset_intervals) or
                      cfg.meta.reset_interval),
      pipeline=cfg.meta.pipeline, meta_loss=cfg.meta.meta_loss,
      second_order=cfg.meta.second_order, remat=cfg.meta.remat,
      steps_per_call=cfg.log_every, num_devices=jax.device_count())
  return tasks, lo, trainer


def ppo_config(cfg, reward_scale: float) -> ppo.PPOConfig:
  fields = {k: (tuple(v) if isinstance(v, (list, tuple)) else v)
            for k, v in cfg.ppo.items()}
  fields['reward_scale'] = reward_scale
  return ppo.PPOConfig(**fields)


def env_steps_per_iteration(cfg) -> int:
  if cfg.get('agent', 'a2c') == 'ppo':
    per_rollout = cfg.ppo.num_envs * cfg.ppo.unroll_len
  else:
    per_rollout = cfg.a2c.num_envs * cfg.a2c.rollout_len
  return (len(cfg.tasks.env_names) * cfg.tasks.num_agents *
          (cfg.meta.num_inner_steps + 1) * per_rollout)


def _read_rows(path: str, upto: int):
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [r for r in csv.DictReader(f) if int(r['meta_step']) <= upto]


class _CsvAppender:
  """metrics.csv written as the run goes (rows kept up to a resume point)."""

  def __init__(self, path: str, rows):
    self.path = path
    self.fields = list(rows[0]) if rows else None
    if rows:
      common.write_csv(path, rows)
    elif os.path.exists(path):
      os.remove(path)

  def append(self, rows):
    if not rows:
      return
    new = self.fields is None
    if new:
      self.fields = list(rows[0])
    with open(self.path, 'a', newline='') as f:
      w = csv.DictWriter(f, fieldnames=self.fields)
      if new:
        w.writeheader()
      w.writerows(rows)


class _StopFlag:
  """Set by SIGTERM/SIGINT; the loop saves and exits after the current call."""

  def __init__(self):
    self.requested = False

  def __call__(self, signum, frame):
    del frame
    print(f'signal {signum}: saving a checkpoint and stopping', flush=True)
    self.requested = True


def meta_train(cfg, workdir: str, verbose: bool = True,
               stop: _StopFlag = None) -> dict:
  """Runs (or resumes) meta-training; returns a summary dict."""
  validate(cfg)
  os.makedirs(workdir, exist_ok=True)
  ckpt = checkpointing.Checkpointer(
      os.path.join(workdir, 'checkpoints'), cfg.to_dict(),
      ignore=RESUMABLE_CHANGES, keep=cfg.keep_checkpoints)
  start_step = ckpt.check_compatible() or 0  # before compiling anything
  common.write_json(os.path.join(workdir, 'config.json'), cfg.to_dict())
  _, lo, trainer = build(cfg)
  stop = stop or _StopFlag()
  total = math.ceil(cfg.num_meta_steps / cfg.log_every) * cfg.log_every

  t0 = time.time()
  state = trainer.init(jax.random.PRNGKey(cfg.seed))
  if start_step:
    state, start_step = ckpt.restore(state)
    print(f'resumed from checkpoint at meta-step {start_step}', flush=True)
  state = meta.shard(state)
  step = int(start_step or 0)
  csv_path = os.path.join(workdir, 'metrics.csv')
  rows = _read_rows(csv_path, step)
  csv_file = _CsvAppender(csv_path, rows)
  per_iter = env_steps_per_iteration(cfg)
  progress = common.Progress(total, unit='agent env-steps')
  progress_steps = step
  first_call_seconds = None
  while step < total and not stop.requested:
    state, metrics = trainer.run(state)
    metrics = jax.device_get(metrics)
    if first_call_seconds is None:
      first_call_seconds = time.time() - t0
    new_rows = [{'meta_step': step + i + 1,
                 **{k: float(np.asarray(v)[i]) for k, v in metrics.items()}}
                for i in range(cfg.log_every)]
    rows += new_rows
    csv_file.append(new_rows)
    step += cfg.log_every
    progress_steps += cfg.log_every
    if verbose:
      progress.line(step, progress_steps * per_iter,
                    **{'meta-loss': float(np.mean(metrics['meta_loss'])),
                       'agent return': float(np.nanmean(
                           metrics['agent_return'])),
                       'skipped': int(state.skipped)})
    if step % cfg.save_every == 0 or step >= total or stop.requested:
      ckpt.save(step, state, force=True)
  ckpt.close()

  meta_params = jax.device_get(state.meta_params)
  export = lopt.save(os.path.join(workdir, 'meta_params.npz'), meta_params,
                     lo, extra={'meta_step': step, 'config': cfg.to_dict()})
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
  summary = {'meta_step': step, 'skipped_meta_updates': int(state.skipped),
             'first_call_seconds': first_call_seconds,
             'meta_params_path': export, 'stopped_early': stop.requested,
             'elapsed_seconds': time.time() - t0}
  common.write_json(os.path.join(workdir, 'meta_summary.json'), summary)
  return summary


def _smooth(y, window: int = 20) -> np.ndarray:
  y = np.asarray(y, np.float64)
  out = np.empty_like(y)
  for i in range(len(y)):
    out[i] = np.nanmean(y[max(0, i - window + 1):i + 1])
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # keep library INFO chatter out
  cfg = _CONFIG.value
  print(cfg, flush=True)
  workdir = _WORKDIR.value or os.path.join(
      'runs', 'meta_' + '_'.join(cfg.tasks.env_names))
  stop = _StopFlag()
  signal.signal(signal.SIGTERM, stop)
  summary = meta_train(cfg, workdir, stop=stop)
  print(f'meta-step {summary["meta_step"]}; skipped meta-updates '
        f'{summary["skipped_meta_updates"]}; frozen meta-params: '
        f'{summary["meta_params_path"]}; outputs in {workdir}', flush=True)


if __name__ == '__main__':
  # Flags are defined only when run as a program, so that launchers can import
  # each other's functions.
  _CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.')
  _WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory.')
  app.run(main)
