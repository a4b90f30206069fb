"""The standard suite's statistics and outputs, from its units.csv rows.

Rates: `select_rate` (argmax of the tuning seeds' mean final return),
`extension` (one more point past a winning edge) and `neighbours` (the
reduced-budget recheck). Scores: per task, (return - random policy) /
(tuned Adam - random policy), both on the fresh seeds (`normalize`).
Aggregates: IQM with stratified-bootstrap 95% CIs from rliable (`iqm_ci`),
over all complete tasks, and apart over the tasks a learned optimizer was
meta-trained on (`SEEN_TASKS`) and the rest. `summarize` writes the tables,
CSVs and plots; `write_readme_table` puts the headline table in README.md.
"""

import functools
import glob
import os
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from launchers.lib import common

RANDOM = 'random policy'
REFERENCE = 'adam'
# The suite's tasks each shipped learned optimizer was meta-trained on (its
# card, lopt/pretrained/<name>.md); the other tasks are held out from it.
SEEN_TASKS = {
    'optim4rl_from_adam_mix': ('asterix_minatar', 'ant'),
    'optim4rl_from_adam': ('asterix_minatar',),
    'optim4rl_ant_ppo': ('ant',),
    'optim4rl_gridworlds': (),   # the six gridworlds: none in the suite
    'optim4rl_untrained_ema': (),
}
README_BEGIN = '<!-- standard-suite:begin -->'
README_END = '<!-- standard-suite:end -->'
BOOTSTRAP_REPS = 2000
# Tuned Adam must beat the random policy by this fraction of the larger
# of the two for a task to be scored (else the scale is noise).
MIN_ADAM_GAIN = 0.05


class SuiteInfo(NamedTuple):
  """What the summary states beside the figures."""
  tasks: Tuple[str, ...]
  optimizers: Tuple[str, ...]
  grid: Tuple[float, ...]
  standard_steps: Dict[str, int]
  tune_steps: Dict[str, int]
  tune_seeds: int
  report_seeds: int
  tune_seed_starts: Sequence[int]
  report_seed_starts: Sequence[int]
  curves_dir: str
  # Optimizers from meta-params files ({label: .npz path}, `LABEL=PATH` in
  # the suite's `optimizers`); their seen tasks come from the file.
  files: Optional[Dict[str, str]] = None


def seen_tasks(optimizer: str, files: Optional[Dict[str, str]] = None
               ) -> Tuple[str, ...]:
  """The suite tasks `optimizer` was meta-trained on: a shipped one's from
  `SEEN_TASKS` (its card), a file's from the meta-training config saved in
  it (`tasks.env_names`). ValueError for a file that records none: its
  seen and held-out tasks cannot be told apart."""
  if files and optimizer in files:
    tasks = _file_tasks(files[optimizer])
    if tasks is None:
      raise ValueError(f'optimizers: {optimizer}={files[optimizer]} records '
                       'no meta-training tasks (extra.config.tasks); the '
                       'suite cannot tell seen from held-out tasks for it')
    return tasks
  return SEEN_TASKS.get(optimizer, ())


@functools.lru_cache(maxsize=None)
def _file_tasks(path: str) -> Optional[Tuple[str, ...]]:
  """The meta-training tasks a meta-params file records (read once)."""
  import lopt  # pylint: disable=g-import-not-at-top
  config = lopt.serialization.read_metadata(path).get('extra', {}).get(
      'config')
  if not isinstance(config, dict) or 'tasks' not in config:
    return None
  return tuple(config['tasks']['env_names'])


def select_rate(scores: Dict[float, np.ndarray]) -> float:
  """The factor whose tuning seeds' mean final return is highest.

  A factor whose mean is NaN (no seed has a figure) never wins; ties go
  to the factor nearest 1x.
  """
  if not scores:
    raise ValueError('select_rate: no factors to choose from')
  def rank(f):
    m = np.nanmean(scores[f]) if np.any(np.isfinite(scores[f])) else -np.inf
    return (m, -abs(np.log(f)))
  return max(scores, key=rank)


