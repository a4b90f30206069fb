"""Host memory reuse for XLA:CPU: freed buffers kept by malloc, not unmapped.

XLA:CPU allocates every output and temporary buffer of an executable with
`malloc` and frees it afterwards. With glibc's defaults a large buffer
(above `M_MMAP_THRESHOLD`, at most 32 MiB, and any size in a thread's own
arena past its 64 MiB heaps) is `mmap`ed fresh and `munmap`ed on free, so
every call faults in every page of it again: each [1e6, 16] float32
intermediate of a learned-optimizer update on 1e6 coordinates costs ~16k
page faults per call. `reuse_freed_memory()` tells glibc to serve
every allocation from the main heap and to keep freed memory there
(`M_ARENA_MAX` 1, `M_MMAP_MAX` 0, `M_TRIM_THRESHOLD` 2 GiB), so a buffer of
the next call lands on pages already mapped.

What it does not change: the maths, the values, or peak memory in use (the
heap keeps at most the high-water mark it had reached, plus up to 2 GiB of
free memory at its top). It only acts where glibc is the C library (Linux);
elsewhere it returns False.

The cost: every thread allocates from the one main heap, so XLA's
multi-threaded compiler contends for it and compiles slower. Worth it for single models of 1e5
coordinates and more; populations of small networks do not gain.

Call it before JAX's first computation: threads that malloc before it keep
the arenas they already have. The launchers call it at start-up with
`--reuse_host_memory` (off by default).
"""

import ctypes
import ctypes.util
import functools

# mallopt(3) parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8

# Free memory the heap may keep at its top before it is given back (bytes;
# mallopt takes an int).
TRIM_THRESHOLD = 2 ** 31 - 1

SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD))


@functools.lru_cache(maxsize=None)
def _libc():
  """glibc's handle, or None where the C library is not glibc."""
  name = ctypes.util.find_library('c')
  if not name:
    return None
  try:
    libc = ctypes.CDLL(name)
  except OSError:
    return None
  if not hasattr(libc, 'mallopt') or not hasattr(libc,
                                                 'gnu_get_libc_version'):
    return None
  return libc


def is_available() -> bool:
  """True where the settings can be applied (glibc's malloc)."""
  return _libc() is not None


def reuse_freed_memory() -> bool:
  """Applies `SETTINGS` with mallopt(3); True if glibc accepted all of
  them, False where the C library is not glibc. Idempotent."""
  libc = _libc()
  if libc is None:
    return False
  ok = True
  for param, value in SETTINGS:
    ok = bool(libc.mallopt(ctypes.c_int(param), ctypes.c_int(value))) and ok
  return ok
