"""What one learned-optimizer update costs, against optax.adam and the machine.

Used by `python -m launchers.benchmark --mode=opt`. Every figure of one run
comes from the same process, so ratios are meaningful on a shared machine:

* `matmul_peak_gflops()`: a jitted 2048 x 2048 float32 matmul, the machine's
  practical FLOP peak here;
* `bandwidth_peak_gbs()`: a jitted elementwise `x / 2 + 1` on 128 MiB of
  float32 in place, read once and written once: the practical memory
  bandwidth;
* `update_row(...)`: median wall time of one learned-optimizer update on `N`
  coordinates (forward alone, or forward + backward w.r.t. the meta-params,
  which is what meta-training pays), its XLA cost-analysis FLOPs and bytes
  accessed (every op's operands and outputs, so an upper bound on memory
  traffic), achieved GFLOP/s and GB/s and their shares of the two peaks (a
  roofline: which of the two bounds the update), and the ratio to
  `optax.adam` on the same `N`. Compile time is reported apart from the
  timed calls.
"""

import time
from typing import Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt import optimizer as optimizer_lib


def _median_seconds(fn: Callable, *args, repeats: int = 5) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _compile(fn: Callable, *args, donate: Tuple[int, ...] = ()):
  """(compiled function, compile seconds, XLA cost analysis).

  The cost analysis is {'flops': ..., 'bytes accessed': ...} (NaN where XLA
  gives none).
  """
  start = time.perf_counter()
  compiled = jax.jit(fn, donate_argnums=donate).lower(*args).compile()
  seconds = time.perf_counter() - start
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
    cost = cost[0] if cost else {}
  cost = cost or {}
  return compiled, seconds, {k: float(cost.get(k, float('nan')))
                             for k in ('flops', 'bytes accessed')}


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
  """GFLOP/s of a jitted n x n float32 matmul (median of `repeats`)."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
  compiled, _, _ = _compile(jnp.matmul, a, b)
  jax.block_until_ready(compiled(a, b))
  return 2. * n ** 3 / _median_seconds(compiled, a, b, repeats=repeats) / 1e9


def bandwidth_peak_gbs(n: int = 2 ** 25, repeats: int = 10) -> float:
  """GB/s of a jitted `x / 2 + 1` on n float32 (read n, write n; median).

  In place (the input donated): a fresh n-float output per call would time
  the page faults of its first touch (about 1.5 GB/s here), not the memory.
  """
  step = jax.jit(lambda x: 0.5 * x + 1., donate_argnums=0)
  x = jax.block_until_ready(step(jnp.ones((n,), jnp.float32)))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    x = jax.block_until_ready(step(x))
    times.append(time.perf_counter() - start)
  return 2. * 4. * n / float(np.median(times)) / 1e9


def _gradients(num_coords: int) -> jax.Array:
  """Gradients spanning many decades, as RL agents' do."""
  k1, k2 = jax.random.split(jax.random.PRNGKey(2))
  scale = 10. ** jax.random.uniform(k1, (num_coords,), minval=-8., maxval=0.)
  return jax.random.normal(k2, (num_coords,)) * scale


# Updates per timed call of an update's forward: a training loop's, in a
# scan that carries the optimizer's state and applies each update to the
# params. So the state stays in its buffers from update to update (the fused
# kernel writes it in place), as in an agent's training, and a call's
# dispatch is spread over LOOP updates.
LOOP = 10


def _loop(update: Callable) -> Callable:
  """`run(g, state) -> (params, state)`: LOOP updates `update(g, state) ->
  (updates, state)`, each added to params (from zero)."""

  def run(g, state):
    def body(carry, _):
      params, state = carry
      updates, state = update(g, state)
      return (params + updates, state), None
    return jax.lax.scan(body, (jnp.zeros_like(g), state), None,
                        length=LOOP)[0]

  return run


