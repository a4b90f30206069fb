"""Compiled programs kept on disk across processes, tracing skipped.

JAX's persistent compilation cache skips XLA's compile on a second run, but
not the Python trace and the lowering that compute its key, which are most
of a cache hit's time for meta-training's large programs. This cache keeps the whole compiled executable
(`jax.experimental.serialize_executable`) under a key of everything the
program can depend on, so a hit traces nothing:

- a name and a caller's `context` (the config; JSON),
- the arguments' tree structure, shapes, dtypes and shardings,
- the code: the installed distributions (name and version) and every
  file of the packages loaded from elsewhere (this project's, the
  caller's; path, size and modification time), taken at the first key,
- the environment: Python, JAX and jaxlib versions, JAX's config values,
  JAX_* and XLA_* environment variables (XLA_FLAGS), the devices, and the
  CPU (model and feature flags, as XLA:CPU compiles for the host).

Anything else the program reads at trace time (a file it loads, a global
changed in memory) must be in `context`; `file_stamps` adds the size and a
content hash of every existing file a config names. A miss compiles as
`jax.jit` would and writes the entry (atomically: a crash leaves no partial
entry); a corrupt entry is a miss that is rewritten; a program that cannot
be serialized, or a folder that cannot be written, costs the entry, not the
run. A miss is compiled with JAX's persistent compilation cache off: XLA:CPU
serializes an executable loaded from that cache without its kernels' code,
and its entry would fail when run in another process (and a miss is
written, so it needs a compile of its own anyway). The folder keeps the
`max_entries` most recently used entries (no cap on their size: a few MB
each for this project's CPU programs).

Loading an entry unpickles it, which can run code: the folder is created
private (0700), and one that another user owns or others may write is not
used. Single-process only: with `jax.process_count() > 1` every call
compiles as plain jit.

    cache = ExecutableCache('/tmp/exe', context=cfg.to_dict())
    run = cache.wrap('meta_run', lambda: trainer.run)
    state, metrics = run(state)   # compiled or loaded on the first call
    run.status                    # 'hit', 'miss', ...
"""

import hashlib
import json
import os
import pickle
import site
import sys
import sysconfig
import tempfile
import threading
import time
from typing import Any, Callable, Dict, Optional

import jax
import numpy as np

from launchers.lib import jax_compat
from lopt.cell_runtime import fused

FORMAT = 1
_code_stamp: Optional[dict] = None  # taken at the first key

# Hits of JAX's persistent compilation cache in this process. XLA:CPU
# serializes an executable that it loaded from that cache without its
# kernels' code: written here, the entry would load in a new process and
# fail when run ('Function reduce_add_fusion not found'). A miss is
# compiled without that cache (`_compile_without_jax_cache`); where that
# cannot be done, a program compiled during such a hit runs but is not
# written.
_persistent_hits = [0]


def _count_persistent_hit(event: str, **kwargs) -> None:
  del kwargs
  if event == jax_compat.PERSISTENT_CACHE_HIT:
    _persistent_hits[0] += 1


jax.monitoring.register_event_listener(_count_persistent_hit)


def _installed_dirs() -> tuple:
  """The folders of the standard library and of installed distributions
  (site-packages), each ending in a separator."""
  dirs = set()
  for scheme_key in ('stdlib', 'platstdlib', 'purelib', 'platlib'):
    dirs.add(sysconfig.get_paths().get(scheme_key, ''))
  try:
    dirs.update(site.getsitepackages())
    dirs.add(site.getusersitepackages())
  except AttributeError:  # a virtualenv's old site module
    pass
  return tuple(os.path.join(os.path.abspath(d), '') for d in dirs if d)


def _distributions(installed: tuple) -> list:
  """Each installed distribution by its metadata folder (name and version)
  and the size and time of its RECORD (rewritten by every install, so a
  reinstall of the same version counts as new code)."""
  out = []
  for folder in sorted(set(installed)):
    try:
      names = sorted(os.listdir(folder))
    except OSError:
      continue
    for n in names:
      if not n.endswith(('.dist-info', '.egg-info', '.egg-link', '.pth')):
        continue
      p = os.path.join(folder, n)
      record = os.path.join(p, 'RECORD')
      try:
        st = os.stat(record if os.path.isfile(record) else p)
      except OSError:
        continue
      out.append((p, st.st_size, st.st_mtime_ns))
  return out


