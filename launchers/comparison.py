"""Optimizers compared on envs and seeds: runs, table rows, markdown, plots.

`evaluate(cfg, workdir)` is launchers/evaluate.py's job (fields in
configs/evaluate.py); `compare` and `markdown_table` also serve quickstart.py.
An optimizer spec is NAME:LEARNING_RATE (see `with_optimizer`). Each env is
trained with its own family's config (`env_config`); a uniform-random
policy's row (`random_row`) is the floor each table shows.
"""

import copy
import os
from typing import List, Optional, Sequence, Tuple

import jax
import numpy as np

from agents import brax_envs
from agents import environments
from configs import a2c_catch
from configs import a2c_gridworld
from configs import ppo_brax
from launchers import common
from launchers import training


# The label of the uniform-random policy's rows, and its steps per seed.
RANDOM_LABEL = 'random policy'
RANDOM_STEPS = 2000


def env_config(env_name: str, paper_scale: bool = False):
  """The training config of an env's family."""
  if env_name in brax_envs.BRAX_ENVS:
    return ppo_brax.get_config(env_name + ('' if paper_scale else ',cpu'))
  if env_name == 'catch':
    return a2c_catch.get_config()
  if env_name in environments.gymnax_names():
    cfg = a2c_catch.get_config()  # 16 envs x 20 steps x 1000 updates
    cfg.env_name = env_name
    return cfg
  return a2c_gridworld.get_config(env_name)


def with_optimizer(base, spec: str, lr_schedule: str = 'constant',
                   lr_end: float = 0.) -> Tuple[str, object]:
  """(label, config) for an optimizer spec 'NAME:LR' or 'path.npz:LR'.

  LR 'default' keeps the env config's own learning rate (A2C 1e-3, PPO
  3e-4), so one spec serves a suite of A2C and PPO tasks.
  """
  name, sep, lr = spec.rpartition(':')
  if not sep or not name:
    raise ValueError(f'optimizers: {spec!r} is not NAME:LEARNING_RATE')
  if lr == 'default':
    lr = float(base.optimizer.learning_rate)
  try:
    lr = float(lr)
  except ValueError as e:
    raise ValueError(f'optimizers: bad learning rate in {spec!r} (a number '
                     "or 'default')") from e
  cfg = copy.deepcopy(base)
  cfg.optimizer.learning_rate = lr
  cfg.optimizer.lr_schedule = lr_schedule
  cfg.optimizer.lr_end = lr_end
  if name.endswith('.npz'):
    cfg.optimizer.name = 'learned'
    cfg.optimizer.meta_params_path = name
    label = os.path.splitext(os.path.basename(name))[0]
  else:
    cfg.optimizer.name = name
    label = name
  training.validate(cfg)
  return label, cfg


def return_stats(final) -> dict:
  """Mean, standard error, std, seed count and per-seed figures of returns."""
  final = np.asarray(final, np.float64)
  return {'final_return_mean': float(np.mean(final)),
          'final_return_sem': float(np.std(final, ddof=1) /
                                    np.sqrt(len(final)))
                              if len(final) > 1 else float('nan'),
          'final_return_std': float(np.std(final)),
          'seeds': len(final),
          'per_seed': ' '.join(f'{x:.3f}' for x in final)}


def summarize(results: dict) -> List[dict]:
  """Table rows: final return mean, standard error, std, ratio to Adam."""
  reference = results.get('adam')
  rows = []
  for label, r in results.items():
    row = {'env': r['env'], 'optimizer': label,
           **return_stats(r['final_return']),
           'env_steps_per_agent': int(r['env_steps'][-1]),
           'env_steps_per_second': float(r['steps_per_second'])}
    if reference is not None:
      row['ratio_to_adam'] = row['final_return_mean'] / float(
          np.mean(reference['final_return']))
    rows.append(row)
  return rows


def compare(runs: Sequence[Tuple[str, object]], workdir: str,
            plot_path: str, title: str,
            levels: Optional[dict] = None) -> Tuple[dict, List[dict]]:
  """Trains every (label, config); plots their curves; returns rows.

  `levels` ({label: return}) are drawn as flat lines (e.g. a random policy).
  """
  results = {}
  for label, cfg in runs:
    print(f'-- {cfg.env_name}: {label}', flush=True)
    results[label] = training.train(
        cfg, os.path.join(workdir, cfg.env_name,
                          label.replace(' ', '_').replace('(', '')
                          .replace(')', '')), label=label)
  x = next(iter(results.values()))['env_steps']
  curves = {k: np.nanmean(r['returns'], axis=1) for k, r in results.items()}
  curves.update({k: np.full(len(x), v) for k, v in (levels or {}).items()})
  common.plot_curves(
      plot_path, curves, x,
      'env steps per agent', 'mean episode return', title,
      spread={k: np.nanstd(r['returns'], axis=1) for k, r in results.items()})
  return results, summarize(results)


