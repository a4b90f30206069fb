"""Process set-up shared by the launcher apps: XLA:CPU's compile level,
JAX's persistent compilation cache, and two opt-in runtime tools.

Every app opens `main` with `start(argv, config)`; benchmark calls
`setup()`. Flags:

- `--compilation_cache_dir` (on by default): JAX's public persistent
  compilation cache, in `JAX_COMPILATION_CACHE_DIR` when set, else
  `~/.cache/lopt_rl/jax`; a second run of the same config skips XLA's
  compile. Empty turns it off.
- `--fast_cpu_compile` (on by default): XLA:CPU's LLVM at optimisation level
  1 instead of 2 (`--xla_backend_optimization_level=1` appended to XLA_FLAGS
  before JAX starts its backend): compiles faster at the same speed. Not
  applied where XLA_FLAGS already sets the level, nor where an accelerator
  may run the job (the flag also sets GPU code generation).
- `--executable_cache` (opt-in): also keeps the whole compiled programs of
  meta-training and train.py in `<compilation_cache_dir>/executables`
  (`launchers.lib.executable_cache`), so a second run of the same config
  traces nothing either. Its entries are unpickled on load and it uses JAX
  internals (`launchers.lib.jax_compat`), hence off by default.
- `--reuse_host_memory` (opt-in): glibc keeps freed memory for the next
  allocation (`launchers.lib.host_memory`), so XLA:CPU's large buffers stop
  paying page faults on every call; helps single models of 1e5+
  coordinates, slows XLA's multi-threaded compiler.

docs/performance.md has the measured effect of each and the commands.
"""

import importlib.metadata
import importlib.util
import os
from typing import Optional

from absl import app
from absl import flags
from absl import logging
import jax

from launchers.lib import executable_cache as executable_cache_lib
from launchers.lib import jax_compat
from launchers.lib import host_memory

DEFAULT_CACHE_DIR = (os.environ.get('JAX_COMPILATION_CACHE_DIR') or
                     os.path.join('~', '.cache', 'lopt_rl', 'jax'))

_CACHE_DIR = flags.DEFINE_string(
    'compilation_cache_dir', DEFAULT_CACHE_DIR,
    'Folder of the persistent XLA compilation cache; empty turns it off.')
_REUSE_MEMORY = flags.DEFINE_bool(
    'reuse_host_memory', False,
    "Keep freed host memory in glibc's heap for reuse (launchers.lib.host_memory): "
    "XLA:CPU's large buffers then skip page faults on every call (faster "
    'on models of 1e5+ coordinates; compiles slower).')
_EXEC_CACHE = flags.DEFINE_bool(
    'executable_cache', False,
    'Keep whole compiled programs (meta-training, train.py) in '
    '<compilation_cache_dir>/executables, keyed on the config, the code and '
    'the machine (launchers.lib.executable_cache): a second run of the same config '
    'skips tracing as well as compiling. Off with the compilation cache.')
_FAST_COMPILE = flags.DEFINE_bool(
    'fast_cpu_compile', True,
    "XLA:CPU's LLVM at optimisation level 1 (XLA_FLAGS "
    '--xla_backend_optimization_level=1): compiles faster, runs as fast '
    'here. Skipped when XLA_FLAGS sets the level or an accelerator may '
    'run the job.')

FAST_COMPILE_FLAG = '--xla_backend_optimization_level=1'
_compile_level = ''  # what configure_compile applied, once it has
_executables_dir = ''  # set by setup / start_quiet


def accelerator_possible() -> bool:
  """True if JAX may run on something other than the CPU: JAX_PLATFORMS
  (or jax_platforms) names another platform, or, when it is unset, a TPU
  or GPU plugin is installed."""
  platforms = (os.environ.get('JAX_PLATFORMS') or jax.config.jax_platforms
               or '')
  if platforms:
    return any(p.strip() not in ('', 'cpu') for p in platforms.split(','))
  if importlib.util.find_spec('libtpu') is not None:
    return True
  return bool(importlib.metadata.entry_points(group='jax_plugins')) or any(
      importlib.util.find_spec(f'jax_{name}_plugin') is not None
      for name in ('cuda12', 'cuda13', 'rocm'))