def _tree_stamp(root: str) -> list:
  """(path, size, mtime) of `root` (a module file) or of every file under
  it (a package folder: its modules and the data they may load, such as
  shipped meta-params)."""
  if os.path.isfile(root):
    st = os.stat(root)
    return [(root, st.st_size, st.st_mtime_ns)]
  out = []
  for folder, dirs, files in os.walk(root):
    dirs[:] = sorted(d for d in dirs
                     if not d.startswith('.') and d != '__pycache__')
    for n in sorted(files):
      if not n.endswith(('.pyc', '.tmp')):
        p = os.path.join(folder, n)
        try:
          st = os.stat(p)
        except OSError:  # removed meanwhile
          continue
        out.append((p, st.st_size, st.st_mtime_ns))
  return out


def _code() -> dict:
  """What the code is, taken once per process at the first key: the
  installed distributions, and every file of the packages loaded from
  elsewhere (this project's, the caller's) by path, size and modification
  time. Whole packages, so a module that only a trace imports is covered
  too, and the same set whatever the entry point (`__main__`)."""
  global _code_stamp
  if _code_stamp is None:
    installed = _installed_dirs()
    packages, modules = set(), set()
    for name, module in list(sys.modules.items()):
      path = getattr(module, '__file__', None)
      if not path:
        continue
      path = os.path.abspath(path)
      if path.startswith(installed) or not os.path.exists(path):
        continue
      top = sys.modules.get(name.split('.')[0], module)
      top_path = getattr(top, '__file__', None)
      if getattr(top, '__path__', None) and top_path:
        packages.add(os.path.join(os.path.dirname(os.path.abspath(top_path)),
                                  ''))
      else:
        modules.add(path)
    # A module file inside a package walked anyway (the launcher run as
    # __main__) adds nothing.
    modules = {m for m in modules if not m.startswith(tuple(packages))}
    _code_stamp = {
        'installed': _distributions(installed),
        'files': [s for r in sorted(packages | modules)
                  for s in _tree_stamp(r.rstrip(os.sep))],
    }
  return _code_stamp


def environment() -> dict:
  import jaxlib  # pylint: disable=g-import-not-at-top
  return {
      'python': sys.version,
      'jax': jax.__version__,
      'jaxlib': jaxlib.__version__,
      'config': {k: repr(v) for k, v in sorted(jax.config.values.items())},
      'env': {k: v for k, v in sorted(os.environ.items())
              if k.startswith(('JAX_', 'XLA_', 'LIBTPU'))},
      'devices': [(d.platform, d.device_kind, d.id, d.process_index)
                  for d in jax.devices()],
      'processes': jax.process_count(),
      'cpu': fused.cpu_identity(),
      'cpus': (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
               else os.cpu_count()),
  }


def _leaf_signature(x) -> list:
  if isinstance(x, jax.Array):
    sharding = x.sharding
    return ['array', list(x.shape), str(x.dtype), bool(x.weak_type),
            str(sharding), sorted(d.id for d in sharding.device_set)]
  if isinstance(x, np.ndarray):
    return ['numpy', list(x.shape), str(x.dtype)]
  if isinstance(x, (bool, int, float, complex)):
    return ['python', type(x).__name__]
  if isinstance(x, np.generic):
    return ['numpy', [], str(x.dtype)]
  raise TypeError(f'unsupported argument type {type(x).__name__}')


def signature(args) -> str:
  leaves, tree = jax.tree.flatten(args)
  return json.dumps([str(tree), [_leaf_signature(x) for x in leaves]])


def file_stamps(obj, max_hash_bytes: int = 1 << 28) -> Dict[str, list]:
  """Every existing file named by a string in `obj` (nested dicts, lists,
  tuples), e.g. a config's meta-params path whose arrays a program may hold
  as constants: its size and a hash of its content (size and modification
  time above `max_hash_bytes`)."""
  out = {}

  def visit(v):
    if isinstance(v, dict):
      for item in v.values():
        visit(item)
    elif isinstance(v, (list, tuple)):
      for item in v:
        visit(item)
    elif isinstance(v, str) and v and os.path.isfile(v):
      st = os.stat(v)
      if st.st_size > max_hash_bytes:
        out[os.path.abspath(v)] = [st.st_size, st.st_mtime_ns]
        return
      with open(v, 'rb') as f:
        out[os.path.abspath(v)] = [st.st_size,
                                   hashlib.sha256(f.read()).hexdigest()]

  visit(obj)
  return out