def extension(best: float, factors: Sequence[float], grid: Sequence[float],
              max_extensions: int) -> Optional[float]:
  """The next factor past the edge `best` is on, or None.

  None when `best` is inside the swept factors or that edge already has
  `max_extensions` points past the grid. The step is the grid's own step at
  that edge (0.1,0.3,... -> 0.0333 below, ...,3,10 -> 33.3 above).
  """
  factors = sorted(factors)
  if best == factors[0]:
    past = sum(f < grid[0] for f in factors)
    step = grid[0] / grid[1]
  elif best == factors[-1]:
    past = sum(f > grid[-1] for f in factors)
    step = grid[-1] / grid[-2]
  else:
    return None
  return None if past >= max_extensions else float(f'{best * step:.3g}')


def neighbours(best: float, factors: Sequence[float]) -> List[float]:
  """`best` and the factors on either side of it among `factors`."""
  factors = sorted(factors)
  i = factors.index(best)
  return factors[max(0, i - 1):i + 2]


def walk(best: float, checked: Sequence[float], swept: Sequence[float],
         grid: Sequence[float], max_extensions: int) -> Optional[float]:
  """The next factor to recheck when `best` is on an edge of `checked`
  (the factors rechecked so far), or None when it is inside them.

  Past that edge: the nearest swept factor, else a point past the swept
  ones (`extension`, the grid's step, at most `max_extensions` past the
  grid), so a choice that moves at the standard budget is bracketed there
  as the sweep's was.
  """
  checked = sorted(checked)
  if checked[0] < best < checked[-1]:
    return None
  known = sorted(set(swept) | set(checked))
  i = known.index(best)
  if best == checked[0] and i > 0:
    return known[i - 1]
  if best == checked[-1] and i < len(known) - 1:
    return known[i + 1]
  return extension(best, known, grid, max_extensions)


def normalize(value, random: float, adam: float):
  """Random policy = 0, tuned Adam = 1."""
  return (np.asarray(value, np.float64) - random) / (adam - random)


def iqm_ci(scores: Dict[str, np.ndarray], reps: int = BOOTSTRAP_REPS,
           seed: int = 0) -> Dict[str, Tuple[float, float, float]]:
  """{name: (IQM, CI low, CI high)} of `[runs, tasks]` normalized scores.

  rliable's interquartile mean over all runs and tasks, with a 95%
  percentile CI from a bootstrap stratified by task (runs resampled within
  each task), seeded by `seed` for each name alike: a name's CI does not
  depend on which other names are in `scores`.
  """
  from rliable import library as rly  # pylint: disable=g-import-not-at-top
  from rliable import metrics  # pylint: disable=g-import-not-at-top
  out = {}
  for name, value in scores.items():
    # rliable's StratifiedBootstrap draws its indices from NumPy's global
    # generator (not from its random_state), so that one is seeded here and
    # restored after.
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
      points, intervals = rly.get_interval_estimates(
          {name: np.asarray(value, np.float64)},
          lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps)
    finally:
      np.random.set_state(saved)
    out[name] = (float(points[name][0]), float(intervals[name][0, 0]),
                 float(intervals[name][1, 0]))
  return out


def _finals(rows, stage, task, optimizer, factor=None) -> Optional[np.ndarray]:
  got = [r for r in rows if r['stage'] == stage and r['task'] == task and
         r['optimizer'] == optimizer and
         (factor is None or float(r['factor']) == factor)]
  if not got:
    return None
  got.sort(key=lambda r: (int(r['seed_start']), int(r['seed'])))
  return np.array([float(r['final_return']) for r in got])


