"""The standard suite's runs: rate sweeps on tuning seeds, fresh-seed reports.

`run(cfg, workdir, phase, tasks)` is launchers/suite.py's job (fields in
configs/evaluate.py, `standard_fields`). The work is cut into units, one
(stage, task, optimizer, rate factor, seed batch, budget) each: one
`training.train` call with the batch's seeds vmapped (one compile). A
finished unit appends its per-seed final returns to `units.csv` in the
workdir and its curves to `curves/<unit>.csv`; a rerun skips every unit
already in `units.csv`. The unit in flight checkpoints its agents into
`partial/<unit>/` every two minutes and on SIGTERM (`training.train`'s
`resume`), and a rerun continues it from there, so a stop loses at most
two minutes of work.

Stages: 'tune' (every optimizer over the rate grid on the tuning seeds,
extended past an edge that wins), 'recheck' (only where the sweep ran at a
reduced budget: the chosen rate and its neighbours again at the standard
budget on the tuning seeds; the choice is made again among them, walking
on past a winning edge), 'report' (the chosen rate and 1x on fresh seeds
at the standard budget) and 'random' (the uniform-random policy's floor
on the fresh seeds).
"""

import csv
import os
import re
import shutil
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import jax
import numpy as np

from agents import brax_envs
from configs import ppo_brax
from configs import ppo_gymnax
from launchers.lib import common
from launchers.lib import comparison
from launchers.lib import suite_summary
from launchers.lib import training
import lopt

PHASES = ('tune', 'report', 'summarize', 'all', 'extra')
EXTRA_STAGES = ('tune', 'recheck', 'report')
TASKS = ppo_gymnax.CLASSIC + ppo_gymnax.MINATAR + brax_envs.BRAX_ENVS
UNITS_CSV = 'units.csv'
UNIT_FIELDS = ('stage', 'task', 'optimizer', 'factor', 'learning_rate',
               'seed_start', 'num_seeds', 'seed', 'env_steps', 'final_return',
               'env_steps_per_second', 'nonfinite')
RANDOM = comparison.RANDOM_LABEL
PARTIAL = 'partial'  # the unit in flight's checkpoints, under the workdir


class Stopped(Exception):
  """A stop was asked for (SIGTERM): the unit in flight was checkpointed
  and the same command continues it."""


class Unit(NamedTuple):
  """One training call: a seed batch of one (task, optimizer, rate)."""
  stage: str
  task: str
  optimizer: str
  factor: float
  seed_start: int
  num_seeds: int
  env_steps: int

  @property
  def key(self) -> str:
    return (f'{self.stage}_{self.task}_{self.optimizer}_x{self.factor:g}_'
            f's{self.seed_start}+{self.num_seeds}_{self.env_steps}')


class Plan(NamedTuple):
  """The validated suite: names, grid, seeds and budgets."""
  tasks: Tuple[str, ...]
  optimizers: Tuple[str, ...]
  grid: Tuple[float, ...]
  max_extensions: int
  tune_batches: Tuple[Tuple[int, int], ...]    # (seed_start, num_seeds)
  report_batches: Tuple[Tuple[int, int], ...]
  standard_steps: Dict[str, int]
  tune_steps: Dict[str, int]
  random_steps: int
  files: Dict[str, str]    # {label: meta-params .npz} of LABEL=PATH names


def _names(field: str, spec: str, allowed: Sequence[str]) -> Tuple[str, ...]:
  names = tuple(x.strip() for x in spec.split(',') if x.strip())
  if not names:
    raise ValueError(f'{field}: give at least one of {list(allowed)}')
  for n in names:
    if n not in allowed:
      raise ValueError(f'{field}: unknown {n!r}; allowed: {list(allowed)}')
  if len(set(names)) < len(names):
    raise ValueError(f'{field}: a name is given twice in {spec!r}')
  return names