class CachedFunction:
  """A jitted function whose compiled programs come from the cache; call it
  like the function. `status` says how the last new program was got:
  'hit', 'miss', 'miss (...)', 'not cached (...)' or 'off (...)'."""

  def __init__(self, cache: 'ExecutableCache', name: str,
               make: Callable[[], Any]):
    self._cache = cache
    self._name = name
    self._make = make
    self._fn = None
    self._compiled = {}
    self.status = None
    self.seconds = None  # getting the last new program: load or compile

  def _jitted(self):
    if self._fn is None:
      self._fn = self._make()
    return self._fn

  def describe(self) -> str:
    """`status`, with the seconds it took to load or compile."""
    if self.seconds is None:
      return str(self.status)
    return f'{self.status} ({self.seconds:.1f} s)'

  def _off(self, args):
    """Why this call is not cached (None: it is), and its signature."""
    if not self._cache.folder:
      return 'off', None
    if jax.process_count() > 1:
      return 'off (multi-process)', None
    reason = self._cache.unusable()
    if reason:
      return f'off ({reason})', None
    try:
      return None, signature(args)
    except TypeError as e:
      return f'off ({e})', None

  def compiled(self, *args):
    """The compiled program for arguments like `args` (loaded, or compiled
    and stored, the first time), without running it."""
    off, sig = self._off(args)
    compiled = self._compiled.get(sig) if sig else None
    if compiled is None:
      t = time.time()
      if off:
        self.status = off
        compiled = self._jitted().lower(*args).compile()
      else:
        compiled, self.status = self._cache.load_or_compile(
            self._name, self._jitted, args, sig)
        self._compiled[sig] = compiled
      self.seconds = time.time() - t
    return compiled

  def __call__(self, *args):
    off, sig = self._off(args)
    if off:
      self.status = off
      return self._jitted()(*args)
    compiled = self._compiled.get(sig)
    if compiled is None:
      compiled = self.compiled(*args)
    return compiled(*args)


def _compile_without_jax_cache(lowered):
  """`lowered` compiled by XLA with JAX's persistent compilation cache off,
  so that its executable carries its kernels' code and can be serialized.

  JAX also keeps the executables of this process in memory, by program and
  compiler options, and would hand out one it had loaded from its cache:
  an option set explicitly to its default value (no change to the code)
  makes a key of its own. Raises if this JAX lacks the internals
  (`jax_compat.JaxInternalsChanged`; the caller then compiles as usual)."""
  hits = _persistent_hits[0]
  compiled = jax_compat.compile_without_persistent_cache(
      lowered, compiler_options={'xla_embed_ir_in_executable': False})
  if _persistent_hits[0] != hits:
    raise RuntimeError("JAX's compilation cache answered with it off")
  return compiled


def _load(path: str, raise_errors: bool = False):
  """(key, compiled program) of the entry at `path`; None if unreadable
  (unless `raise_errors`)."""
  from jax.experimental import serialize_executable  # pylint: disable=g-import-not-at-top
  try:
    with open(path, 'rb') as f:
      entry = pickle.load(f)
    return entry['key'], serialize_executable.deserialize_and_load(
        entry['payload'], entry['in_tree'], entry['out_tree'])
  except Exception:  # pylint: disable=broad-except
    if raise_errors:
      raise
    return None


def _touch(path: str) -> None:
  try:
    os.utime(path)  # most recently used
  except OSError:  # pruned by another process meanwhile
    pass