def task_scores(rows, chosen: Dict[Tuple[str, str], float],
                info: SuiteInfo) -> Tuple[List[dict], List[str], dict]:
  """Per (task, optimizer) rows, the complete tasks and the scores.

  A task is complete when its random floor and, for every optimizer, the
  fresh-seed runs at the chosen rate and at 1x are all there, and tuned
  Adam beats the random policy (`MIN_ADAM_GAIN`). Returns (table rows,
  complete tasks, {('tuned' | 'at_1x', optimizer): {task: per-seed
  normalized scores}}).
  """
  table, complete = [], []
  scores = {}
  for task in info.tasks:
    random = _finals(rows, 'random', task, RANDOM)
    adam_f = chosen.get((task, REFERENCE))
    adam = (None if adam_f is None else
            _finals(rows, 'report', task, REFERENCE, adam_f))
    ok = random is not None and adam is not None
    if ok:
      r_mean, a_mean = float(np.nanmean(random)), float(np.nanmean(adam))
      ok = a_mean - r_mean > MIN_ADAM_GAIN * max(abs(a_mean), abs(r_mean))
    for opt in info.optimizers:
      f = chosen.get((task, opt))
      seen = seen_tasks(opt, info.files)
      tuned = None if f is None else _finals(rows, 'report', task, opt, f)
      at_1x = _finals(rows, 'report', task, opt, 1.)
      row = {'task': task, 'optimizer': opt,
             'seen_in_meta_training': task in seen,
             'chosen_factor': f,
             'tuned_return_mean': _mean(tuned),
             'tuned_return_sem': _sem(tuned),
             'return_at_1x_mean': _mean(at_1x),
             'return_at_1x_sem': _sem(at_1x),
             'fresh_seeds': 0 if tuned is None else len(tuned)}
      if ok and tuned is not None and at_1x is not None:
        for key, x in (('tuned', tuned), ('at_1x', at_1x)):
          s = normalize(x, r_mean, a_mean)
          scores.setdefault((key, opt), {})[task] = s
          row[f'normalized_{key}'] = float(np.nanmean(s))
      table.append(row)
    if ok and all(task in scores.get(('tuned', o), {})
                  for o in info.optimizers):
      complete.append(task)
  return table, complete, scores


def _mean(x):
  return float(np.nanmean(x)) if x is not None and len(x) else float('nan')


def _sem(x):
  if x is None or np.sum(np.isfinite(x)) < 2:
    return float('nan')
  return float(np.nanstd(x, ddof=1) / np.sqrt(np.sum(np.isfinite(x))))


def aggregates(scores, complete: Sequence[str],
               optimizers: Sequence[str],
               files: Optional[Dict[str, str]] = None) -> List[dict]:
  """IQM [CI] per (table, optimizer, subset): all complete tasks, the
  held-out ones and the seen ones (for learned optimizers)."""
  out = []
  for key in ('at_1x', 'tuned'):
    for subset in ('all', 'held_out', 'seen'):
      matrices = {}
      for opt in optimizers:
        seen = seen_tasks(opt, files)
        tasks = [t for t in complete if subset == 'all' or
                 (t in seen) == (subset == 'seen')]
        if tasks:
          per_task = scores[key, opt]
          runs = min(len(per_task[t]) for t in tasks)
          matrices[opt] = (np.stack([per_task[t][:runs] for t in tasks], 1),
                           tasks)
      if not matrices:
        continue
      stats = iqm_ci({k: np.nan_to_num(m, nan=0.)
                      for k, (m, _) in matrices.items()})
      for opt, (iqm, lo, hi) in stats.items():
        out.append({'table': key, 'subset': subset, 'optimizer': opt,
                    'iqm': iqm, 'ci_low': lo, 'ci_high': hi,
                    'tasks': len(matrices[opt][1]),
                    'task_names': ' '.join(matrices[opt][1])})
  return out


