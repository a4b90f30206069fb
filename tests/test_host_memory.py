"""launchers.lib.host_memory: freed buffers are reused, so repeated calls stop
faulting in fresh pages (counted, not timed)."""

import os
import subprocess
import sys

import pytest

from launchers.lib import host_memory

# One process per setting: mallopt acts on the whole process and must come
# before JAX's first computation (and in a test worker it would slow the
# compiles of every later test: one heap for all threads). Prints the minor
# page faults per call of a jitted op whose output is a fresh 64 MiB buffer
# each call.
_SCRIPT = """
import resource, sys
from launchers.lib import host_memory
if sys.argv[1] == 'on':
  assert host_memory.reuse_freed_memory()
  assert host_memory.reuse_freed_memory()  # idempotent
import jax, jax.numpy as jnp
f = jax.jit(lambda x: x * 2. + 1.)
x = jnp.ones((16 * 2 ** 20,), jnp.float32)
y = jax.block_until_ready(f(x))
assert float(y[0]) == 3.
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
# JAX frees an output a few calls after its last use, so the heap reaches
# its steady state after a handful of calls: count after those, per call,
# and take the median (a busy machine can delay a free by a call or two).
for _ in range(20):
  del y
  y = jax.block_until_ready(f(x))
counts = []
for _ in range(11):
  start = faults()
  del y
  y = jax.block_until_ready(f(x))
  counts.append(faults() - start)
print(sorted(counts)[len(counts) // 2])
"""


def _faults_per_call(setting: str) -> float:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run(
      [sys.executable, '-c', _SCRIPT, setting], check=True,
      capture_output=True, text=True, cwd=root,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not host_memory.is_available(),
                    reason='needs glibc malloc')
def test_reuse_stops_page_faults_of_fresh_buffers():
  # 64 MiB = 16,384 pages of 4 KiB: without reuse each call maps its output
  # anew and faults in most of them; with reuse it lands on mapped pages.
  off, on = _faults_per_call('off'), _faults_per_call('on')
  assert off > 4000, off
  assert on < 200, on