class ExecutableCache:
  """Compiled executables on disk in `folder` ('' turns the cache off:
  every wrapped function is plain jit). `context`: JSON-able, what the
  programs depend on beyond their arguments and the code (a config)."""

  def __init__(self, folder: str, context: Any = None,
               max_entries: int = 64):
    if max_entries < 1:
      raise ValueError(f'max_entries: must be >= 1, got {max_entries}')
    self.folder = os.path.abspath(os.path.expanduser(folder)) if folder else ''
    self.context = json.dumps(context, sort_keys=True, default=repr)
    self.max_entries = max_entries
    self._prefetch = {}  # name -> (thread, path, [(key, compiled) or None])
    self._unusable = None  # '' once the folder is checked usable

  def wrap(self, name: str, make: Callable[[], Any]) -> CachedFunction:
    """`make()` returns the jitted function; it is called only when a
    program must be compiled (a miss), so whatever it traces up front
    (e.g. `jax.eval_shape` for shardings) is skipped on a hit."""
    return CachedFunction(self, name, make)

  def key(self, name: str, sig: str) -> str:
    return json.dumps({'format': FORMAT, 'name': name,
                       'context': self.context, 'signature': sig,
                       'code': _code(), 'environment': environment()},
                      sort_keys=True)

  def _family(self, name: str) -> str:
    """The file name's prefix: a hash of the key without the signature."""
    digest = hashlib.sha256(self.key(name, '').encode()).hexdigest()[:12]
    return f'{name}-{digest}-'

  def path(self, name: str, key: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return os.path.join(self.folder, f'{self._family(name)}{digest}.exe')

  def prefetch(self, name: str) -> None:
    """Starts loading, in a thread, the most recently used entry of `name`
    with this context, code and machine (any signature), so that it loads
    while the caller does other work (builds the arguments). The first call
    of `name` takes it if its key is the one wanted, and loads or compiles
    as usual otherwise."""
    if (not self.folder or jax.process_count() > 1 or name in self._prefetch
        or self.unusable()):
      return
    prefix = self._family(name)
    found = []
    for n in os.listdir(self.folder):
      if n.startswith(prefix) and n.endswith('.exe'):
        try:
          found.append((os.path.getmtime(os.path.join(self.folder, n)), n))
        except OSError:  # pruned meanwhile
          continue
    if not found:
      return
    path = os.path.join(self.folder, max(found)[1])
    box = []
    thread = threading.Thread(target=lambda: box.append(_load(path)),
                              name=f'prefetch {name}')
    thread.start()
    self._prefetch[name] = (thread, path, box)

  def _take_prefetched(self, name: str, path: str, key: str):
    pending = self._prefetch.pop(name, None)
    if pending is None:
      return None
    thread, fetched, box = pending
    thread.join()
    if fetched != path or not box or box[0] is None or box[0][0] != key:
      return None
    return box[0][1]

  def load_or_compile(self, name: str, jitted: Callable[[], Any], args,
                      sig: str):
    """(compiled program, status)."""
    from jax.experimental import serialize_executable  # pylint: disable=g-import-not-at-top
    key = self.key(name, sig)
    path = self.path(name, key)
    status = 'miss'
    compiled = self._take_prefetched(name, path, key)
    if compiled is not None:
      _touch(path)
      return compiled, 'hit'
    if os.path.exists(path):
      try:
        entry_key, compiled = _load(path, raise_errors=True)
        if entry_key != key:
          raise ValueError('another program under the same hash')
        _touch(path)
        return compiled, 'hit'
      except Exception as e:  # pylint: disable=broad-except
        status = f'miss (unreadable entry, rewritten: {type(e).__name__}: {e})'
    lowered = jitted().lower(*args)
    try:
      compiled = _compile_without_jax_cache(lowered)
    except Exception as e:  # pylint: disable=broad-except
      # No way to keep JAX's cache out here: compiled with it, and written
      # only if it did not supply the program.
      hits = _persistent_hits[0]
      compiled = lowered.compile()
      if _persistent_hits[0] != hits:
        return compiled, ("not cached (from JAX's compilation cache; "
                          f'compiling without it: {type(e).__name__}: {e})')
    try:
      payload, in_tree, out_tree = serialize_executable.serialize(compiled)
      data = pickle.dumps({'key': key, 'payload': payload,
                           'in_tree': in_tree, 'out_tree': out_tree})
    except Exception as e:  # pylint: disable=broad-except
      return compiled, f'not cached ({type(e).__name__}: {e})'
    tmp = None
    try:  # a folder that cannot be written costs the entry, not the run
      fd, tmp = tempfile.mkstemp(dir=self.folder, suffix='.tmp')
      with os.fdopen(fd, 'wb') as f:
        f.write(data)
      os.replace(tmp, path)
      tmp = None
      self._prune()
    except OSError as e:
      return compiled, f'not cached (write: {e})'
    finally:
      if tmp is not None and os.path.exists(tmp):
        os.remove(tmp)
    return compiled, status

  def _prune(self) -> None:
    """Keeps the `max_entries` most recently used entries; removes partial
    writes (of a killed process) older than an hour."""
    entries, stale = [], []
    now = time.time()
    for n in os.listdir(self.folder):
      p = os.path.join(self.folder, n)
      try:
        mtime = os.stat(p).st_mtime
      except OSError:
        continue
      if n.endswith('.exe'):
        entries.append((mtime, p))
      elif n.endswith('.tmp') and now - mtime > 3600:
        stale.append(p)
    for p in [p for _, p in sorted(entries)[:-self.max_entries]] + stale:
      try:
        os.remove(p)
      except OSError:
        pass

  def unusable(self) -> str:
    """Why the folder cannot be used ('' if it can): it is created private
    (0700); one that another user owns, or that others may write, is not
    used, since loading an entry unpickles it."""
    if self._unusable is None:
      try:
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        st = os.stat(self.folder)
        if hasattr(os, 'getuid') and st.st_uid != os.getuid():
          self._unusable = f'{self.folder} belongs to another user'
        elif st.st_mode & 0o022:
          self._unusable = f'{self.folder} is writable by others'
        else:
          self._unusable = ''
      except OSError as e:
        self._unusable = f'cannot create {self.folder}: {e}'
    return self._unusable