def effective_steps(optimizers: Sequence[str], out_dir: str,
                    files: Optional[Dict[str, str]] = None
                    ) -> Dict[str, dict]:
  """Each optimizer's mean |update| at rate 1 (step_profile.profile), on a
  clean gradient (mean 1e-3, no noise; Adam about 1) and the noise half's over the
  signal half's; cached in `out_dir`/effective_step.csv."""
  path = os.path.join(out_dir, 'effective_step.csv')
  have = {r['optimizer']: r for r in _read(path)}
  if all(o in have for o in optimizers):
    return {o: {k: float(v) for k, v in have[o].items() if k != 'optimizer'}
            for o in optimizers}
  from launchers.studies import step_profile  # pylint: disable=g-import-not-at-top
  scale = step_profile.SCALES.index(1e-3)
  clean = step_profile.CASES.index((1., 0.))
  out = {}
  for o in optimizers:
    p = step_profile.profile((files or {}).get(o, o))
    out[o] = {'step_clean': p['last'][scale * len(step_profile.CASES) + clean],
              'noise_to_signal': p['noise_to_signal'][scale]}
  common.write_csv(path, [{'optimizer': o, **v} for o, v in out.items()])
  return out


def _read(path):
  import csv  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    return []
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def _ci(rows, key, subset, opt) -> str:
  for r in rows:
    if (r['table'], r['subset'], r['optimizer']) == (key, subset, opt):
      return (f'{r["iqm"]:.2f} [{r["ci_low"]:.2f}, {r["ci_high"]:.2f}] '
              f'({r["tasks"]})')
  return '-'


def headline_table(agg, table, info: SuiteInfo, complete, steps) -> str:
  """Markdown: per optimizer, IQM [95% CI] (tasks) at Adam's rate and
  tuned, all / held-out / seen, its effective step and chosen factors."""
  lines = ['| optimizer | step at rate 1 (Adam ~1) | noise/signal | '
           'at Adam\'s rate: IQM all | held-out | seen | tuned: IQM all | '
           'held-out | seen | chosen factors |',
           '|---|---|---|---|---|---|---|---|---|---|']
  for opt in info.optimizers:
    picks = ' '.join(f'{r["task"]}={r["chosen_factor"]:g}' for r in table
                     if r['optimizer'] == opt and r['chosen_factor'])
    s = steps.get(opt, {})
    lines.append(
        f'| {opt} | {s.get("step_clean", float("nan")):.2f} | '
        f'{s.get("noise_to_signal", float("nan")):.2f} | ' +
        ' | '.join(_ci(agg, k, sub, opt) for k in ('at_1x', 'tuned')
                   for sub in ('all', 'held_out', 'seen')) +
        f' | {picks} |')
  del complete
  return '\n'.join(lines) + '\n'


def status_lines(info: SuiteInfo, complete: Sequence[str]) -> List[str]:
  missing = [t for t in info.tasks if t not in complete]
  budgets = ', '.join(
      f'{t} {info.standard_steps[t]:,}' +
      (f' (sweep {info.tune_steps[t]:,}, rechecked at the standard budget)'
       if info.tune_steps[t] < info.standard_steps[t] else '')
      for t in info.tasks)
  lines = [
      f'**{"PARTIAL" if missing else "COMPLETE"}: {len(complete)} of '
      f'{len(info.tasks)} tasks aggregated.**' +
      (f' Missing (not aggregated): {", ".join(missing)}.' if missing
       else ''), '',
      f'- Budgets (env steps per agent): {budgets}.',
      f'- Rates: {", ".join(f"{g:g}" for g in info.grid)} x each task '
      'config\'s Adam rate, the same for every optimizer, extended past a '
      'winning edge.',
      f'- Seeds: {info.tune_seeds} tuning seeds (base '
      f'{list(info.tune_seed_starts)}) choose each rate (mean final return = '
      'mean episode return over the last 10% of training); '
      f'{info.report_seeds} fresh seeds (base {list(info.report_seed_starts)})'
      ' report it.',
      '- Score: (return - random policy) / (tuned Adam - random policy), '
      'both on the fresh seeds. IQM over runs x tasks with 95% '
      f'stratified-bootstrap CIs (rliable, {BOOTSTRAP_REPS} reps); '
      '(n) = tasks.',
      '- Seen: the suite\'s tasks a shipped learned optimizer was '
      'meta-trained on (its card, lopt/pretrained/<name>.md): ' +
      ('; '.join(f'{o}: {", ".join(t) or "none"}'
                 for o, t in SEEN_TASKS.items() if o in info.optimizers)
       or 'no shipped learned optimizer here') +
      ''.join(f'; {o} (from {p}): '
              f'{", ".join(seen_tasks(o, info.files)) or "none"}'
              for o, p in sorted((info.files or {}).items())) +
      '. Every other task is held out; baselines and untrained cells saw '
      'none.']
  return lines


