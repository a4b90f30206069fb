"""The one place this project touches JAX's private internals (`jax._src`).

Each use is guarded: if a JAX release moves or renames what it needs, the
caller gets `JaxInternalsChanged`, whose message names the internal and the
installed JAX version, and falls back to public behaviour. Nothing on a
default path depends on these internals to be correct:

- `backends_started()`: whether JAX's backend is already up (then an
  XLA_FLAGS change can no longer act). Used by `runtime.configure_compile`.
- `compile_without_persistent_cache(lowered)`: compiles with JAX's
  persistent compilation cache off for this one compile. Used only by the
  opt-in executable cache (`launchers.lib.executable_cache`).

`PERSISTENT_CACHE_HIT` is the name of the public monitoring event
(`jax.monitoring`) that JAX records on a persistent-cache hit; the executable
cache listens for it. tests/test_executable_cache.py fails if JAX stops
recording it under this name.
"""

import logging

import jax

# The `jax.monitoring` event JAX records when its persistent compilation
# cache supplies a program.
PERSISTENT_CACHE_HIT = '/jax/compilation_cache/cache_hits'


class JaxInternalsChanged(RuntimeError):
  """A private JAX internal this project uses is missing in this release."""


def _internal(module: str, attribute: str):
  """`jax._src.<module>.<attribute>`, or JaxInternalsChanged naming it."""
  try:
    mod = __import__(f'jax._src.{module}', fromlist=[attribute])
    return getattr(mod, attribute)
  except (ImportError, AttributeError) as e:
    raise JaxInternalsChanged(
        f'jax._src.{module}.{attribute} is not in JAX {jax.__version__} '
        f'({type(e).__name__}: {e}); this project was written against JAX '
        '0.10. The feature that needs it falls back to public behaviour.'
    ) from e


def backends_started() -> bool:
  """True once JAX has started its backends (XLA_FLAGS is read then)."""
  return bool(_internal('xla_bridge', 'backends_are_initialized')())


def compile_without_persistent_cache(lowered, compiler_options=None):
  """`lowered.compile()` with JAX's persistent compilation cache off.

  JAX decides once per process whether that cache is used, so the decision
  is reset before this compile and again after it, when the cache's own
  setting is back. `compiler_options` are passed to the compile.
  """
  reset_cache = _internal('compilation_cache', 'reset_cache')
  enable_cache = _internal('config', 'enable_compilation_cache')
  # The resets log at INFO ('Resetting cache at ...'): not news to a user.
  log = logging.getLogger('jax._src.compilation_cache')
  level = log.level
  log.setLevel(max(level, logging.WARNING))
  try:
    with enable_cache(False):
      reset_cache()
      return lowered.compile(compiler_options=compiler_options)
  finally:
    reset_cache()
    log.setLevel(level)