def parse_optimizers(spec: str) -> Tuple[Tuple[str, ...], Dict[str, str]]:
  """'adam,rmsprop,mine=runs/x/meta_params.npz' -> the names (a file's by
  its label) and {label: path}: any meta-params file can be measured
  against the suite's baselines, its label standing for it in the units
  and tables."""
  names, files = [], {}
  for token in (x.strip() for x in spec.split(',')):
    if '=' not in token:
      names.append(token)
      continue
    label, path = (x.strip() for x in token.split('=', 1))
    if (not re.fullmatch(r'[a-z][a-z0-9_]*', label)
        or label in common.OPTIMIZER_NAMES):
      raise ValueError(f'optimizers: {token!r}: LABEL=PATH needs a label of '
                       'lowercase letters, digits and _ that is not an '
                       f'optimizer name ({list(common.OPTIMIZER_NAMES)})')
    try:
      lopt.serialization.load(path)
    except (OSError, ValueError) as e:
      raise ValueError(f'optimizers: {label}={path}: cannot load it ({e})'
                       ) from e
    files[label] = path
    names.append(label)
  names = _names('optimizers', ','.join(names),
                 common.OPTIMIZER_NAMES + tuple(files))
  for label in files:
    suite_summary.seen_tasks(label, files)  # raises if it cannot tell
  return names, files


def parse_grid(spec: str) -> Tuple[float, ...]:
  """'0.1,0.3,1' -> sorted factors; at least 3, all > 0, 1 among them."""
  try:
    grid = tuple(sorted(float(x) for x in spec.split(',') if x.strip()))
  except ValueError as e:
    raise ValueError(f'rate_grid: {spec!r} is not comma-separated numbers '
                     '(multiples of the Adam rate, e.g. 0.1,0.3,1,3,10)') from e
  if len(grid) < 3 or len(set(grid)) < len(grid) or grid[0] <= 0:
    raise ValueError(f'rate_grid: {spec!r} needs at least 3 different '
                     'factors, all > 0')
  if 1. not in grid:
    raise ValueError(f'rate_grid: {spec!r} must contain 1 (the rate the '
                     'config gives Adam)')
  return grid


