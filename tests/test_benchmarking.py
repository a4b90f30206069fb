"""launchers.lib.benchmarking's profile summary, on a hand-written trace and a real one."""

import gzip
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from launchers.lib import benchmarking


def _write(path, events):
  with gzip.open(path, 'wt') as f:
    json.dump({'traceEvents': events}, f)
  return str(path)


def test_profile_by_op_sums_self_time_by_op_and_kind(tmp_path):
  x = lambda name, ts, dur, tid=1: {'ph': 'X', 'name': name, 'ts': ts,
                                    'dur': dur, 'pid': 1, 'tid': tid}
  events = [
      {'ph': 'M', 'name': 'thread_name', 'pid': 1, 'tid': 1},
      x('$profiler.py:307 trace', 0, 1000),         # host: left out
      x('PjitFunction(run)', 0, 900),
      x('ThunkExecutor::Execute (wait)', 0, 900),
      x('while.3', 10, 500),                        # encloses two ops
      x('loop_fusion.1', 20, 100),
      x('dot.7', 200, 250),
      x('loop_fusion.2', 600, 50),
      x('dot.8', 0, 30, tid=2),                     # another thread
      x('end: dot.8', 40, 1, tid=2),
  ]
  out = benchmarking.profile_by_op(_write(tmp_path / 't.trace.json.gz',
                                          events))
  ops = {name: ms for name, ms, _ in out['ops']}
  assert ops == pytest.approx({'while.3': 0.15, 'loop_fusion.1': 0.1,
                               'dot.7': 0.25, 'loop_fusion.2': 0.05,
                               'dot.8': 0.03})
  kinds = {name: (ms, share) for name, ms, share in out['kinds']}
  assert kinds['dot'][0] == pytest.approx(0.28)
  assert kinds['loop_fusion'][0] == pytest.approx(0.15)
  np.testing.assert_allclose(out['total_ms'][0], 0.58)
  np.testing.assert_allclose(sum(s for _, _, s in out['kinds']), 1.)
  assert [n for n, _, _ in out['kinds']][0] == 'dot'  # largest first


def test_profile_of_a_real_trace_names_xla_ops(tmp_path):
  f = jax.jit(lambda a, w: jnp.tanh(a @ w).sum())
  a, w = jnp.ones((256, 64)), jnp.ones((64, 64))
  f(a, w).block_until_ready()
  with jax.profiler.trace(str(tmp_path)):
    f(a, w).block_until_ready()
  out = benchmarking.profile_by_op(benchmarking.trace_file(str(tmp_path)))
  names = [n for n, _, _ in out['ops']]
  assert names and out['total_ms'][0] > 0
  assert not any(n.startswith('$') or '::' in n for n in names)
  with pytest.raises(FileNotFoundError, match='no \\*.trace.json.gz'):
    benchmarking.trace_file(str(tmp_path / 'empty'))


def test_update_row_reports_flops_bytes_and_both_peaks():
  import lopt  # pylint: disable=g-import-not-at-top
  n = 512
  rows = {}
  for impl in ('haiku', 'fused'):
    lo = lopt.learned_optimizer(cell='linear', hidden_size=2, mlp_dims=(),
                                implementation=impl)
    rows[impl] = benchmarking.update_row(lo, n, backward=False,
                                         peak_gflops=100., peak_gbs=10.,
                                         adam=1e-3, repeats=1)
  plain, fused = rows['haiku'], rows['fused']
  assert plain['flops_per_coord'] > 0
  # The fused kernel is scored with the plain maths' FLOPs, but with its own
  # program's bytes: the kernel
  # computes the whole step, so g in and the update out and its state read
  # and written (hidden 2): at least 4 x 6 bytes a coordinate, and fewer
  # than the plain module's intermediates.
  assert fused['flops_per_coord'] == plain['flops_per_coord']
  assert 4 * (2 + 2 * 2) <= fused['bytes_per_coord'] < plain[
      'bytes_per_coord']
  # At least g read and the update written, 4 bytes each, per coordinate.
  assert plain['bytes_per_coord'] >= 8
  seconds = plain['ms'] / 1e3
  np.testing.assert_allclose(
      plain['gbs'], plain['bytes_per_coord'] * n / seconds / 1e9, rtol=1e-6)
  np.testing.assert_allclose(plain['share_of_bandwidth'], plain['gbs'] / 10.)
  np.testing.assert_allclose(plain['share_of_peak'], plain['gflops'] / 100.)
  np.testing.assert_allclose(plain['vs_adam'], seconds / 1e-3)
  assert benchmarking.bandwidth_peak_gbs(n=2 ** 16, repeats=2) > 0
