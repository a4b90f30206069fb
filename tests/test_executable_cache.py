"""launchers.lib.executable_cache: a hit traces nothing and equals the compiled
program; any change of context, shapes or files misses; a bad entry is
rewritten. (Across processes: tests/test_meta_resume.py, whose resumed
launcher runs load the meta-training programs and end bitwise equal.)"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
from jax.experimental import serialize_executable
import numpy as np
import pytest

from launchers.lib import executable_cache


def _traced_fn(traces):
  def f(x, y):
    traces.append(x.shape)
    return x * 2. + y, jnp.sum(x * y)
  return lambda: jax.jit(f, donate_argnums=0)


def _entries(folder):
  return sorted(n for n in os.listdir(folder) if n.endswith('.exe'))


def test_second_cache_loads_without_tracing_and_donates(tmp_path):
  traces = []
  y = jnp.arange(3.)
  first = executable_cache.ExecutableCache(str(tmp_path), {'lr': 1e-3})
  f = first.wrap('f', _traced_fn(traces))
  a = f(jnp.ones(3), y)
  assert f.status == 'miss' and len(traces) == 1
  assert len(_entries(tmp_path)) == 1
  again = executable_cache.ExecutableCache(str(tmp_path), {'lr': 1e-3})
  again.prefetch('f')  # loads in a thread; the call below takes it
  g = again.wrap('f', _traced_fn(traces))
  x = jnp.ones(3)
  b = g(x, y)
  assert g.status == 'hit' and len(traces) == 1  # nothing traced
  assert x.is_deleted()  # the loaded program still donates its argument
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  np.testing.assert_array_equal(b[0], [2., 3., 4.])
  # Another context, or other shapes: another program.
  other = executable_cache.ExecutableCache(str(tmp_path), {'lr': 3e-4})
  h = other.wrap('f', _traced_fn(traces))
  h(jnp.ones(3), y)
  assert h.status == 'miss'
  g(jnp.ones(4), jnp.ones(4))
  assert g.status == 'miss' and traces[-1] == (4,)
  assert len(_entries(tmp_path)) == 3
  # A prefetch loads the latest entry (shape 4): a call of shape 3 leaves
  # it and loads its own.
  later = executable_cache.ExecutableCache(str(tmp_path), {'lr': 1e-3})
  later.prefetch('f')
  k = later.wrap('f', _traced_fn(traces))
  np.testing.assert_array_equal(k(jnp.ones(3), y)[0], [2., 3., 4.])
  assert k.status == 'hit' and traces[-1] == (4,)


def test_bad_entry_is_a_miss_and_is_rewritten(tmp_path):
  traces = []
  cache = executable_cache.ExecutableCache(str(tmp_path))
  cache.wrap('f', _traced_fn(traces))(jnp.ones(2), jnp.ones(2))
  (name,) = _entries(tmp_path)
  (tmp_path / name).write_bytes(b'not a pickle')
  f = cache.wrap('f', _traced_fn(traces))
  out, _ = f(jnp.ones(2), jnp.ones(2))
  assert f.status.startswith('miss (unreadable entry, rewritten: ')
  np.testing.assert_array_equal(out, [3., 3.])
  g = cache.wrap('f', _traced_fn(traces))
  g(jnp.ones(2), jnp.ones(2))
  assert g.status == 'hit' and len(traces) == 2


def test_off_unserializable_and_pruned(tmp_path, monkeypatch):
  traces = []
  off = executable_cache.ExecutableCache('').wrap('f', _traced_fn(traces))
  np.testing.assert_array_equal(off(jnp.ones(2), jnp.ones(2))[0], [3., 3.])
  assert off.status == 'off'
  with pytest.raises(ValueError, match='max_entries: must be >= 1, got 0'):
    executable_cache.ExecutableCache(str(tmp_path), max_entries=0)
  cache = executable_cache.ExecutableCache(str(tmp_path), max_entries=2)
  f = cache.wrap('f', _traced_fn(traces))
  for n in (1, 2, 3):
    f(jnp.ones(n), jnp.ones(n))
  assert len(_entries(tmp_path)) == 2  # the oldest removed
  def full_disk(**kwargs):
    raise OSError(28, 'No space left on device')
  monkeypatch.setattr(executable_cache.tempfile, 'mkstemp', full_disk)
  np.testing.assert_array_equal(f(jnp.ones(4), jnp.ones(4))[0], [3.] * 4)
  assert f.status == 'not cached (write: [Errno 28] No space left on device)'
  def refuse(compiled):
    raise ValueError('Compilation does not support serialization')
  monkeypatch.setattr(serialize_executable, 'serialize', refuse)
  f(jnp.ones(5), jnp.ones(5))
  assert f.status.startswith('not cached (ValueError')
  assert len(_entries(tmp_path)) == 2
  # Entries unpickle: a folder others may write is not used.
  shared = tmp_path / 'shared'
  shared.mkdir(mode=0o777)
  os.chmod(shared, 0o777)
  g = executable_cache.ExecutableCache(str(shared)).wrap('f', _traced_fn(traces))
  np.testing.assert_array_equal(g(jnp.ones(2), jnp.ones(2))[0], [3., 3.])
  assert g.status == f'off ({shared} is writable by others)'
  assert not os.listdir(shared)


def test_without_jaxs_internals_a_miss_compiles_as_jit(tmp_path,
                                                       monkeypatch):
  # `_compile_without_jax_cache` uses JAX internals; where they are gone, a
  # miss compiles with JAX's cache, and is written unless that cache
  # supplied it (its entry would fail in another process).
  def gone(lowered):
    raise ImportError('no compilation_cache.reset_cache')
  monkeypatch.setattr(executable_cache, '_compile_without_jax_cache', gone)
  traces = []
  f = executable_cache.ExecutableCache(str(tmp_path)).wrap(
      'f', _traced_fn(traces))
  np.testing.assert_array_equal(f(jnp.ones(2), jnp.ones(2))[0], [3., 3.])
  assert f.status == 'miss' and len(_entries(tmp_path)) == 1
  compile_lowered = jax.stages.Lowered.compile

  def from_jax_cache(self, *args, **kwargs):  # as a hit of JAX's cache
    jax.monitoring.record_event('/jax/compilation_cache/cache_hits')
    return compile_lowered(self, *args, **kwargs)
  monkeypatch.setattr(jax.stages.Lowered, 'compile', from_jax_cache)
  np.testing.assert_array_equal(f(jnp.ones(3), jnp.ones(3))[0], [3.] * 3)
  assert f.status == (
      "not cached (from JAX's compilation cache; compiling without it: "
      'ImportError: no compilation_cache.reset_cache)')
  assert len(_entries(tmp_path)) == 1


def test_files_named_in_the_context_are_stamped(tmp_path):
  path = tmp_path / 'meta_params.npz'
  path.write_bytes(b'12')
  cfg = {'meta': {'init_path': str(path), 'lr': 1.}, 'envs': ['catch']}
  before = executable_cache.file_stamps(cfg)
  assert list(before) == [str(path)]
  path.write_bytes(b'123')
  assert executable_cache.file_stamps(cfg) != before
  assert executable_cache.file_stamps({'a': 'no/such/file'}) == {}


def test_a_miss_is_compiled_without_jaxs_compilation_cache(tmp_path):
  # XLA:CPU serializes an executable that JAX's persistent compilation cache
  # supplied without its kernels' code; loaded in a new process, that entry
  # failed when run ('Function ... not found'). A miss is compiled with
  # that cache off, then written. Each step is its own
  # process, as the caches are only read across processes.
  script = textwrap.dedent("""
      import os
      import sys
      import jax
      import jax.numpy as jnp
      from launchers.lib import executable_cache
      jax.config.update('jax_compilation_cache_dir', sys.argv[1])
      jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.)
      jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)
      def f(x):
        return jnp.sum(jnp.broadcast_to(x[1:6], (4, 5)) * 3.) + jnp.sum(
            jnp.tanh(x[:3]))
      x = jnp.arange(20.)
      if sys.argv[3] == 'jit':  # fills JAX's cache only
        print(float(jax.jit(f)(x)))
      else:
        if sys.argv[3] == 'jit+cache':  # loaded from JAX's cache first
          jax.block_until_ready(jax.jit(f)(x))
        run = executable_cache.ExecutableCache(sys.argv[2]).wrap(
            'f', lambda: jax.jit(f))
        value = float(run(x))
        # JAX's cache is in use again afterwards: it writes a new program
        # (one for each process).
        before = len(os.listdir(sys.argv[1]))
        jax.block_until_ready(jax.jit(lambda y: y * float(sys.argv[4]))(x))
        assert len(os.listdir(sys.argv[1])) > before
        print(value, run.status)
  """)
  processes = []

  def step(what):
    processes.append(what)
    out = subprocess.run(
        [sys.executable, '-c', script, str(tmp_path / 'jax'),
         str(tmp_path / 'exe'), what, str(len(processes))],
        capture_output=True, text=True,
        check=False, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()

  want = step('jit')[0]
  # JAX's cache holds the program: compiled without it, and written.
  assert step('cache')[1:] == ['miss']
  assert len(_entries(tmp_path / 'exe')) == 1
  assert step('cache') == [want, 'hit']  # runs in another process
  # The same, after this process got the program from JAX's cache.
  os.remove(tmp_path / 'exe' / _entries(tmp_path / 'exe')[0])
  assert step('jit+cache') == [want, 'miss']
  assert step('cache') == [want, 'hit']


def test_jax_records_the_persistent_cache_hit_event(tmp_path):
  # The executable cache's guard against writing a program that JAX's
  # persistent cache supplied listens for this public monitoring event: if
  # JAX renames it, the guard is silently off, so this test fails instead.
  script = textwrap.dedent("""
      import sys
      import jax
      import jax.numpy as jnp
      from launchers.lib import jax_compat
      hits = []
      jax.monitoring.register_event_listener(
          lambda event, **kw: hits.append(event)
          if event == jax_compat.PERSISTENT_CACHE_HIT else None)
      jax.config.update('jax_compilation_cache_dir', sys.argv[1])
      jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.)
      jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)
      jax.block_until_ready(jax.jit(lambda x: jnp.tanh(x) * 3.)(jnp.ones(7)))
      print(len(hits))
  """)

  def hits():
    out = subprocess.run([sys.executable, '-c', script, str(tmp_path)],
                         capture_output=True, text=True, check=False,
                         env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.split()[-1])

  assert hits() == 0  # compiled and written
  assert hits() >= 1  # read back in a new process: the event fired


def test_jax_internals_are_named_when_missing():
  from launchers.lib import jax_compat  # pylint: disable=g-import-not-at-top
  with pytest.raises(jax_compat.JaxInternalsChanged,
                     match=r'jax\._src\.no_such_module\.thing is not in JAX'):
    jax_compat._internal('no_such_module', 'thing')  # pylint: disable=protected-access
  with pytest.raises(jax_compat.JaxInternalsChanged,
                     match=r'jax\._src\.xla_bridge\.no_such_thing'):
    jax_compat._internal('xla_bridge', 'no_such_thing')  # pylint: disable=protected-access
  jax.block_until_ready(jax.numpy.ones(2) + 1.)
  assert jax_compat.backends_started()