def seed_batches(start: int, seeds: int, per_batch: int,
                 field: str) -> Tuple[Tuple[int, int], ...]:
  """[(seed_start, num_seeds)] covering `seeds` seeds in batches."""
  seeds = common.check_positive_int(seeds, field)
  per_batch = per_batch or seeds
  if seeds % per_batch:
    raise ValueError(f'seeds_per_batch: {per_batch} must divide {field} '
                     f'({seeds})')
  # Batch b's runs take keys split from base seed start + b.
  return tuple((int(start) + b, per_batch) for b in range(seeds // per_batch))


def make_plan(cfg, tasks: str = '') -> Plan:
  """Validates every field (names, grid, seeds, budgets) before compiling.

  `tasks` (comma-separated) restricts the run to some of `cfg.envs`.
  """
  all_tasks = _names('envs', cfg.envs, TASKS)
  chosen = _names('tasks', tasks, all_tasks) if tasks else all_tasks
  optimizers, files = parse_optimizers(cfg.optimizers)
  if 'adam' not in optimizers:
    raise ValueError('optimizers: must include adam (the reference: tuned '
                     'Adam = 1 on every task)')
  if set(range(cfg.tune_seed_start, cfg.tune_seed_start + cfg.tune_seeds)) & \
     set(range(cfg.report_seed_start,
               cfg.report_seed_start + cfg.report_seeds)):
    raise ValueError('report_seed_start: the fresh seeds must not overlap the '
                     f'tuning seeds ({cfg.tune_seed_start}..'
                     f'{cfg.tune_seed_start + cfg.tune_seeds - 1})')
  extensions = int(cfg.max_grid_extensions)
  if extensions < 0:
    raise ValueError(f'max_grid_extensions: must be >= 0, got {extensions}')
  replaced = comparison.parse_per_env('budgets', cfg.get('budgets', ''),
                                      all_tasks)
  standard = {t: replaced.get(t, standard_steps(t, cfg.brax_steps))
              for t in chosen}
  reduced = comparison.parse_per_env('tune_steps', cfg.tune_steps, TASKS)
  reduced = {t: n for t, n in reduced.items() if t in all_tasks}
  for t, n in reduced.items():
    if t in standard and n > standard[t]:
      raise ValueError(f'tune_steps: {t}={n} is above its standard budget '
                       f'{standard[t]}')
  plan = Plan(chosen, optimizers, parse_grid(cfg.rate_grid), extensions,
              seed_batches(cfg.tune_seed_start, cfg.tune_seeds,
                           cfg.seeds_per_batch, 'tune_seeds'),
              seed_batches(cfg.report_seed_start, cfg.report_seeds,
                           cfg.seeds_per_batch, 'report_seeds'),
              standard, {t: reduced.get(t, standard[t]) for t in chosen},
              common.check_positive_int(cfg.random_steps, 'random_steps'),
              files)
  for t in chosen:  # every (task, optimizer) config builds
    for name in optimizers:
      training.validate(task_config(t, name, 1., 0, 1, standard[t],
                                    cfg.brax_steps, files.get(name, '')))
  return plan


def standard_steps(task: str, brax_steps: int) -> int:
  """The standard env-step budget per agent of `task`."""
  if task in ppo_gymnax.MINATAR:
    return ppo_gymnax.MINATAR_STEPS
  if task in ppo_gymnax.CLASSIC:
    return ppo_gymnax.CLASSIC_STEPS
  return common.check_positive_int(brax_steps, 'brax_steps')


def base_config(task: str, brax_steps: int):
  """The task's training config at its standard budget, with Adam."""
  if task in brax_envs.BRAX_ENVS:
    cfg = ppo_brax.get_config(task + ',cpu')
    cfg.num_updates = int(brax_steps) // (cfg.ppo.num_envs *
                                          cfg.ppo.unroll_len)
    return cfg
  return ppo_gymnax.get_config(task)


def task_config(task: str, optimizer: str, factor: float, seed_start: int,
                num_seeds: int, env_steps: int, brax_steps: int,
                meta_params_path: str = ''):
  """The training config of one unit: `optimizer` (or, with
  `meta_params_path`, the learned optimizer in that file) at `factor` x the
  task's Adam rate (with the task's schedule and clip), `env_steps` per
  agent."""
  cfg = base_config(task, brax_steps)
  cfg.optimizer.name = optimizer
  if meta_params_path:
    cfg.optimizer.name = 'learned'
    cfg.optimizer.meta_params_path = meta_params_path
  cfg.optimizer.learning_rate = float(cfg.optimizer.learning_rate) * factor
  batch = cfg.ppo.num_envs * cfg.ppo.unroll_len
  cfg.num_updates = max(1, int(env_steps) // batch)
  # About 120 logging chunks: the final return (last 10%) spans a dozen.
  cfg.log_every = max(1, cfg.num_updates // 120)
  cfg.num_updates -= cfg.num_updates % cfg.log_every
  cfg.seed = int(seed_start)
  cfg.num_seeds = int(num_seeds)
  return cfg


class Store:
  """units.csv (one row per seed of each finished unit) and its curves."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, UNITS_CSV)
    os.makedirs(os.path.join(workdir, 'curves'), exist_ok=True)
    self.rows = read_rows(self.path)
    self.done = {unit_key(r) for r in self.rows}

  def add(self, unit: Unit, learning_rate: float, result: dict) -> None:
    """Writes the unit's curves, then appends its rows (the commit mark)."""
    rows = [{'stage': unit.stage, 'task': unit.task,
             'optimizer': unit.optimizer, 'factor': f'{unit.factor:g}',
             'learning_rate': f'{learning_rate:.6g}',
             'seed_start': unit.seed_start, 'num_seeds': unit.num_seeds,
             'seed': i,
             'env_steps': unit.env_steps, 'final_return': float(f),
             'env_steps_per_second': float(result.get('steps_per_second',
                                                      float('nan'))),
             'nonfinite': bool(result.get('nonfinite', False))}
            for i, f in enumerate(result['final_return'])]
    if 'returns' in result:
      curve = [{'env_steps': int(s), **{f'seed{i}': float(r) for i, r in
                                        enumerate(rs)}}
               for s, rs in zip(result['env_steps'], result['returns'])]
      common.write_csv(self.curve_path(unit), curve)
    new = not os.path.exists(self.path)
    with open(self.path, 'a', newline='') as f:
      w = csv.DictWriter(f, fieldnames=UNIT_FIELDS)
      if new:
        w.writeheader()
      w.writerows(rows)
    rows = [{k: str(v) for k, v in r.items()} for r in rows]
    self.rows += rows
    self.done.add(unit_key(rows[0]))

  def curve_path(self, unit: Unit) -> str:
    return os.path.join(self.workdir, 'curves', unit.key + '.csv')

  def finals(self, stage: str, task: str, optimizer: str, factor: float,
             env_steps: int, batches) -> Optional[np.ndarray]:
    """Per-seed final returns over `batches`, or None if one is missing."""
    out = []
    for start, n in batches:
      got = [float(r['final_return']) for r in self.rows
             if unit_key(r) == Unit(stage, task, optimizer, factor, start, n,
                                    env_steps).key]
      if len(got) != n:
        return None
      out += got
    return np.asarray(out)


def read_rows(path: str) -> List[dict]:
  if not os.path.exists(path):
    return []
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def unit_key(row: dict) -> str:
  """The key of the unit a units.csv row belongs to."""
  return Unit(row['stage'], row['task'], row['optimizer'],
              float(row['factor']), int(row['seed_start']),
              int(row['num_seeds']), int(row['env_steps'])).key


def random_result(unit: Unit, brax_steps: int) -> dict:
  """Per-seed mean episode return of a uniform-random policy (the floor),
  with the task's env count per seed."""
  base = base_config(unit.task, brax_steps)
  env = common.make_env(base)
  fn = jax.jit(jax.vmap(lambda k: common.random_policy_return(
      env, k, base.ppo.num_envs, unit.env_steps)))
  means, _ = fn(jax.random.split(jax.random.PRNGKey(unit.seed_start),
                                 unit.num_seeds))
  return {'final_return': np.asarray(means)}


class Runner:
  """Runs the units missing from the store; prints unit i/N, env-steps/s
  and an ETA: the env steps left at this process's rate so far, those of
  the units known to be pending or, with `remaining`, its estimate of the
  whole run's (`units_left`), whichever is more."""

  def __init__(self, store: Store, brax_steps: int, pending: Sequence[Unit],
               train_fn=None, verbose: bool = True,
               files: Optional[Dict[str, str]] = None, stop=None,
               remaining: Optional[Callable[[], Tuple[int, int]]] = None):
    self.store = store
    self.stop = stop
    self.remaining = remaining
    self.files = files or {}
    self.brax_steps = brax_steps
    self.train_fn = train_fn or training.train
    self.verbose = verbose
    self.pending = {u.key: u for u in pending if u.key not in store.done}
    self.total = len(self.pending)
    self.count = 0
    self.steps_done, self.seconds = 0, 0.

  def ensure(self, unit: Unit) -> None:
    """Runs `unit` unless finished (a unit found late counts in N too)."""
    if unit.key in self.store.done:
      return
    if unit.key not in self.pending:
      self.pending[unit.key] = unit
      self.total += 1
    self.count += 1
    print(f'== unit {self.count}/{self.total}: {unit.key}', flush=True)
    t = time.time()
    if unit.optimizer == RANDOM:
      lr, result = 0., random_result(unit, self.brax_steps)
    else:
      cfg = task_config(unit.task, unit.optimizer, unit.factor,
                        unit.seed_start, unit.num_seeds, unit.env_steps,
                        self.brax_steps, self.files.get(unit.optimizer, ''))
      lr = float(cfg.optimizer.learning_rate)
      partial = os.path.join(self.store.workdir, PARTIAL, unit.key)
      result = self.train_fn(cfg, partial, label=unit.key,
                             verbose=self.verbose, resume=True,
                             stop=self.stop)
      if result.get('stopped_early'):
        raise Stopped(f'stopped in {unit.key}; its checkpoint is in '
                      f'{partial}: the same command continues it')
    self.store.add(unit, lr, result)
    if unit.optimizer != RANDOM:  # its rows are the record now
      shutil.rmtree(partial, ignore_errors=True)
    del self.pending[unit.key]
    self.steps_done += unit.env_steps * unit.num_seeds
    self.seconds += time.time() - t
    rate = self.steps_done / max(self.seconds, 1e-9)
    count = len(self.pending)
    left = sum(u.env_steps * u.num_seeds for u in self.pending.values())
    what = f'{count} known units'
    if self.remaining is not None:
      count_all, left_all = self.remaining()
      if left_all > left:
        left, what = left_all, f'about {count_all} units'
    eta = left / rate
    eta = f'{eta / 3600:,.1f} h' if eta >= 3600 else f'{eta:,.0f} s'
    print(f'unit {self.count}/{self.total} done: {unit.task} '
          f'{unit.optimizer} x{unit.factor:g} final '
          f'{np.nanmean(result["final_return"]):.4g} | env-steps/s '
          f'{rate:,.0f} (all seeds, this process) | ETA {eta} ({what} '
          'left)', flush=True)


def _tune_units(plan: Plan, task: str, optimizer: str,
                factors: Sequence[float], stage: str, steps: int):
  return [Unit(stage, task, optimizer, f, start, n, steps)
          for f in factors for start, n in plan.tune_batches]


def chosen_factor(plan: Plan, store: Store, task: str, optimizer: str,
                  runner: Optional[Runner] = None,
                  recheck: bool = True) -> Optional[float]:
  """The rate factor chosen on the tuning seeds, running what is missing.

  The sweep covers `plan.grid`, plus a point beyond an edge that wins
  (`suite_summary.extension`); where it ran at a reduced budget, the choice
  and its neighbours are rerun at the standard budget (stage 'recheck') and
  chosen among again, walking on past an edge of the rechecked factors
  that wins (`suite_summary.walk`; `recheck=False` stops before that and
  returns the sweep's choice). With no `runner`, None when a needed unit
  is missing.
  """
  steps, standard = plan.tune_steps[task], plan.standard_steps[task]

  def scores(stage, factors, budget):
    for u in _tune_units(plan, task, optimizer, factors, stage, budget):
      if runner is not None:
        runner.ensure(u)
    got = {f: store.finals(stage, task, optimizer, f, budget,
                           plan.tune_batches) for f in factors}
    return None if any(v is None for v in got.values()) else got

  factors = list(plan.grid)
  while True:
    got = scores('tune', factors, steps)
    if got is None:
      return None
    best = suite_summary.select_rate(got)
    more = suite_summary.extension(best, factors, plan.grid,
                                   plan.max_extensions)
    if more is None:
      break
    factors.append(more)
  if steps < standard and recheck:
    checked = suite_summary.neighbours(best, factors)
    while True:
      got = scores('recheck', checked, standard)
      if got is None:
        return None
      best = suite_summary.select_rate(got)
      more = suite_summary.walk(best, checked, factors, plan.grid,
                                plan.max_extensions)
      if more is None:
        break
      checked.append(more)
  return best


def report_units(plan: Plan, task: str, optimizer: str,
                 factor: float) -> List[Unit]:
  """Fresh-seed units at the standard budget: the chosen rate and 1x."""
  return [Unit('report', task, optimizer, f, start, n,
               plan.standard_steps[task])
          for f in dict.fromkeys((factor, 1.))
          for start, n in plan.report_batches]


def units_left(plan: Plan, store: Store,
               report: bool = True) -> Tuple[int, int]:
  """(units, env steps over all seeds) the run still needs, estimated for
  the ETA: where a (task, optimizer)'s choice is known, its missing units;
  where not, the missing units of the grid's sweep, the rechecks of the
  sweep's choice and its neighbours (three rates while the sweep is not
  done) and, with `report`, the fresh-seed units at two rates and the
  random floor. Extensions and walks past an edge come on top."""
  known, guessed = set(), []
  for task in plan.tasks:
    standard = plan.standard_steps[task]
    per_rate = [(standard, n) for _, n in plan.report_batches]
    if report:
      known.update(random_units(plan, task))
    for opt in plan.optimizers:
      swept = chosen_factor(plan, store, task, opt, recheck=False)
      final = chosen_factor(plan, store, task, opt)
      if swept is None:
        known.update(_tune_units(plan, task, opt, plan.grid, 'tune',
                                 plan.tune_steps[task]))
      if final is None and plan.tune_steps[task] < standard:
        if swept is None:
          guessed += [(standard, n) for _, n in plan.tune_batches] * 3
        else:
          checked = suite_summary.neighbours(
              swept, sorted(set(plan.grid) | {swept}))
          known.update(_tune_units(plan, task, opt, checked, 'recheck',
                                   standard))
      if report and final is None:
        guessed += per_rate * 2
      elif report:
        known.update(report_units(plan, task, opt, final))
  todo = [(u.env_steps, u.num_seeds) for u in known
          if u.key not in store.done] + guessed
  return len(todo), sum(steps * n for steps, n in todo)


def extra_units(plan: Plan, spec: str) -> List[Unit]:
  """'STAGE:F[,F...]' -> the units of `stage` at those rate factors for
  every task and optimizer of `plan`: 'tune' at the sweep budget and
  'recheck' at the standard one, both on the tuning seeds, 'report' on the
  fresh seeds. A look beside the protocol (say, every optimizer at 1x at
  the standard budget): the choices never read a factor they did not ask
  for, so extra units change no choice and no report."""
  stage, _, factors = spec.partition(':')
  if stage not in EXTRA_STAGES:
    raise ValueError(f'extra: unknown stage {stage!r} in {spec!r}; allowed: '
                     f'{list(EXTRA_STAGES)} (STAGE:F[,F...])')
  try:
    found = tuple(dict.fromkeys(float(x) for x in factors.split(',')
                                if x.strip()))
  except ValueError:
    found = ()
  if not found or min(found) <= 0:
    raise ValueError(f'extra: {spec!r} is not STAGE:F[,F...] with factors '
                     '> 0 (multiples of the Adam rate, e.g. recheck:1)')
  out = []
  for task in plan.tasks:
    steps = (plan.tune_steps if stage == 'tune' else plan.standard_steps)[task]
    batches = plan.report_batches if stage == 'report' else plan.tune_batches
    out += [Unit(stage, task, opt, f, start, n, steps)
            for opt in plan.optimizers for f in found
            for start, n in batches]
  return out


def random_units(plan: Plan, task: str) -> List[Unit]:
  return [Unit('random', task, RANDOM, 0., start, n, plan.random_steps)
          for start, n in plan.report_batches]


def tune(plan: Plan, store: Store, brax_steps: int,
         then_report: bool = False, stop=None) -> None:
  """Sweeps every (task, optimizer) and rechecks reduced-budget choices.

  `then_report`: each (task, optimizer)'s fresh-seed units (and the task's
  random floor) right after its choice is final, so a stopped run has
  whole rows (Adam's first) rather than every choice and no report.
  """
  known = [u for t in plan.tasks for o in plan.optimizers
           for u in _tune_units(plan, t, o, plan.grid, 'tune',
                                plan.tune_steps[t])]
  runner = Runner(store, brax_steps, known, files=plan.files, stop=stop,
                  remaining=lambda: units_left(plan, store, then_report))
  # Every cheap sweep first, then the standard-budget rechecks, so that a
  # stopped run has swept every task; the rechecks optimizer by optimizer
  # (Adam, the yardstick, first), so a stopped run has each one's whole row.
  for recheck in (False, True):
    pairs = [(t, o) for t in plan.tasks for o in plan.optimizers]
    if recheck:
      pairs.sort(key=lambda p: plan.optimizers.index(p[1]))
    for task, optimizer in pairs:
      factor = chosen_factor(plan, store, task, optimizer, runner, recheck)
      print(f'-- {task} {optimizer}: chosen x{factor:g} (tuning seeds'
            f'{"" if recheck else ", sweep"})', flush=True)
      if recheck and then_report:
        for unit in (random_units(plan, task) +
                     report_units(plan, task, optimizer, factor)):
          runner.ensure(unit)


def report(plan: Plan, store: Store, brax_steps: int, stop=None) -> None:
  """Runs the fresh-seed units of every (task, optimizer) already tuned."""
  todo, untuned = [], []
  for task in plan.tasks:
    todo += random_units(plan, task)
    for optimizer in plan.optimizers:
      factor = chosen_factor(plan, store, task, optimizer)
      if factor is None:
        untuned.append(f'{task}/{optimizer}')
      else:
        todo += report_units(plan, task, optimizer, factor)
  if untuned:
    print(f'report: not tuned yet (run --phase=tune): {", ".join(untuned)}',
          flush=True)
  runner = Runner(store, brax_steps, todo, files=plan.files, stop=stop,
                  remaining=lambda: units_left(plan, store))
  for unit in todo:
    runner.ensure(unit)


def choices(plan: Plan, store: Store) -> Dict[Tuple[str, str], float]:
  """{(task, optimizer): chosen factor} where the tuning is complete."""
  out = {}
  for task in plan.tasks:
    for optimizer in plan.optimizers:
      f = chosen_factor(plan, store, task, optimizer)
      if f is not None:
        out[task, optimizer] = f
  return out


def run(cfg, workdir: str, phase: str = 'all', tasks: str = '',
        output_dir: Optional[str] = None, stop=None,
        extra: str = '') -> Optional[str]:
  """Runs `phase` ('tune', 'report', 'summarize', 'all' or 'extra') of the
  suite.

  Everything is validated first. Returns the summary's path when the phase
  summarizes. 'extra' runs `extra_units(plan, extra)` only. `stop` (a
  `driver.StopFlag`, set by SIGTERM in the command) checkpoints the unit in
  flight and raises `Stopped`.
  """
  if phase not in PHASES:
    raise ValueError(f'phase: unknown {phase!r}; allowed: {list(PHASES)}')
  if (phase == 'extra') != bool(extra):
    raise ValueError('extra: give it (STAGE:F[,F...]) with --phase=extra, '
                     'and only then')
  plan = make_plan(cfg, tasks)
  units = extra_units(plan, extra) if extra else []
  store = Store(workdir)
  if units:
    runner = Runner(store, cfg.brax_steps, units, files=plan.files,
                    stop=stop)
    for unit in units:
      runner.ensure(unit)
    return None
  if phase in ('tune', 'all'):
    tune(plan, store, cfg.brax_steps, then_report=phase == 'all', stop=stop)
  if phase in ('report', 'all'):
    report(plan, store, cfg.brax_steps, stop=stop)
  if phase not in ('summarize', 'all'):
    return None
  full = make_plan(cfg)  # the summary covers every task of the suite
  return suite_summary.summarize(
      store.rows, choices(full, store), suite_summary.SuiteInfo(
          tasks=full.tasks, optimizers=full.optimizers, grid=full.grid,
          standard_steps=full.standard_steps, tune_steps=full.tune_steps,
          tune_seeds=sum(n for _, n in full.tune_batches),
          report_seeds=sum(n for _, n in full.report_batches),
          tune_seed_starts=[s for s, _ in full.tune_batches],
          report_seed_starts=[s for s, _ in full.report_batches],
          curves_dir=os.path.join(workdir, 'curves'), files=full.files),
      output_dir or cfg.output_dir,
      suite_summary.curve_glob(os.path.join(workdir, 'curves')))