def _loop_seconds(update: Callable, g, state, repeats: int) -> float:
  """Median seconds of one update `update(g, state)` in a loop (`_loop`)."""
  compiled, _, _ = _compile(_loop(update), g, state)
  jax.block_until_ready(compiled(g, state))
  return _median_seconds(compiled, g, state, repeats=repeats) / LOOP


def adam_seconds(num_coords: int, repeats: int = 5) -> float:
  """Median seconds of one optax.adam update on `num_coords`, in a loop of
  LOOP (`_loop`)."""
  opt = optax.adam(1e-3)
  g = _gradients(num_coords)
  return _loop_seconds(opt.update, g, opt.init(g), repeats)


def _update_fn(lo, num_coords: int, backward: bool):
  """(fn(meta_params, g, state), its arguments) of one update."""
  meta_params = lo.init(jax.random.PRNGKey(0))
  g = _gradients(num_coords)
  state = lo.opt_fn(meta_params, 1e-3).init(g)
  if not backward:
    return (lambda mp, g, state: lo.opt_fn(mp, 1e-3).update(g, state),
            (meta_params, g, state))
  weights = jax.random.normal(jax.random.PRNGKey(3), (num_coords,))

  def fn(mp, g, state):
    def scalar(mp):
      updates, new_state = lo.opt_fn(mp, 1e-3).update(g, state)
      return jnp.sum(updates * weights), new_state
    return jax.value_and_grad(scalar, has_aux=True)(mp)

  return fn, (meta_params, g, state)


def update_cost(lo, num_coords: int, backward: bool) -> Dict[str, float]:
  """XLA cost analysis of one update: flops, bytes accessed (not run)."""
  fn, args = _update_fn(lo, num_coords, backward)
  return _compile(fn, *args, donate=() if backward else (2,))[2]


def update_row(lo: optimizer_lib.LearnedOptimizer, num_coords: int, *,
               backward: bool, peak_gflops: float,
               peak_gbs: Optional[float] = None,
               adam: Optional[float] = None, repeats: int = 5) -> Dict:
  """Times one update of `lo` on `num_coords` coordinates: the forward in a
  loop of LOOP updates, as training runs it (`_loop`); forward and backward
  (the meta-gradient) one call at a time. FLOPs and bytes are one update's.

  Args:
    lo: the learned optimizer.
    num_coords: N.
    backward: also differentiate a scalar of the update w.r.t. the
      meta-params (value_and_grad), as meta-training does.
    peak_gflops: the matmul peak measured in this process.
    peak_gbs: the bandwidth peak measured in this process, if measured.
    adam: seconds of optax.adam on the same N (for the ratio), if measured.
    repeats: timed calls (median).

  Returns:
    A dict row: seconds, compile seconds, FLOPs and bytes accessed per
    coordinate, GFLOP/s and GB/s, their shares of the peaks, ratio to Adam.
  """
  fn, (meta_params, g, state) = _update_fn(lo, num_coords, backward)
  # The forward's cost with its state donated, as in the loop it is timed
  # in (no copy of a state that is still needed).
  compiled, compile_s, cost = _compile(fn, meta_params, g, state,
                                       donate=() if backward else (2,))
  if lo.implementation != 'haiku':
    # XLA counts nothing inside a custom call (the fused kernel): take the
    # FLOPs of the same maths from the plain Haiku implementation instead.
    # The fused program's bytes are its own ops'
    # (as XLA counts them) plus every operand and result of the kernel's
    # calls in it.
    plain = optimizer_lib.learned_optimizer(config=lo.config,
                                            implementation='haiku')
    plain_cost = update_cost(plain, num_coords, backward=backward)
    if lo.implementation == 'fused':
      from lopt.cell_runtime import fused as fused_cell  # pylint: disable=g-import-not-at-top
      plain_cost['bytes accessed'] = cost['bytes accessed'] + (
          fused_cell.custom_call_bytes(compiled.as_text()))
    cost = plain_cost
  flops, nbytes = cost['flops'], cost['bytes accessed']
  if backward:
    jax.block_until_ready(compiled(meta_params, g, state))
    seconds = _median_seconds(compiled, meta_params, g, state,
                              repeats=repeats)
  else:
    seconds = _loop_seconds(lo.opt_fn(meta_params, 1e-3).update, g, state,
                            repeats)
  gflops = flops / seconds / 1e9
  gbs = nbytes / seconds / 1e9
  return {
      'cell': lo.name,
      'mlp_dims': 'x'.join(map(str, lo.config.mlp_dims)) or 'none',
      'pass': 'fwd+bwd' if backward else 'fwd',
      'coords': num_coords,
      'ms': seconds * 1e3,
      'compile_s': compile_s,
      'flops_per_coord': flops / num_coords,
      'gflops': gflops,
      'share_of_peak': gflops / peak_gflops,
      'bytes_per_coord': nbytes / num_coords,
      'gbs': gbs,
      'share_of_bandwidth': None if peak_gbs is None else gbs / peak_gbs,
      'adam_ms': None if adam is None else adam * 1e3,
      'vs_adam': None if adam is None else seconds / adam,
  }


