"""Suite-wide settings, applied before JAX starts a backend.

The tests use tiny configs, so XLA's compile time is most of the suite's
time. LLVM optimisation level 0 compiles the same programs about 40% faster
here (tests/test_meta.py: 99 s -> 57 s for three tests) and runs them
slower, which tiny configs do not feel. Tests that spawn processes pass the
flag on (`xla_flags`). The one run-time-heavy test, the plain PPO loop,
runs in a process of its own at XLA's default level.
"""

import os

FAST_COMPILE = '--xla_backend_optimization_level=0'


def xla_flags(*extra: str) -> str:
  """XLA_FLAGS for a test's subprocess: the suite's plus `extra`."""
  return ' '.join((os.environ.get('XLA_FLAGS', ''),) + extra).strip()


if 'xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = xla_flags(FAST_COMPILE)