def plot_aggregate(path: str, agg: List[dict], optimizers) -> str:
  """Two panels (at Adam's rate, tuned): IQM with 95% CI per optimizer."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(11, 0.5 * len(optimizers) + 2),
                           sharex=True)
  for ax, key, title in zip(axes, ('at_1x', 'tuned'),
                            ('at the rate you give Adam', 'each tuned')):
    for i, opt in enumerate(optimizers):
      for j, (subset, color) in enumerate((('all', 'k'), ('held_out', 'C0'),
                                           ('seen', 'C3'))):
        r = [a for a in agg if (a['table'], a['subset'], a['optimizer']) ==
             (key, subset, opt)]
        if r:
          y = i + (j - 1) * 0.22
          ax.errorbar(r[0]['iqm'], y, xerr=[[r[0]['iqm'] - r[0]['ci_low']],
                                           [r[0]['ci_high'] - r[0]['iqm']]],
                      fmt='o', color=color, capsize=3,
                      label=subset if i == 0 else None)
    ax.axvline(1., color='k', ls='--', lw=0.8)
    ax.axvline(0., color='k', lw=0.8)
    ax.set_yticks(range(len(optimizers)))
    ax.set_yticklabels(optimizers)
    ax.set_title(title)
    ax.set_xlabel('IQM normalized return, 95% CI\n(random 0, tuned Adam 1)')
    ax.grid(alpha=0.3, axis='x')
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def plot_task_curves(path: str, task: str, curve_files: Dict[str, List[str]],
                     random_level: Optional[float]) -> Optional[str]:
  """Mean ± std over fresh seeds of each optimizer at its chosen rate."""
  curves, spread, x = {}, {}, None
  for label, files in curve_files.items():
    parts = [_read(f) for f in files if os.path.exists(f)]
    if not parts or len(parts) < len(files):
      continue
    ys = np.concatenate([np.array([[float(v) for k, v in r.items()
                                    if k.startswith('seed')] for r in p])
                         for p in parts], axis=1)
    x = np.array([int(r['env_steps']) for r in parts[0]])
    curves[label] = np.nanmean(ys, 1)
    spread[label] = np.nanstd(ys, 1)
  if not curves:
    return None
  if random_level is not None:
    curves[RANDOM] = np.full(len(x), random_level)
  return common.plot_curves(path, curves, x, 'env steps per agent',
                            'mean episode return',
                            f'{task}: fresh seeds, each at its tuned rate',
                            spread=spread)


def sweep_tables(rows, info: SuiteInfo, tasks: Sequence[str]) -> List[str]:
  """Per task not yet complete, the tuning sweep so far, and
  the standard-budget rechecks of a reduced-budget sweep so far: mean final
  return on the tuning seeds per (optimizer, factor), the best of each row
  in bold. A choosing set, not a report (no normalisation, no fresh
  seeds)."""
  out = []
  for task in tasks:
    for stage, what in (('tune', ''), ('recheck', ', rechecks')):
      done_rows = [r for r in rows
                   if r['stage'] == stage and r['task'] == task]
      if done_rows:
        out += _sweep_table(done_rows, info, task, stage, what)
  return out


def _sweep_table(rows, info: SuiteInfo, task: str, stage: str,
                 what: str) -> List[str]:
  factors = sorted({float(r['factor']) for r in rows})
  steps = sorted({int(r['env_steps']) for r in rows})
  out = [f'### {task} ({", ".join(f"{s:,}" for s in steps)} env steps, '
         f'{info.tune_seeds} tuning seeds{what})', '',
         '| optimizer | ' + ' | '.join(f'x{f:g}' for f in factors) + ' |',
         '|---|' + '---|' * len(factors)]
  for opt in info.optimizers:
    means = {f: _mean(_finals(rows, stage, task, opt, f)) for f in factors}
    done = {f: m for f, m in means.items() if np.isfinite(m)}
    if not done:
      continue
    best = max(done, key=done.get)
    out.append(f'| {opt} | ' + ' | '.join(
        '' if f not in done else
        (f'**{done[f]:.3g}**' if f == best else f'{done[f]:.3g}')
        for f in factors) + ' |')
  return out + ['']


def summarize(rows, chosen: Dict[Tuple[str, str], float], info: SuiteInfo,
              out_dir: str,
              curve_files: Optional[Callable[[str, str, float],
                                             List[str]]] = None) -> str:
  """Writes results.csv, aggregate.csv, summary.md and the plots."""
  os.makedirs(out_dir, exist_ok=True)
  table, complete, scores = task_scores(rows, chosen, info)
  agg = (aggregates(scores, complete, info.optimizers, info.files)
         if complete else [])
  steps = effective_steps(info.optimizers, out_dir, info.files)
  common.write_csv(os.path.join(out_dir, 'results.csv'), table)
  if agg:
    common.write_csv(os.path.join(out_dir, 'aggregate.csv'), agg)
    plot_aggregate(os.path.join(out_dir, 'aggregate.png'), agg,
                   info.optimizers)
  headline = headline_table(agg, table, info, complete, steps)
  per_task = ['| task | optimizer | seen | chosen factor | fresh return at it '
              '(mean ± s.e.) | normalized | at 1x | normalized at 1x |',
              '|---|---|---|---|---|---|---|---|']
  reported = {r['task'] for r in table if r['fresh_seeds']}
  num = lambda x, fmt: '-' if not np.isfinite(x) else format(x, fmt)
  for r in table:
    if r['task'] not in reported:
      continue
    f = r['chosen_factor']
    per_task.append(
        f'| {r["task"]} | {r["optimizer"]} | '
        f'{"seen" if r["seen_in_meta_training"] else ""} | '
        f'{"-" if f is None else f"{f:g}"} | ' +
        ('not yet' if not r['fresh_seeds'] else
         f'{r["tuned_return_mean"]:.3g} ± {r["tuned_return_sem"]:.2g}') +
        f' | {num(r.get("normalized_tuned", np.nan), ".2f")} | '
        f'{num(r["return_at_1x_mean"], ".3g")} | '
        f'{num(r.get("normalized_at_1x", np.nan), ".2f")} |')
  for task in info.tasks:
    if curve_files is None:
      break
    random = _finals(rows, 'random', task, RANDOM)
    files = {o: curve_files(task, o, chosen[task, o])
             for o in info.optimizers if (task, o) in chosen}
    plot_task_curves(os.path.join(out_dir, f'{task}.png'), task, files,
                     None if random is None else float(np.nanmean(random)))
  text = ['# Standard suite (generated by launchers/suite.py; do not edit)',
          '', *status_lines(info, complete), '',
          '## Headline: IQM [95% CI] (tasks), per optimizer', '',
          'Columns "at Adam\'s rate": every optimizer at 1x the config\'s '
          'Adam rate; "tuned": each at its own rate chosen on the tuning '
          'seeds. Step at rate 1: mean |update| per coordinate over the '
          'gradient scale on a clean gradient (launchers/studies/'
          'step_profile.py); noise/signal: its step on pure-noise '
          'coordinates over that on clean ones.', '', headline,
          '## Per task (fresh seeds)', '', '\n'.join(per_task), '',
          'Plots: aggregate.png (IQM and CIs), <task>.png (learning curves).',
          '']
  sweeps = sweep_tables(rows, info,
                        [t for t in info.tasks if t not in complete])
  if sweeps:
    text += ['## Tuning sweep so far (tasks not yet complete)', '',
             'Mean final return on the tuning seeds, per rate factor (best '
             'of each row in bold), in the sweep and then in the rechecks '
             'of its best rate and neighbours at the standard budget: the '
             'rates are chosen from these, and they are not a result (no '
             'fresh seeds, not normalised).', '',
             *sweeps]
  path = os.path.join(out_dir, 'summary.md')
  with open(path, 'w') as f:
    f.write('\n'.join(text))
  print('\n'.join(text), flush=True)
  return path


def write_readme_table(readme: str, summary_md: str) -> bool:
  """Puts summary.md's status and headline between the README markers.

  Returns False (and changes nothing) when either marker is absent.
  """
  with open(summary_md) as f:
    body = f.read().split('## Per task')[0].split('\n', 2)[2].strip()
  if _write_between_markers(readme, f'{body}\n\nFull results: '
                            'docs/results/standard/summary.md'):
    return True
  print(f'{readme}: no {README_BEGIN} ... {README_END} lines; nothing '
        'written', flush=True)
  return False


def _write_between_markers(path: str, body: str) -> bool:
  """Replaces what lies between the file's README_BEGIN and README_END
  lines with `body`; False (the file unchanged) if either is absent."""
  with open(path) as f:
    text = f.read()
  if README_BEGIN not in text or README_END not in text:
    return False
  head, rest = text.split(README_BEGIN, 1)
  _, tail = rest.split(README_END, 1)
  with open(path, 'w') as f:
    f.write(f'{head}{README_BEGIN}\n{body}\n{README_END}{tail}')
  return True


def card_block(optimizer: str, out_dir: str) -> Optional[str]:
  """What the suite's CSVs in `out_dir` say of `optimizer`, as a card's
  generated lines (None if the suite did not run it): its IQMs with CIs,
  held-out and seen, and each task's score at 1x and tuned."""
  table = [r for r in _read(os.path.join(out_dir, 'results.csv'))
           if r['optimizer'] == optimizer]
  if not table:
    return None
  agg = [dict(r, iqm=float(r['iqm']), ci_low=float(r['ci_low']),
              ci_high=float(r['ci_high']))
         for r in _read(os.path.join(out_dir, 'aggregate.csv'))]
  scored = [r for r in table if r.get('normalized_tuned', '') not in
            ('', 'nan')]
  missing = [r['task'] for r in table if r not in scored]

  def ci(key, subset):
    text = _ci(agg, key, subset, optimizer)
    return 'none measured' if text == '-' else text

  lines = [
      f'Generated by `launchers/suite.py --cards` from '
      f'`{out_dir}/` (do not edit): random policy 0, tuned Adam 1; IQM '
      '[95% CI] (tasks).', '',
      *(f'- {title}: held-out {ci(key, "held_out")}; seen {ci(key, "seen")}.'
        for key, title in (('at_1x', 'At the rate you give Adam'),
                           ('tuned', 'Each tuned'))),
      '- Per task, at 1x / tuned (chosen factor): ' + '; '.join(
          f'{r["task"]}{" (seen)" if r["seen_in_meta_training"] == "True" else ""}'
          f' {float(r["normalized_at_1x"]):.2f} / '
          f'{float(r["normalized_tuned"]):.2f} '
          f'(x{float(r["chosen_factor"]):g})' for r in scored) + '.']
  if missing:
    lines.append(f'- **PARTIAL**: not yet measured on {", ".join(missing)}.')
  return '\n'.join(lines)


def write_cards(cards_dir: str, out_dir: str) -> List[str]:
  """Puts `card_block` between the markers of every card in `cards_dir`
  (`<name>.md`) that has them; returns the cards written."""
  written = []
  for name in sorted(os.listdir(cards_dir)):
    path = os.path.join(cards_dir, name)
    if not name.endswith('.md'):
      continue
    block = card_block(name[:-3], out_dir)
    if block is not None and _write_between_markers(path, block):
      written.append(path)
  return written


def curve_glob(curves_dir: str) -> Callable[[str, str, float], List[str]]:
  """(task, optimizer, factor) -> the fresh-seed curve files of that run."""
  def files(task, optimizer, factor):
    return sorted(glob.glob(os.path.join(
        curves_dir, f'report_{task}_{optimizer}_x{factor:g}_s*.csv')))
  return files
