"""Process set-up shared by the launcher apps: JAX's persistent compile cache.

Every app (train, evaluate, meta_train, quickstart, peer_check, grad_stats)
opens `main` with `start(argv, config)`; benchmark calls `setup()`. Compiled XLA programs are then kept
on disk in `--compilation_cache_dir` (default: JAX's own
`JAX_COMPILATION_CACHE_DIR` when set, else `~/.cache/lopt_rl/jax`), so a
second run of the same config skips compilation; `--compilation_cache_dir=`
(empty) turns the cache off.
"""

import os

from absl import app
from absl import flags
from absl import logging
import jax

DEFAULT_CACHE_DIR = (os.environ.get('JAX_COMPILATION_CACHE_DIR') or
                     os.path.join('~', '.cache', 'lopt_rl', 'jax'))

_CACHE_DIR = flags.DEFINE_string(
    'compilation_cache_dir', DEFAULT_CACHE_DIR,
    'Folder of the persistent XLA compilation cache; empty turns it off.')


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
  """Applies the flags above; prints where the compile cache lives."""
  path = enable_compilation_cache(_CACHE_DIR.value)
  print(f'compilation cache: {path or "off"}', flush=True)
  return path


def start_quiet(argv) -> None:
  """`start` without printing (processes other than the first of a
  multi-process job)."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
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
