"""Optimizers compared on envs and seeds: runs, table rows, markdown, plots.

`evaluate(cfg, workdir)` is launchers/evaluate.py's job (fields in
configs/evaluate.py); `compare` and `markdown_table` also serve quickstart.py.
An optimizer spec is NAME:LEARNING_RATE (see `with_optimizer`). Each env is
trained with its own family's config (`env_config`); a uniform-random
policy's row (`random_row`) is the floor each table shows.
"""

import copy
import csv
import json
import os
from typing import List, Optional, Sequence, Tuple

import jax
import numpy as np

from agents import brax_envs
from agents import environments
from configs import a2c_catch
from configs import a2c_gridworld
from configs import ppo_brax
from launchers.lib import common
from launchers.lib import multihost
from launchers.lib import training


# The label of the uniform-random policy's rows, and its steps per seed.
RANDOM_LABEL = 'random policy'
RANDOM_STEPS = 2000
# What `compare` writes in a run's folder once the run has finished: its
# config (a later evaluation reuses the run when the config is the same)
# and its label.
RUN_CONFIG = 'run_config.json'
RUN_LABEL = 'label.txt'
# An env is scored (normalized) only where the best Adam run's return beats
# the random policy's by more than this fraction of the larger of the two.
MIN_ADAM_GAIN = 0.05


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

  LR is a number, 'default' (the env config's own learning rate: A2C 1e-3,
  PPO 3e-4, so one spec serves a suite of A2C and PPO tasks) or 'xF', F
  times that default (a learning-rate sweep over such a suite: 'adam:x0.3').
  The label is NAME, or 'NAME xF' for F != 1.
  """
  name, sep, lr = spec.rpartition(':')
  if not sep or not name:
    raise ValueError(f'optimizers: {spec!r} is not NAME:LEARNING_RATE')
  factor = 1.
  if lr.startswith('x'):
    try:
      factor = float(lr[1:])
    except ValueError as e:
      raise ValueError(f'optimizers: bad multiplier in {spec!r} (xF, F a '
                       'number > 0)') from e
    if not factor > 0:
      raise ValueError(f'optimizers: bad multiplier in {spec!r} (xF, F a '
                       'number > 0)')
    lr = 'default'
  if lr == 'default':
    lr = float(base.optimizer.learning_rate) * factor
  try:
    lr = float(lr)
  except ValueError as e:
    raise ValueError(f'optimizers: bad learning rate in {spec!r} (a number, '
                     "'default' or xF)") from e
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
  if factor != 1.:
    label = f'{label} x{factor:g}'
  training.validate(cfg)
  return label, cfg


def run_dir(workdir: str, env: str, label: str) -> str:
  """Where `compare` writes (and finds) one run of `label` on `env`."""
  return os.path.join(workdir, env, label.replace(' ', '_').replace(
      '(', '').replace(')', ''))


def finished_run(cfg, folder: str) -> Optional[dict]:
  """The result of a run already finished in `folder` with config `cfg`.

  None when `folder` holds no finished run. A finished run of another
  config is refused (nothing is overwritten): the error names the fields.
  The config names a shipped optimizer or a meta-params file, not its
  contents: after replacing such a file, evaluate into a fresh workdir.
  """
  saved_path = os.path.join(folder, RUN_CONFIG)
  if not os.path.exists(saved_path):
    return None
  with open(saved_path) as f:
    saved = json.load(f)
  now = json.loads(cfg.to_json())
  if saved != now:
    diff = [k for k in sorted(set(saved) | set(now))
            if saved.get(k) != now.get(k)]
    raise ValueError(
        f'{folder}: holds a finished run of another configuration (fields '
        f'{diff} differ); use another --workdir or remove that folder')
  with open(os.path.join(folder, 'summary.json')) as f:
    summary = json.load(f)
  with open(os.path.join(folder, 'returns.csv')) as f:
    table = list(csv.DictReader(f))
  seeds = len(summary['final_return_per_seed'])
  returns = np.array([[float(r[f'return_seed{i}'] or 'nan')
                       for i in range(seeds)] for r in table])
  # The final figure is recomputed from the curve, so a reused run is
  # scored as a fresh one would be.
  result = {'label': saved_label(folder), 'env': summary['env'],
            'env_steps': np.array([int(r['env_steps']) for r in table]),
            'returns': returns, 'final_return': None,
            'steps_per_second': summary['env_steps_per_second_after_compile'],
            'compile_seconds': summary['compile_seconds'],
            'nonfinite': summary['nonfinite_params'], 'reused': True}
  result['final_return'] = training.final_return(result['returns'])
  return result


def saved_label(folder: str) -> str:
  with open(os.path.join(folder, RUN_LABEL)) as f:
    return f.read().strip()


def return_stats(final) -> dict:
  """Mean, standard error, std, seed count and per-seed figures of returns.

  A seed whose last logging chunks ended no episode (e.g. a pendulum kept up
  for the whole window) has no final figure (NaN): it is left out of the
  mean, std and standard error, and `seeds` counts the seeds that have one.
  """
  final = np.asarray(final, np.float64)
  have = final[np.isfinite(final)]
  return {'final_return_mean': float(np.mean(have)) if len(have)
                               else float('nan'),
          'final_return_sem': float(np.std(have, ddof=1) /
                                    np.sqrt(len(have)))
                              if len(have) > 1 else float('nan'),
          'final_return_std': float(np.std(have)) if len(have)
                              else float('nan'),
          'seeds': len(have),
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
          np.nanmean(reference['final_return']))
    rows.append(row)
  return rows


def compare(runs: Sequence[Tuple[str, object]], workdir: str,
            plot_path: str, title: str,
            levels: Optional[dict] = None) -> Tuple[dict, List[dict]]:
  """Trains every (label, config); plots their curves; returns rows.

  A run finished earlier in the same folder with the same config is reused
  (`finished_run`), so an evaluation that stopped, or one given more
  optimizers, redoes only what is missing.

  `levels` ({label: return}) are drawn as flat lines (e.g. a random policy).
  """
  results = {}
  for label, cfg in runs:
    folder = run_dir(workdir, cfg.env_name, label)
    done = finished_run(cfg, folder) if workdir else None
    if done is not None:
      print(f'-- {cfg.env_name}: {label} (finished earlier: {folder})',
            flush=True)
      results[label] = done
      continue
    print(f'-- {cfg.env_name}: {label}', flush=True)
    results[label] = training.train(cfg, folder, label=label)
    if workdir and multihost.is_primary():
      with open(os.path.join(folder, RUN_LABEL), 'w') as f:
        f.write(label + '\n')
      with open(os.path.join(folder, RUN_CONFIG), 'w') as f:
        f.write(cfg.to_json(indent=1))
  x = next(iter(results.values()))['env_steps']
  curves = {k: np.nanmean(r['returns'], axis=1) for k, r in results.items()}
  curves.update({k: np.full(len(x), v) for k, v in (levels or {}).items()})
  common.plot_curves(
      plot_path, curves, x,
      'env steps per agent', 'mean episode return', title,
      spread={k: np.nanstd(r['returns'], axis=1) for k, r in results.items()})
  return results, summarize(results)


def parse_per_env(field: str, spec: str, envs: Sequence[str]) -> dict:
  """'ENV=N,...' -> {env: N}, each env one of `envs` and N >= 1.

  `field` (updates_per_env, seeds_per_env) names the config field in errors.
  """
  out = {}
  for item in (x for x in spec.split(',') if x):
    env, sep, n = item.partition('=')
    if not sep or env not in envs:
      raise ValueError(f'{field}: {item!r} is not ENV=N with ENV one '
                       f'of the evaluated envs {list(envs)}')
    try:
      out[env] = common.check_positive_int(int(n), field)
    except ValueError as e:
      raise ValueError(f'{field}: {item!r} needs a positive integer') from e
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
  updates = parse_per_env('updates_per_env', cfg.get('updates_per_env', ''),
                          envs)
  seeds = parse_per_env('seeds_per_env', cfg.get('seeds_per_env', ''), envs)
  plans = []
  for env in envs:  # build and validate everything before compiling
    base = env_config(env, cfg.paper_scale)
    base.env_name = env
    base.num_seeds = seeds.get(env, cfg.num_seeds)
    if cfg.num_updates:
      base.num_updates = cfg.num_updates
    base.num_updates = updates.get(env, base.num_updates)
    if cfg.get('reset_mode', '') and 'reset_mode' in base:
      base.reset_mode = cfg.reset_mode
    schedule = (cfg.get('lr_schedule', 'constant'), cfg.get('lr_end', 0.))
    runs = [with_optimizer(base, s, *schedule) for s in specs]
    labels = [label for label, _ in runs]
    for label in labels:
      if labels.count(label) > 1:
        raise ValueError(
            f'optimizers: two specs give the label {label!r} in {specs}; '
            'give each (name, learning rate) once, or sweep rates with xF')
    for label, run in runs:  # a finished run of another config is refused
      if workdir:
        finished_run(run, run_dir(workdir, env, label))
    plans.append((base, runs))
  rows = []
  os.makedirs(workdir, exist_ok=True)
  for base, runs in plans:
    env = base.env_name
    floor = ([random_row(base, base.num_seeds)]
             if cfg.get('random_policy', True) else [])
    _, env_rows = compare(
        runs, workdir, os.path.join(workdir, f'{env}.png'),
        f'{env}: mean ± std over {base.num_seeds} seeds',
        levels={r['optimizer']: r['final_return_mean'] for r in floor})
    rows += env_rows + floor
    common.write_csv(os.path.join(workdir, 'results.csv'), rows)
    with open(os.path.join(workdir, 'results.md'), 'w') as f:
      f.write(markdown_table(rows))
  print(markdown_table(rows), flush=True)
  print(f'results: {workdir}/results.md, results.csv, <env>.png', flush=True)
  summary = normalized_summary(rows)
  if summary:
    common.write_csv(os.path.join(workdir, 'summary.csv'), summary)
    with open(os.path.join(workdir, 'summary.md'), 'w') as f:
      f.write(summary_table(summary, envs))
    plot_normalized(os.path.join(workdir, 'summary.png'), summary, envs)
    print(summary_table(summary, envs), flush=True)
    print(f'summary: {workdir}/summary.md, summary.csv, summary.png',
          flush=True)
  return rows


def normalized(value: float, random: float, adam: float) -> float:
  """A return on the scale random policy = 0, Adam = 1."""
  return (value - random) / (adam - random)


def is_adam(label: str) -> bool:
  """'adam' or a rate multiple of it ('adam x0.3'): the reference runs."""
  return label == 'adam' or label.startswith('adam x')


def normalized_summary(rows: Sequence[dict]) -> List[dict]:
  """Per optimizer: its normalized final return on each env (random
  policy = 0, Adam = 1), their mean and the worst env.

  Adam is the best of the env's Adam runs: 'adam' and its rate multiples
  ('adam x0.3', 'adam x3'), i.e. Adam at its tuned rate over that sweep.
  Each row's 'adam_rates' names the Adam run taken per env. Only envs with
  an Adam and a random-policy row count, and only where Adam beats the
  random policy by more than `MIN_ADAM_GAIN` of the larger of the two
  returns (else the scale is noise: `summary_table` lists such envs as not
  scored); [] if none.
  """
  by_env, sems = {}, {}
  for r in rows:
    by_env.setdefault(r['env'], {})[r['optimizer']] = r['final_return_mean']
    if 'final_return_sem' in r:
      sems[r['env'], r['optimizer']] = float(r['final_return_sem'])
  reference = {}
  for env, opts in by_env.items():
    adams = {k: v for k, v in opts.items() if is_adam(k)}
    if adams and RANDOM_LABEL in opts:
      best = max(adams, key=adams.get)
      gain = opts[best] - opts[RANDOM_LABEL]
      if gain > MIN_ADAM_GAIN * max(abs(opts[best]),
                                    abs(opts[RANDOM_LABEL])):
        reference[env] = best
  if not reference:
    return []
  names = list(dict.fromkeys(
      r['optimizer'] for r in rows if r['optimizer'] != RANDOM_LABEL))
  out = []
  for name in names:
    per_env = {env: normalized(by_env[env][name], by_env[env][RANDOM_LABEL],
                               by_env[env][ref])
               for env, ref in reference.items() if name in by_env[env]}
    if not per_env:
      continue
    worst = min(per_env, key=per_env.get)
    # A task's standard error on the same scale (the seeds' spread of this
    # optimizer only: the reference's own is not propagated).
    errors = {f'{env}_se': sems[env, name] / (
        by_env[env][reference[env]] - by_env[env][RANDOM_LABEL])
              for env in per_env if (env, name) in sems}
    out.append({'optimizer': name,
                'mean': float(np.mean(list(per_env.values()))),
                'worst': per_env[worst], 'worst_env': worst,
                'envs': len(per_env),
                'adam_rates': ' '.join(f'{e}={reference[e]}'
                                       for e in per_env), **per_env,
                **errors})
  return out


def summary_table(summary: Sequence[dict], envs: Sequence[str]) -> str:
  """Markdown: one row per optimizer, its mean, worst and each env."""
  unscored = [e for e in envs if not any(e in r for r in summary)]
  envs = [e for e in envs if e not in unscored]
  lines = ['Normalized final return: (return - random policy) / '
           '(Adam - random policy), Adam the best of its runs on each env.',
           '']
  if unscored:
    lines += [f'Not scored (Adam no better than the random policy, or a row '
              f'missing): {", ".join(unscored)}.', '']
  lines += ['| optimizer | mean | worst (env) | ' + ' | '.join(envs) + ' |',
            '|---|---|---|' + '---|' * len(envs)]
  if any(f'{e}_se' in r for r in summary for e in envs):
    lines[1:1] = ['Each task: normalized mean ± its standard error over '
                  'seeds.']
  for r in summary:
    cells = [_with_error(r, e) for e in envs]
    lines.append(f'| {r["optimizer"]} | {r["mean"]:.3f} | {r["worst"]:.2f} '
                 f'({r["worst_env"]}) | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def _with_error(row: dict, env: str) -> str:
  """A summary cell: '0.73', or '0.73 ± 0.05' with the standard error."""
  if env not in row:
    return ''
  se = row.get(f'{env}_se', float('nan'))
  return f'{row[env]:.2f}' + (f' ± {se:.2f}' if np.isfinite(se) else '')


def plot_normalized(path: str, summary: Sequence[dict],
                    envs: Sequence[str]) -> str:
  """One PNG: grouped bars of each optimizer's normalized return per env
  (with its standard error where known), and its mean, with Adam's level
  (1) and the random policy's (0)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  envs = [e for e in envs if any(e in r for r in summary)] + ['mean']
  fig, ax = plt.subplots(figsize=(max(6., 1.1 * len(envs) + 2), 5.5))
  width = 0.8 / len(summary)
  colors = common.distinct_colors(len(summary))
  for i, r in enumerate(summary):
    y = [r.get(e, np.nan) for e in envs]
    se = [r.get(f'{e}_se', np.nan) for e in envs]
    ax.bar(np.arange(len(envs)) + (i - (len(summary) - 1) / 2) * width, y,
           width, label=r['optimizer'], color=colors[i],
           yerr=None if np.all(np.isnan(se)) else se,
           error_kw={'elinewidth': 0.8, 'capsize': 1.5, 'ecolor': '0.25'})
  ax.axhline(1., color='k', lw=0.8, ls='--')
  ax.axhline(0., color='k', lw=0.8)
  ax.set_xticks(np.arange(len(envs)))
  ax.set_xticklabels(envs, rotation=30, ha='right')
  ax.set_ylabel('normalized final return (random 0, Adam 1)')
  tops = [r[e] + np.nan_to_num(r.get(f'{e}_se', 0.))
          for r in summary for e in envs if e in r]
  ax.set_ylim(min(-0.2, np.nanmin([r['worst'] for r in summary]) - 0.05),
              max(1.3, np.nanmax(tops) + 0.05))
  ax.grid(alpha=0.3, axis='y')
  ax.legend(fontsize=8, ncol=4, loc='upper center',
            bbox_to_anchor=(0.5, -0.3))
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
