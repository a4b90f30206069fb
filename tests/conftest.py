"""Suite-wide settings, applied before JAX starts a backend.

The tests use tiny configs, so XLA's compile time is most of the suite's
time. LLVM optimisation level 0 compiles the same programs about 40% faster
here (tests/test_meta.py: 99 s -> 57 s for three tests) and runs them
slower, which tiny configs do not feel. XLA:CPU's older loop emitters
(`--xla_cpu_use_fusion_emitters=false`) compile them another 20-30% faster
(a tiny Catch meta-training run: 16-19 s -> 13-14 s, an A2C run 4.3-5.5 s
-> 3.1-3.4 s; they run long programs slower). Tests that spawn processes
pass the flags on (`xla_flags`). The one run-time-heavy test, the plain PPO
loop, runs in a process of its own at XLA's default level.
"""

import os
import shutil
import tempfile

FAST_COMPILE = ('--xla_backend_optimization_level=0 '
                '--xla_cpu_use_fusion_emitters=false')
# One persistent XLA compilation cache for the run, shared by both xdist
# workers and the processes tests start (they inherit the environment):
# many tests build the same programs (the tiny meta-training and A2C
# configs, in-process and in launcher subprocesses), and each is then
# compiled once. Removed when the run ends.
# (The controller sets it before it starts the workers.)
_OWN_CACHE = os.path.join(tempfile.gettempdir(),
                          f'lopt_test_xla_cache_{os.getpid()}')
CACHE_DIR = os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', _OWN_CACHE)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')


def xla_flags(*extra: str) -> str:
  """XLA_FLAGS for a test's subprocess: the suite's plus `extra`."""
  return ' '.join((os.environ.get('XLA_FLAGS', ''),) + extra).strip()


if 'xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = xla_flags(FAST_COMPILE)


# The longest files (minutes each, mostly subprocesses and compiles) start
# first, so that `-n 2 --dist loadfile` does not end on one of them while
# the other worker idles: longest-first balances the two workers.
LONGEST_FIRST = ('test_plain_loop.py', 'test_multihost.py',
                 'test_meta_resume.py', 'test_peer_check.py',
                 'test_factory.py', 'test_meta_devices.py', 'test_meta.py')


def pytest_collection_modifyitems(config, items):
  del config
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)),
                                       len(LONGEST_FIRST)))


def pytest_unconfigure(config):
  if not hasattr(config, 'workerinput') and CACHE_DIR == _OWN_CACHE:
    shutil.rmtree(CACHE_DIR, ignore_errors=True)  # after the workers end