def parse_updates_per_env(spec: str, envs: Sequence[str]) -> dict:
  """'ENV=N,...' -> {env: N}, each env one of `envs` and N >= 1."""
  out = {}
  for item in (x for x in spec.split(',') if x):
    env, sep, n = item.partition('=')
    if not sep or env not in envs:
      raise ValueError(f'updates_per_env: {item!r} is not ENV=N with ENV one '
                       f'of the evaluated envs {list(envs)}')
    try:
      out[env] = common.check_positive_int(int(n), 'updates_per_env')
    except ValueError as e:
      raise ValueError(f'updates_per_env: {item!r} needs a positive integer '
                       'number of updates') from e
  return out


def random_row(base, num_seeds: int, num_steps: int = RANDOM_STEPS,
               num_envs: int = 16) -> dict:
  """The table row of a uniform-random policy on `base.env_name`.

  Each seed runs `num_envs` of the config's environments (its episode length
  included) for `num_steps` steps; a seed's figure is the mean return of the
  episodes that ended.
  """
  env = common.make_env(base)
  fn = jax.jit(jax.vmap(
      lambda k: common.random_policy_return(env, k, num_envs, num_steps)))
  means, counts = fn(jax.random.split(jax.random.PRNGKey(12345), num_seeds))
  return {'env': base.env_name, 'optimizer': RANDOM_LABEL,
          **return_stats(means),
          'env_steps_per_agent': num_envs * num_steps,
          'episodes': int(np.sum(counts))}


def markdown_table(rows: Sequence[dict]) -> str:
  lines = ['| env | optimizer | final return (mean ± s.e.) | std | ratio to '
           'Adam | seeds | env steps |', '|---|---|---|---|---|---|---|']
  for r in rows:
    ratio = f'{r["ratio_to_adam"]:.3f}' if 'ratio_to_adam' in r else ''
    lines.append(
        f'| {r["env"]} | {r["optimizer"]} | {r["final_return_mean"]:.3f} ± '
        f'{r["final_return_sem"]:.3f} | {r["final_return_std"]:.3f} | '
        f'{ratio} | {r["seeds"]} | {r["env_steps_per_agent"]:,} |')
  return '\n'.join(lines) + '\n'


def evaluate(cfg, workdir: str) -> List[dict]:
  """Every optimizer on every env; writes results.csv/.md and PNGs."""
  envs = [e for e in cfg.envs.split(',') if e]
  specs = [s for s in cfg.optimizers.split(',') if s]
  if not envs:
    raise ValueError('envs: give at least one environment')
  if not specs:
    raise ValueError('optimizers: give at least one NAME:LEARNING_RATE')
  updates = parse_updates_per_env(cfg.get('updates_per_env', ''), envs)
  plans = []
  for env in envs:  # build and validate everything before compiling
    base = env_config(env, cfg.paper_scale)
    base.env_name = env
    base.num_seeds = cfg.num_seeds
    if cfg.num_updates:
      base.num_updates = cfg.num_updates
    base.num_updates = updates.get(env, base.num_updates)
    if cfg.get('reset_mode', '') and 'reset_mode' in base:
      base.reset_mode = cfg.reset_mode
    schedule = (cfg.get('lr_schedule', 'constant'), cfg.get('lr_end', 0.))
    plans.append((base, [with_optimizer(base, s, *schedule) for s in specs]))
  rows = []
  os.makedirs(workdir, exist_ok=True)
  for base, runs in plans:
    env = base.env_name
    floor = ([random_row(base, cfg.num_seeds)]
             if cfg.get('random_policy', True) else [])
    _, env_rows = compare(
        runs, workdir, os.path.join(workdir, f'{env}.png'),
        f'{env}: mean ± std over {cfg.num_seeds} seeds',
        levels={r['optimizer']: r['final_return_mean'] for r in floor})
    rows += env_rows + floor
    common.write_csv(os.path.join(workdir, 'results.csv'), rows)
    with open(os.path.join(workdir, 'results.md'), 'w') as f:
      f.write(markdown_table(rows))
  print(markdown_table(rows), flush=True)
  print(f'results: {workdir}/results.md, results.csv, <env>.png', flush=True)
  return rows
