"""Training agents from a config: `train(cfg, workdir)` (train.py, evaluate.py,
quickstart.py).

`cfg.num_seeds` agents train at once (vmapped), `cfg.log_every` updates per
jitted call, placed over every device (of every process, under
`jax.distributed`) by `placement`: seeds split over a 'seeds' mesh axis, each
seed's env batch over an 'envs' axis. The loop is `driver.Driver`'s.
Writes `returns.csv` (mean episode return per logging chunk, per seed; as
the run goes), `learning_curve.png` and `summary.json` into `workdir`.

With `resume=True` the agents' whole state (params, optimizer and env
states, keys) is saved to `workdir/checkpoints` (Orbax) every
`save_seconds` and when a stop is asked for, and a later call with the
same config continues from the latest one: the same returns as a run that
was never stopped. A checkpoint of another config is refused, naming the
differing fields, before anything compiles. The curve before the resume
point is read back from process 0's `returns.csv`, so under
`jax.distributed` the workdir must be one every host sees.
"""

import math
import os
import time
import warnings
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from launchers.lib import common
from launchers.lib import driver as driver_lib
from launchers.lib import multihost
from lopt import checkpointing


def num_envs(cfg) -> int:
  return int(cfg.ppo.num_envs if cfg.get('agent', 'a2c') == 'ppo'
             else cfg.a2c.num_envs)


def mesh_shape(num_seeds: int, envs: int, num_devices: int):
  """(seed shards, env shards) of `num_devices`: seeds take as many devices
  as divide them, each seed's env batch the rest."""
  seed_shards = math.gcd(num_seeds, num_devices)
  env_shards = num_devices // seed_shards
  if envs % env_shards:
    raise ValueError(
        f'num_seeds ({num_seeds}) x num_envs ({envs}) cannot be split over '
        f'{num_devices} devices: the seeds take {seed_shards}, so num_envs '
        f'must be a multiple of {env_shards} (or num_seeds a multiple of '
        f'{num_devices})')
  return seed_shards, env_shards


def placement(states, cfg, devices=None):
  """NamedShardings of (abstract) seed-batched agent states: every leaf
  split on its seed axis; the actor's leaves (env states, observations,
  `[seeds, num_envs, ...]`) also on their env axis."""
  devices = list(jax.devices() if devices is None else devices)
  envs = num_envs(cfg)
  shape = mesh_shape(cfg.num_seeds, envs, len(devices))
  mesh = jax.sharding.Mesh(np.array(devices).reshape(shape),
                           ('seeds', 'envs'))
  spec = jax.sharding.PartitionSpec
  by_seed = jax.sharding.NamedSharding(mesh, spec('seeds'))
  by_env = jax.sharding.NamedSharding(mesh, spec('seeds', 'envs'))
  def actor_leaf(x):
    return by_env if x.ndim >= 2 and x.shape[1] == envs else by_seed
  return states._replace(
      **{f: jax.tree.map(lambda _: by_seed, getattr(states, f))
         for f in states._fields if f != 'actor'},
      actor=jax.tree.map(actor_leaf, states.actor))


def validate(cfg):
  """Checks every field that could fail later, before compiling anything.

  Returns `common.make_agent(cfg)` (built while checking), so callers need
  not build the environment twice.
  """
  built = common.make_agent(cfg)  # env and agent names, network, fields
  common.check_optimizer_config(cfg.optimizer)
  for field in ('num_updates', 'log_every', 'num_seeds'):
    common.check_positive_int(cfg[field], field)
  return built


