"""The one driver loop of train and meta_train.

Both launchers do the same around their own jitted programs: build the
state in place with an `init` program, call a `run` program (a chunk of
updates or meta-iterations) until a total is reached or a stop is asked
for, write each chunk's rows to a CSV as the run goes, print progress
lines (step, rate, ETA), save checkpoints, and time the first (compiling)
call apart from the rest. `Driver` does that; each launcher keeps only its
own work: its programs, its rows, its summary and its plots.

    driver = Driver(context=cfg.to_dict(), csv_path=..., unit='env-steps')
    state = driver.start('train_init', make_init, args,
                         'train_chunk', make_run)
    result = driver.loop(state, first_step=0, total=1000, per_call=10,
                         units_per_step=640, record=record)
"""

import csv
import dataclasses
import os
import signal
import time
from typing import Any, Callable, Dict, List, Optional

import jax

from launchers.lib import common
from launchers.lib import multihost
from launchers.lib import runtime


class StopFlag:
  """Set by SIGTERM/SIGINT; the loop saves and exits after the current call."""

  def __init__(self):
    self.requested = False

  def __call__(self, signum, frame):
    del frame
    print(f'signal {signum}: saving a checkpoint and stopping', flush=True)
    self.requested = True


def stop_on_sigterm() -> StopFlag:
  """A `StopFlag` that SIGTERM sets (the launchers' save-and-exit)."""
  stop = StopFlag()
  signal.signal(signal.SIGTERM, stop)
  return stop


class CsvAppender:
  """A CSV written as the run goes; on resume, the rows kept up to the
  resume point are written back first (later ones are dropped)."""

  def __init__(self, path: str, rows: List[dict], enabled: bool = True):
    self.path = path
    self.enabled = enabled and bool(path)
    self.fields = list(rows[0]) if rows else None
    if not self.enabled:
      return
    if rows:
      common.write_csv(path, rows)
    elif os.path.exists(path):
      os.remove(path)

  def append(self, rows: List[dict]) -> None:
    if not rows or not self.enabled:
      return
    new = self.fields is None
    if new:
      self.fields = list(rows[0])
    with open(self.path, 'a', newline='') as f:
      w = csv.DictWriter(f, fieldnames=self.fields, restval='')
      if new:
        w.writeheader()
      w.writerows(rows)


def read_rows(path: str, key: str, upto: int) -> List[dict]:
  """The rows of the CSV at `path` whose `key` column is <= `upto`."""
  if not path or not os.path.exists(path):
    return []
  with open(path) as f:
    return [r for r in csv.DictReader(f) if int(float(r[key])) <= upto]


@dataclasses.dataclass
class LoopResult:
  """What `Driver.loop` leaves: the last state and step, every row, and the
  timing of the first (compiling) call apart from the calls after it."""
  state: Any
  step: int
  rows: List[dict]
  first_call_seconds: Optional[float]
  later_calls: int
  later_seconds: float
  stopped_early: bool


class Driver:
  """Programs from the executable cache (when on), and the loop around them.

  Args:
    context: what the programs depend on beyond their arguments (the config;
      see `runtime.executable_cache`).
    csv_path: where rows are appended ('' for none); written by process 0.
    key: the CSV column that counts steps (for resuming).
    unit: what `units_per_step` counts, for the progress lines.
    verbose: print progress lines (process 0 only).
    cache_enabled: False keeps the executable cache off for these programs.
  """

  def __init__(self, context: Any, csv_path: str = '', key: str = 'step',
               unit: str = 'env-steps', verbose: bool = True,
               cache_enabled: bool = True):
    self.cache = runtime.executable_cache(context, enabled=cache_enabled)
    self.csv_path = csv_path
    self.key = key
    self.unit = unit
    self.primary = multihost.is_primary()
    self.verbose = verbose and self.primary
    self.init = self.run = None
    self._t0 = None

  def start(self, init_name: str, make_init: Callable[[], Callable],
            init_args: tuple, run_name: str,
            make_run: Callable[[Any], Callable]) -> Any:
    """Builds the state with the `init` program and wraps the `run` one.

    `make_init()` returns the jitted init; `make_run(shapes)` the jitted
    run, given the state's shapes (the state itself may be donated). Each
    is called only when its program is compiled (a cache miss).
    """
    self._t0 = time.time()
    self.init = self.cache.wrap(init_name, make_init)
    self.cache.prefetch(run_name)  # loads while the state is built
    state = self.init(*init_args)
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                          state)
    self.run = self.cache.wrap(run_name, lambda: make_run(shapes))
    return state

  def statuses(self) -> Dict[str, str]:
    """Where each program came from: 'hit', 'miss', 'off', ..."""
    return {'init': self.init.status, 'run': self.run.status}

  def loop(self, state, *, first_step: int, total: int, per_call: int,
           units_per_step: float,
           record: Callable[[int, Any, Any], tuple],
           stop: Optional[StopFlag] = None,
           save: Optional[Callable[[int, Any, bool], None]] = None
           ) -> LoopResult:
    """Calls the run program until `total` steps or a stop request.

    Args:
      state: from `start` (or restored from a checkpoint).
      first_step: the step `state` is at (0, or a resume point).
      total: the step to stop at; each call advances `per_call` steps.
      units_per_step: progress units (env steps) per step, for the rate.
      record: `record(step, metrics, state) -> (rows, progress_fields)`,
        given the fetched metrics of the call that reached `step`.
      stop: checked after each call.
      save: `save(step, state, last)` after each call (a checkpoint when it
        is due, always when `last`).

    Returns:
      A `LoopResult`.
    """
    stop = stop or StopFlag()
    rows = read_rows(self.csv_path, self.key, first_step)
    appender = CsvAppender(self.csv_path, rows, enabled=self.primary)
    progress = common.Progress(total, unit=self.unit)
    step, calls, t_first = first_step, 0, None
    first_call_seconds = None
    while step < total and not stop.requested:
      state, metrics = self.run(state)
      metrics = multihost.fetch(metrics)
      calls += 1
      if first_call_seconds is None:
        first_call_seconds = time.time() - self._t0
        t_first = time.time()
        if self.verbose and self.cache.folder:
          print(f'executable cache: init {self.init.describe()}, run '
                f'{self.run.describe()}', flush=True)
      step += per_call
      new_rows, fields = record(step, metrics, state)
      rows += new_rows
      appender.append(new_rows)
      if self.verbose:
        progress.line(step, (step - first_step) * units_per_step, **fields)
      if save is not None:
        save(step, state, step >= total or stop.requested)
    return LoopResult(
        state=state, step=step, rows=rows,
        first_call_seconds=first_call_seconds, later_calls=max(calls - 1, 0),
        later_seconds=time.time() - t_first if t_first else 0.,
        stopped_early=stop.requested)
