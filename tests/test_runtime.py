"""launchers.lib.runtime: XLA:CPU's compile level is set before JAX's backend
starts, and a level the user gave, an accelerator or --nofast_cpu_compile
leave XLA_FLAGS as it was."""

import json
import os
import subprocess
import sys

# One process (the flag acts on the environment before JAX's backend
# starts): each case sets XLA_FLAGS / JAX_PLATFORMS and the absl flag, calls
# configure_compile and records its answer and the XLA_FLAGS it leaves;
# then the backend starts and a later call is too late.
_SCRIPT = """
import json, os, sys
from absl import flags
from launchers.lib import runtime
import jax
cases = [('default', '', '', []),
         ('user level', '--xla_backend_optimization_level=0', '', []),
         ('user other flag', '--xla_cpu_enable_fast_math=false', '', []),
         ('turned off', '', '', ['--nofast_cpu_compile']),
         ('accelerator', '', 'cuda', []),
         ('cpu named', '', 'cpu', [])]
out = {}
for name, xla, platforms, argv in cases:
  os.environ['XLA_FLAGS'] = xla
  os.environ['JAX_PLATFORMS'] = platforms
  flags.FLAGS.unparse_flags()
  flags.FLAGS(['x'] + argv)
  runtime._compile_level = ''
  out[name] = [runtime.configure_compile(), os.environ['XLA_FLAGS']]
out['again'] = [runtime.configure_compile(), os.environ['XLA_FLAGS']]
assert float(jax.numpy.ones(2).sum()) == 2.  # the backend starts with it
os.environ['XLA_FLAGS'] = ''
runtime._compile_level = ''
out['after the backend'] = [runtime.configure_compile(),
                            os.environ['XLA_FLAGS']]
print(json.dumps(out))
"""


def test_fast_cpu_compile_sets_the_level_only_where_it_should():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {k: v for k, v in os.environ.items()
         if k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}
  run = subprocess.run([sys.executable, '-c', _SCRIPT], check=True,
                       capture_output=True, text=True, cwd=root, env=env)
  got = json.loads(run.stdout.strip().splitlines()[-1])
  level1 = '--xla_backend_optimization_level=1'
  assert got['default'] == ['LLVM level 1', level1]
  assert got['user level'] == ['XLA_FLAGS sets the level',
                               '--xla_backend_optimization_level=0']
  assert got['user other flag'] == [
      'LLVM level 1', '--xla_cpu_enable_fast_math=false ' + level1]
  assert got['turned off'] == ['off', '']
  assert got['accelerator'] == ['accelerator', '']
  assert got['cpu named'] == ['LLVM level 1', level1]
  assert got['again'] == ['LLVM level 1', level1]  # idempotent
  assert got['after the backend'] == ['too late', '']
