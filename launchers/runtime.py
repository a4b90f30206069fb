"""Process set-up shared by the launcher apps: JAX's persistent compile cache
and host memory reuse.

Every app (train, evaluate, meta_train, quickstart, peer_check, grad_stats)
opens `main` with `start(argv, config)`; benchmark calls `setup()`. Compiled XLA programs are then kept
on disk in `--compilation_cache_dir` (default: JAX's own
`JAX_COMPILATION_CACHE_DIR` when set, else `~/.cache/lopt_rl/jax`), so a
second run of the same config skips compilation; `--compilation_cache_dir=`
(empty) turns the cache off.

`--reuse_host_memory` (on by default) makes glibc keep freed memory for the
next allocation (`lopt.host_memory`): XLA:CPU's large buffers then stop
paying page faults on every call. It is applied before JAX's first
computation.
"""

import os

from absl import app
from absl import flags
from absl import logging
import jax

from lopt import host_memory

DEFAULT_CACHE_DIR = (os.environ.get('JAX_COMPILATION_CACHE_DIR') or
                     os.path.join('~', '.cache', 'lopt_rl', 'jax'))

_CACHE_DIR = flags.DEFINE_string(
    'compilation_cache_dir', DEFAULT_CACHE_DIR,
    'Folder of the persistent XLA compilation cache; empty turns it off.')
_REUSE_MEMORY = flags.DEFINE_bool(
    'reuse_host_memory', True,
    "Keep freed host memory in glibc's heap for reuse (lopt.host_memory): "
    "XLA:CPU's large buffers then skip page faults on every call.")


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


def setup() -> str:
  """Applies the flags above; prints where the compile cache lives and
  whether host memory is reused."""
  memory = configure_host_memory()
  path = enable_compilation_cache(_CACHE_DIR.value)
  print(f'compilation cache: {path or "off"}; host memory reuse: {memory}',
        flush=True)
  return path


def start_quiet(argv) -> None:
  """`start` without printing (processes other than the first of a
  multi-process job)."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  configure_host_memory()
  enable_compilation_cache(_CACHE_DIR.value)
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