# Host-side events of a jax.profiler trace (Python frames, the runtime's
# dispatch and waits); everything else on the trace is an XLA op (a thunk
# named after its HLO instruction: 'loop_fusion.3', 'ynn_fusion', 'dot.2').
_HOST_PREFIXES = ('$', 'PjitFunction', 'end: ')


def _is_host_event(name: str) -> bool:
  return name.startswith(_HOST_PREFIXES) or '::' in name or ' ' in name


def op_kind(name: str) -> str:
  """An HLO op's kind: its name without the '.N' suffix ('loop_fusion')."""
  base, _, suffix = name.rpartition('.')
  return base if base and suffix.isdigit() else name


def profile_by_op(trace_file: str, top: int = 15) -> Dict[str, list]:
  """XLA op time of a jax.profiler trace (`*.trace.json.gz`), summed.

  Self time (an op's duration less that of the ops nested in it, e.g. a
  `while` loop's body) per op name and per op kind, largest first, with
  its share of all op time. Returns {'ops': [(name, ms, share)],
  'kinds': [(kind, ms, share)], 'total_ms': [total]}.
  """
  import gzip  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  with gzip.open(trace_file) as f:
    trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  by_thread = {}
  for e in events:
    if e.get('ph') == 'X' and 'dur' in e and not _is_host_event(e['name']):
      by_thread.setdefault((e.get('pid'), e.get('tid')), []).append(e)
  self_us = {}
  for evs in by_thread.values():
    evs.sort(key=lambda e: (e['ts'], -e['dur']))
    stack = []  # [end time, name] of the enclosing ops
    for e in evs:
      while stack and stack[-1][0] <= e['ts']:
        stack.pop()
      if stack:  # nested: its time is not its parent's own
        self_us[stack[-1][1]] = self_us.get(stack[-1][1], 0.) - e['dur']
      self_us[e['name']] = self_us.get(e['name'], 0.) + e['dur']
      stack.append([e['ts'] + e['dur'], e['name']])
  total = sum(self_us.values()) or 1.
  kinds = {}
  for name, us in self_us.items():
    kinds[op_kind(name)] = kinds.get(op_kind(name), 0.) + us
  rank = lambda d: [(k, v / 1e3, v / total) for k, v in
                    sorted(d.items(), key=lambda kv: -kv[1])[:top]]
  return {'ops': rank(self_us), 'kinds': rank(kinds),
          'total_ms': [total / 1e3]}


def trace_file(directory: str) -> str:
  """The newest `*.trace.json.gz` that jax.profiler wrote under `directory`."""
  import glob  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  files = glob.glob(os.path.join(directory, '**', '*.trace.json.gz'),
                    recursive=True)
  if not files:
    raise FileNotFoundError(f'{directory}: no *.trace.json.gz (jax.profiler '
                            'writes one per trace)')
  return max(files, key=os.path.getmtime)
