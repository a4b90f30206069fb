"""Ablation studies: meta-train arms x envs x seeds, test each optimizer.

`run_studies(cfg, workdir)` is launchers/studies/findings.py's job (fields in
launchers/studies/configs/findings.py). A *run* is one (env, arm, meta-training seed): it is
meta-trained by `meta_training.meta_train` in its own resumable folder, then
its frozen optimizer trains fresh A2C agents on the same env. Finished runs
and evaluations are read back from their folders, so the job resumes where it
stopped. Writes into `workdir`: runs.csv (one row per run), summary.csv and
summary.md (one row per study, env and arm), meta_<study>_<env>.png
(meta-training curves, mean ± std over seeds) and test_<study>.png (each
run's test return, relative to Adam).
"""

import copy
import json
import os
import re
import time
from typing import Dict, List, NamedTuple, Optional

import numpy as np

from configs import meta_catch
from configs import meta_gridworlds
from launchers.lib import common
from launchers.lib import comparison
from launchers.lib import meta_training
from launchers.lib import training


class Run(NamedTuple):
  env: str
  arm: str
  seed: int
  meta_cfg: object  # ml_collections.ConfigDict
  folder: str


def _names(spec: str) -> List[str]:
  return [x for x in str(spec).split(',') if x]


def meta_config(env: str, cfg):
  """The meta-training config of `env` at the study's budget."""
  if env == 'catch':
    base = meta_catch.get_config()
  elif env in meta_gridworlds.GRIDWORLD_SETTINGS:
    base = meta_gridworlds.get_config(env)
  else:
    raise ValueError(f'studies: env {env!r} has no meta-training config; '
                     f'allowed: catch, {", ".join(meta_gridworlds.GRIDWORLD_SETTINGS)}')
  base.tasks.num_agents = cfg.num_agents
  base.num_meta_steps = cfg.num_meta_steps
  base.log_every = min(10, cfg.num_meta_steps)
  base.num_meta_steps = -(-cfg.num_meta_steps // base.log_every) * base.log_every
  base.save_every = base.log_every * max(1, 40 // base.log_every)
  return base


def plan(cfg) -> Dict[str, dict]:
  """{study: {'envs', 'arms', 'runs'}}; checks every name and config."""
  common.check_positive_int(cfg.seeds, 'seeds')
  common.check_positive_int(cfg.eval_seeds, 'eval_seeds')
  common.check_positive_int(cfg.eval_updates, 'eval_updates')
  studies = {}
  for study in _names(cfg.run):
    if study not in cfg.studies:
      raise ValueError(f'run: unknown study {study!r}; allowed: '
                       f'{sorted(cfg.studies)}')
    envs, arms = _names(cfg.studies[study].envs), _names(
        cfg.studies[study].arms)
    runs = []
    for env in envs:
      for arm in arms:
        if arm not in cfg.arms:
          raise ValueError(f'studies.{study}.arms: unknown arm {arm!r}; '
                           f'allowed: {sorted(cfg.arms)}')
        for seed in range(cfg.seeds):
          m = meta_config(env, cfg)
          m.lock()  # an override may change fields, never add one
          try:
            m.update(copy.deepcopy(cfg.arms[arm]).to_dict())
          except (KeyError, AttributeError, TypeError) as e:
            key = re.search(r'Key "([^"]+)"', str(e))
            near = re.search(r'Did you mean "([^"]+)"', str(e))
            raise ValueError(
                f'arms.{arm}: not a meta-training field: '
                f'{key.group(1) if key else e}'
                + (f' (did you mean {near.group(1)!r}?)' if near else '')
                ) from e
          m.unlock()
          m.seed = seed
          runs.append(Run(env, arm, seed, m,
                          os.path.join(cfg.runs_dir, env, arm,
                                       f'seed{seed}')))
    studies[study] = {'envs': envs, 'arms': arms, 'runs': runs}
  return studies


def eval_config(env: str, cfg, name: str, lr: float, path: str = ''):
  ev = comparison.env_config(env)
  ev.env_name = env
  ev.num_seeds = cfg.eval_seeds
  ev.num_updates = cfg.eval_updates
  ev.log_every = max(1, min(ev.log_every, cfg.eval_updates // 10))
  ev.optimizer.name = name
  ev.optimizer.learning_rate = lr
  ev.optimizer.meta_params_path = path
  return ev


def _finished_meta(run: Run) -> Optional[dict]:
  path = os.path.join(run.folder, 'meta_summary.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    summary = json.load(f)
  if summary['stopped_early'] or summary['meta_step'] < (
      run.meta_cfg.num_meta_steps):
    return None
  return summary


def _evaluate(ev, folder: str) -> np.ndarray:
  """Final test return per eval seed (read back if already done)."""
  path = os.path.join(folder, 'summary.json')
  if not os.path.exists(path):
    training.train(ev, folder, verbose=False)
  with open(path) as f:
    return np.asarray(json.load(f)['final_return_per_seed'], np.float64)


def _meta_curve(run: Run) -> np.ndarray:
  with open(os.path.join(run.folder, 'metrics.csv')) as f:
    header = f.readline().strip().split(',')
    col = header.index('agent_return')
    return np.array([float(line.split(',')[col]) for line in f])


def run_studies(cfg, workdir: str, stop=None) -> List[dict]:
  """Runs every study of `cfg.run`; returns summary rows."""
  studies = plan(cfg)
  runs = {r.folder: r for s in studies.values() for r in s['runs']}
  envs = sorted({r.env for r in runs.values()})
  # Validate everything before the first compile.
  for r in runs.values():
    meta_training.validate(r.meta_cfg)
  lrs = {e: float(meta_config(e, cfg).tasks.learning_rates[0]) for e in envs}
  for e in envs:
    training.validate(eval_config(e, cfg, 'adam', lrs[e]))
  os.makedirs(workdir, exist_ok=True)
  stop = stop or meta_training.StopFlag()

  # 1. Meta-training, one run at a time (each resumable).
  todo = [r for r in runs.values() if _finished_meta(r) is None]
  print(f'{len(runs)} meta-training runs, {len(todo)} to do', flush=True)
  t0 = time.time()
  for i, r in enumerate(todo):
    eta = ((time.time() - t0) / i * (len(todo) - i)) if i else float('nan')
    print(f'== run {i + 1}/{len(todo)}: {r.env} {r.arm} seed {r.seed} '
          f'(elapsed {time.time() - t0:.0f}s, ETA '
          f'{"?" if eta != eta else f"{eta:.0f}s"})', flush=True)
    meta_training.meta_train(r.meta_cfg, r.folder, stop=stop)
    if stop.requested:
      print('stopped; rerun the same command to resume', flush=True)
      return []

  # 2. Tests on fresh agents: every run's optimizer, Adam, untrained cell.
  reference = {}
  for e in envs:
    ev_dir = os.path.join(cfg.runs_dir, e, 'eval')
    print(f'== testing on {e}: baselines', flush=True)
    reference[e] = {
        'adam': _evaluate(eval_config(e, cfg, 'adam', lrs[e]),
                          os.path.join(ev_dir, 'adam')),
        'untrained optim4rl': _evaluate(
            eval_config(e, cfg, 'optim4rl', lrs[e]),
            os.path.join(ev_dir, 'untrained_optim4rl'))}
    reference[e]['random policy'] = np.array([float(x) for x in
        comparison.random_row(eval_config(e, cfg, 'adam', lrs[e]),
                              cfg.eval_seeds)['per_seed'].split()])
  rows = []
  for r in runs.values():
    summary = _finished_meta(r)
    print(f'== testing {r.env} {r.arm} seed {r.seed}', flush=True)
    test = _evaluate(eval_config(r.env, cfg, 'learned', lrs[r.env],
                                 summary['meta_params_path']),
                     os.path.join(r.folder, 'test'))
    curve = _meta_curve(r)
    rows.append({
        'env': r.env, 'arm': r.arm, 'seed': r.seed,
        'meta_steps': summary['meta_step'],
        'meta_seconds': round(summary['elapsed_seconds'], 1),
        'skipped_meta_updates': summary['skipped_meta_updates'],
        'meta_agent_return_last10pct': float(np.nanmean(
            curve[-max(1, len(curve) // 10):])),
        'test_return': float(np.mean(test)),
        'test_normalized': _normalize(float(np.mean(test)),
                                      reference[r.env]),
        'test_per_seed': ' '.join(f'{x:.3f}' for x in test)})
  common.write_csv(os.path.join(workdir, 'runs.csv'), rows)
  summary_rows = _summarize(studies, rows, reference, cfg)
  common.write_csv(os.path.join(workdir, 'summary.csv'), summary_rows)
  with open(os.path.join(workdir, 'summary.md'), 'w') as f:
    f.write(markdown(summary_rows, cfg))
  _plots(studies, rows, reference, workdir)
  return summary_rows


def _normalize(x, reference: dict):
  """Return on the scale random policy = 0, Adam = 1."""
  floor = float(np.mean(reference['random policy']))
  return (x - floor) / (float(np.mean(reference['adam'])) - floor)


def _summarize(studies, rows, reference, cfg) -> List[dict]:
  out = []
  for study, s in studies.items():
    for env in s['envs']:
      ref = reference[env]
      for label, per_seed in ref.items():
        out.append({'study': study, 'env': env, 'optimizer': label,
                    'seeds': len(per_seed), 'seed_kind': 'eval',
                    'test_return_mean': float(np.mean(per_seed)),
                    'test_return_std': float(np.std(per_seed)),
                    'normalized': _normalize(float(np.mean(per_seed)), ref)
                                  + 0.,  # no '-0.000'
                    'per_seed': ' '.join(f'{x:.3f}' for x in per_seed)})
      for arm in s['arms']:
        mine = [r for r in rows if r['env'] == env and r['arm'] == arm]
        test = np.array([r['test_return'] for r in mine])
        out.append({'study': study, 'env': env, 'optimizer': arm,
                    'seeds': len(mine), 'seed_kind': 'meta',
                    'test_return_mean': float(np.mean(test)),
                    'test_return_std': float(np.std(test)),
                    'normalized': _normalize(float(np.mean(test)), ref),
                    'normalized_std': float(np.std(
                        [r['test_normalized'] for r in mine])),
                    'per_seed': ' '.join(f'{x:.3f}' for x in test),
                    'meta_seconds_mean': float(np.mean(
                        [r['meta_seconds'] for r in mine]))})
  del cfg
  return out


def markdown(summary_rows, cfg) -> str:
  lines = [
      f'Budget per run: {cfg.num_agents} agents x {cfg.num_meta_steps} '
      f'meta-iterations; {cfg.seeds} meta-training seeds per arm, each tested '
      f'on {cfg.eval_seeds} fresh agents x {cfg.eval_updates} A2C updates. '
      'Baseline rows (Adam, untrained cell) are over the eval seeds; arm rows '
      'over meta-training seeds (each the mean of its eval seeds). Test '
      'return = mean episode return over the last 10% of training; '
      'normalized = (return - random policy) / (Adam - random policy).', '']
  study = None
  for r in summary_rows:
    if r['study'] != study:
      study = r['study']
      lines += ['', f'### {study}', '',
                '| env | optimizer | test return (mean ± std) | normalized '
                '(random 0, Adam 1) | seeds | per seed |',
                '|---|---|---|---|---|---|']
    lines.append(
        f'| {r["env"]} | {r["optimizer"]} | {r["test_return_mean"]:.3f} ± '
        f'{r["test_return_std"]:.3f} | {r["normalized"]:.3f}'
        + (f' ± {r["normalized_std"]:.3f}' if 'normalized_std' in r else '')
        + ' | '
        f'{r["seeds"]} ({r["seed_kind"]}) | {r["per_seed"]} |')
  return '\n'.join(lines) + '\n'


def _plots(studies, rows, reference, workdir) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  for study, s in studies.items():
    for env in s['envs']:
      curves, spread, x = {}, {}, None
      for arm in s['arms']:
        ys = [meta_training._smooth(_meta_curve(r))  # pylint: disable=protected-access
              for r in s['runs'] if r.env == env and r.arm == arm]
        n = min(len(y) for y in ys)
        ys = np.stack([y[:n] for y in ys])
        curves[arm], spread[arm] = ys.mean(0), ys.std(0)
        x = np.arange(1, n + 1)
      common.plot_curves(
          os.path.join(workdir, f'meta_{study}_{env}.png'), curves, x,
          'meta-iteration', 'mean agent return (smoothed)',
          f'meta-training on {env} ({study}), ± std over seeds',
          spread=spread)
    fig, axes = plt.subplots(1, len(s['envs']),
                             figsize=(4.5 * len(s['envs']) + 1, 4),
                             squeeze=False)
    for ax, env in zip(axes[0], s['envs']):
      labels = list(reference[env]) + s['arms']
      for i, label in enumerate(labels):
        if label in reference[env]:
          ys = np.array([_normalize(x, reference[env])
                         for x in reference[env][label]])
        else:
          ys = np.array([r['test_normalized'] for r in rows
                         if r['env'] == env and r['arm'] == label])
        ax.scatter(np.full(len(ys), i), ys, alpha=0.7)
        ax.plot([i - 0.3, i + 0.3], [ys.mean()] * 2, color='k')
      ax.axhline(1.0, color='grey', lw=0.8, ls='--')
      ax.set_xticks(range(len(labels)))
      ax.set_xticklabels(labels, rotation=30, ha='right')
      ax.set_ylabel('test return (random 0, Adam 1)')
      ax.set_title(env)
      ax.grid(alpha=0.3)
    fig.suptitle(f'{study}: test return per seed (bar = mean)')
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, f'test_{study}.png'), dpi=100)
    plt.close(fig)