def train(cfg, workdir: str, label: str = '', verbose: bool = True,
          devices=None, resume: bool = False,
          stop: Optional[driver_lib.StopFlag] = None,
          save_seconds: float = 120.) -> dict:
  """Trains `cfg.num_seeds` agents; returns curves and final returns.

  The seeds and their env batches are split over `devices` (default: every
  device of every process; see `placement`). With `resume` (needs
  `workdir`) the run checkpoints every `save_seconds` and on `stop`, and
  starts from its latest checkpoint (see the module docstring).

  Returns:
    dict with `env_steps` [chunks], `returns` [chunks, seeds] (mean episode
    return over each logging chunk), `final_return` [seeds] (see
    `final_return`), `steps_per_second` (after compilation),
    `compile_seconds`, `nonfinite` (whether any param became NaN/inf) and
    `stopped_early` (a stop came before `cfg.num_updates`; the curves end
    there).
  """
  agent, algo, steps_per_update = validate(cfg)
  if resume and not workdir:
    raise ValueError('resume: needs a workdir to keep checkpoints in')
  ckpt = checkpointing.Checkpointer(
      os.path.join(workdir, 'checkpoints'), cfg.to_dict(),
      keep=1) if resume else None
  start = (ckpt.check_compatible() or 0) if ckpt else 0  # before compiling
  per_step = common.optimizer_steps_per_update(cfg)
  optimizer = common.make_optimizer(
      cfg.optimizer, seed=cfg.seed, total_steps=cfg.num_updates * per_step,
      steps_per_update=per_step)
  num_chunks = math.ceil(cfg.num_updates / cfg.log_every)
  steps_per_chunk = steps_per_update * cfg.log_every

  keys = np.asarray(jax.random.split(jax.random.PRNGKey(cfg.seed),
                                     cfg.num_seeds))
  init = jax.vmap(lambda k: algo.init_state(agent, optimizer, k))
  where_memo = []

  def where():  # a trace of init: only when a program is compiled
    if not where_memo:
      where_memo.append(placement(jax.eval_shape(init, keys), cfg, devices))
    return where_memo[0]

  def chunk_fn(shapes):  # states stay where they are (pinned: the next
    # call then takes the same layout, so the same program); metrics as XLA
    # likes
    del shapes
    train = jax.vmap(algo.make_train(agent, optimizer, cfg.log_every))
    return jax.jit(train, out_shardings=(where(), None))

  # Built in place (each device its seeds and envs) and kept there. Both
  # programs come from the executable cache when it is on and this config
  # ran before.
  primary = multihost.is_primary()
  driver = driver_lib.Driver(
      {'config': cfg.to_dict(),
       'devices': None if devices is None else [(d.platform, d.id)
                                                for d in devices]},
      csv_path=os.path.join(workdir, 'returns.csv') if workdir else '',
      key='update', unit='env-steps (all seeds)', verbose=verbose,
      # Entries load onto the default backend's devices.
      cache_enabled=devices is None or all(
          d.client == jax.devices()[0].client for d in devices))
  if workdir and primary:
    os.makedirs(workdir, exist_ok=True)
  states = driver.start(
      'train_init', lambda: jax.jit(init, out_shardings=where()), (keys,),
      'train_chunk', chunk_fn)
  if start:
    states, start = ckpt.restore(states)
    if verbose and primary:
      print(f'resumed from the checkpoint at update {start}', flush=True)
  t_start = time.time()

  def record(step, metrics, states):
    del states
    ret = common.mean_episode_return(metrics)  # [seeds]
    row = {'update': step, 'env_steps': step * steps_per_update,
           'mean_return': float(np.nanmean(ret)),
           **{f'return_seed{i}': float(r) for i, r in enumerate(ret)},
           'loss_entropy': float(np.mean(metrics['entropy'])),
           'wall_seconds': time.time() - t_start}
    return [row], {'mean return': float(np.nanmean(ret))}

  last_save = [time.time()]

  def save(step, states, last):
    if last or time.time() - last_save[0] >= save_seconds:
      ckpt.save(step, states, force=True)
      last_save[0] = time.time()

  run = driver.loop(states, first_step=start or 0,
                    total=num_chunks * cfg.log_every, per_call=cfg.log_every,
                    units_per_step=steps_per_update * cfg.num_seeds,
                    record=record, stop=stop, save=save if ckpt else None)
  if ckpt:
    ckpt.close()
  states = run.state
  compile_seconds = (float('nan') if run.first_call_seconds is None
                     else run.first_call_seconds)  # nan: nothing left to run
  steps_per_second = (run.later_calls * steps_per_chunk * cfg.num_seeds /
                      run.later_seconds if run.later_calls else float('nan'))
  nonfinite = not bool(multihost.fetch(jax.jit(
      lambda p: jnp.all(jnp.stack([jnp.all(jnp.isfinite(x))
                                   for x in jax.tree.leaves(p)])))(
                                       states.params)))
  # The rows (those of the CSV up to a resume point, then this call's).
  env_steps = [int(float(r['env_steps'])) for r in run.rows]
  returns = np.array([[float(r[f'return_seed{i}'])
                       for i in range(cfg.num_seeds)] for r in run.rows],
                     np.float64).reshape(len(run.rows), cfg.num_seeds)
  final = final_return(returns)
  result = {'label': label or cfg.optimizer.name, 'env': cfg.env_name,
            'env_steps': np.asarray(env_steps), 'returns': returns,
            'final_return': final, 'steps_per_second': steps_per_second,
            'compile_seconds': compile_seconds, 'nonfinite': nonfinite,
            'stopped_early': run.stopped_early,
            'executable_cache': {'init': driver.init.status,
                                 'train': driver.run.status}}
  if workdir and primary:
    common.plot_curves(
        os.path.join(workdir, 'learning_curve.png'),
        {result['label']: np.nanmean(returns, axis=1)},
        np.asarray(env_steps), 'env steps (per agent)', 'mean episode return',
        f'{cfg.get("agent", "a2c").upper()} on {cfg.env_name} '
        f'({cfg.num_seeds} seeds)',
        spread={result['label']: np.nanstd(returns, axis=1)})
    common.write_json(os.path.join(workdir, 'summary.json'), {
        'env': cfg.env_name, 'optimizer': cfg.optimizer.to_dict(),
        'final_return_per_seed': final.tolist(),
        'final_return_mean': float(np.nanmean(final)),
        'env_steps_per_agent': int(env_steps[-1]),
        'env_steps_per_second_after_compile': steps_per_second,
        'compile_seconds': compile_seconds, 'nonfinite_params': nonfinite})
  return result


def final_return(returns: np.ndarray) -> np.ndarray:
  """Per seed, `returns[chunks, seeds]` -> `[seeds]`: the mean episode
  return over the last 10% of logging chunks (at least one); a seed for
  which no episode ended there (e.g. a 1000-step Brax episode when the run
  is 1200 steps long) takes its latest chunk in which one did; NaN if none
  ever did."""
  returns = np.asarray(returns, np.float64)
  tail = max(1, len(returns) // 10)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)  # all-NaN tails
    final = np.nanmean(returns[-tail:], axis=0)
  for seed in np.flatnonzero(np.isnan(final)):
    ended = np.flatnonzero(np.isfinite(returns[:, seed]))
    if len(ended):
      final[seed] = returns[ended[-1], seed]
  return final