def configure_compile() -> str:
  """Applies --fast_cpu_compile to XLA_FLAGS; returns what was done:
  'LLVM level 1', 'off', 'XLA_FLAGS sets the level', 'accelerator' or
  'too late' (JAX's backend had already started, so the flag cannot act).
  """
  global _compile_level
  if not _FAST_COMPILE.value:
    return 'off'
  if _compile_level:  # applied by an earlier call
    return _compile_level
  current = os.environ.get('XLA_FLAGS', '')
  if 'xla_backend_optimization_level' in current:
    return 'XLA_FLAGS sets the level'
  if accelerator_possible():
    return 'accelerator'
  try:
    if jax_compat.backends_started():
      return 'too late'
  except jax_compat.JaxInternalsChanged as e:
    logging.warning('fast_cpu_compile: cannot tell whether JAX has started '
                    '(%s); setting XLA_FLAGS anyway', e)
  os.environ['XLA_FLAGS'] = ' '.join((current, FAST_COMPILE_FLAG)).strip()
  _compile_level = 'LLVM level 1'
  return _compile_level


def configure_host_memory() -> str:
  """Applies --reuse_host_memory; returns 'on', 'off' or 'unavailable'
  (the C library is not glibc)."""
  if not _REUSE_MEMORY.value:
    return 'off'
  return 'on' if host_memory.reuse_freed_memory() else 'unavailable'


def enable_compilation_cache(path: str) -> str:
  """Turns on JAX's persistent compilation cache in `path` (created).

  Every compiled program is cached, however quick its compile, so a warm
  start skips all of them. Returns the absolute folder, or '' when `path` is
  empty (cache off).
  """
  if not path:
    return ''
  path = os.path.abspath(os.path.expanduser(path))
  os.makedirs(path, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)
  return path


def enable_executable_cache(cache_dir: str,
                            enabled: Optional[bool] = None) -> str:
  """Sets the folder of `executable_cache` (`cache_dir`/executables, or ''
  when `cache_dir` is empty or `enabled` is False; None: --executable_cache);
  returns it."""
  global _executables_dir
  if enabled is None and cache_dir:
    enabled = _EXEC_CACHE.value
  _executables_dir = (os.path.join(cache_dir, 'executables')
                      if cache_dir and enabled else '')
  return _executables_dir


def executable_cache(context, enabled: bool = True
                     ) -> executable_cache_lib.ExecutableCache:
  """An executable cache for programs that depend on `context` (a config
  dict; the files it names are stamped in too), in the folder set at
  start-up: off (plain jit) in a process that did not run `setup`, or
  when not `enabled`."""
  return executable_cache_lib.ExecutableCache(
      _executables_dir if enabled else '',
      context={'config': context,
               'files': executable_cache_lib.file_stamps(context)})


def setup() -> str:
  """Applies the flags above; prints XLA:CPU's compile level, where the
  compile caches live and whether host memory is reused."""
  level = configure_compile()
  memory = configure_host_memory()
  path = enable_compilation_cache(_CACHE_DIR.value)
  executables = enable_executable_cache(path)
  print(f'fast CPU compile: {level}; compilation cache: {path or "off"}; '
        f'executable cache: {"on" if executables else "off"}; '
        f'host memory reuse: {memory}', flush=True)
  return path


def start_quiet(argv) -> None:
  """`start` without printing (processes other than the first of a
  multi-process job)."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  configure_compile()
  configure_host_memory()
  enable_executable_cache(enable_compilation_cache(_CACHE_DIR.value))
  logging.set_verbosity(logging.WARNING)


def start(argv, config):
  """The opening of every app's `main`: no stray arguments, the compile
  cache, library INFO chatter off, and the whole config printed. Returns
  the config."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  setup()
  logging.set_verbosity(logging.WARNING)
  print(config, flush=True)
  return config
