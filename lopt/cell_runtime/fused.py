"""The cell's step as one fused kernel per call on XLA:CPU.

XLA:CPU runs a cell (`lopt.cells`) as a chain of thin matmuls and
elementwise kernels, each reading and writing `[N, 8..24]` intermediates:
about 3,000 FLOPs and 2.5 kB of memory traffic per coordinate, far from the
matmul peak (`python -m launchers.benchmark --mode=opt` prints the share).
Here a tile of coordinates (one SIMD
register's worth) goes through the whole step, the preprocessor's
features, each path's GRU and MLP and the cell's direction, in registers
and L1, in a small C++ kernel called through XLA's FFI
(`lopt/cell_runtime/native/cell_kernel.cc`): only the gradient (and
Optim4RL's second moment), the state and the direction touch memory.
NaN and inf propagate as in JAX (NaN in, NaN out).

The maths is `lopt.cells` (every cell and preprocessor) with the state in
the Haiku module's layout (`[N, hidden]` per GRU, read and written across
rows inside the kernel), so `dispatch.make(config, 'fused')` has the same
state as 'haiku' and is folded over a population the same way (its
coordinates laid end to end). Its reverse mode is a second kernel
(`custom_vjp`): the cotangents of the meta-params (summed over
coordinates), the inputs and the state, the tile's forward recomputed
inside it, so it needs only the step's inputs. Values and gradients equal
the Haiku module's to float tolerance (tests/test_fused_cell.py).
Forward-mode differentiation (`jax.jvp`) is not defined for it.

The kernel is compiled for this machine (`-march=native`, or
`$LOPT_NATIVE_MARCH`) with the C++ compiler (`$CXX`, else `g++` or `c++`)
the first time it is used, into
`$LOPT_NATIVE_CACHE` (default `~/.cache/lopt_rl/native`), under a name
hashed from its source, the compiler, the flags, jaxlib's version and the
CPU, and loaded from there afterwards. `available()` tells whether it can
be built here; CPU only.
"""

import ctypes
import hashlib
import logging
import math
import os
import platform
import re
import shutil
import subprocess
import tempfile
import threading
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'native',
                      'cell_kernel.cc')
# -fno-tree-loop-distribute-patterns: GCC would turn the kernel's short
# copy loops (a tile's vectors into its stash) into calls of memcpy, which
# took about a fifth of the backward's time through XLA.
FLAGS = ('-O3', '-std=c++17', '-shared', '-fPIC', '-fno-math-errno',
         '-fno-tree-loop-distribute-patterns', '-w')
# The kernel's limits (cell_kernel.cc: MAXD, MAXL; its MAXF = 8 input
# features is above every preprocessor's).
MAX_WIDTH = 64
MAX_LAYERS = 8
ACTIVATIONS = {'relu': 0, 'tanh': 1, 'silu': 2}
# The cells and preprocessors the kernel computes (cell_kernel.cc: Cell,
# Preprocessor): all of `lopt.cells.CELLS` and
# `lopt.preprocessing.PREPROCESSORS`.
CELLS = {'optim4rl': 0, 'l2lgd2': 1, 'linear': 2}
PREPROCESSORS = {'identity': 0, 'log_sign': 1, 'andrychowicz': 2}
# Outputs of each cell's MLPs (see `lopt.cells.CELLS`).
NUM_OUTPUTS = {'optim4rl': 1, 'l2lgd2': 1, 'linear': 3}
FORWARD, BACKWARD = 'lopt_cell_forward', 'lopt_cell_backward'

_lock = threading.Lock()
_registered: Optional[str] = None  # the library's path, once registered
_unavailable_logged = False


def cache_dir() -> str:
  return os.environ.get('LOPT_NATIVE_CACHE') or os.path.join(
      os.path.expanduser('~'), '.cache', 'lopt_rl', 'native')


def compiler() -> Optional[str]:
  """The C++ compiler: `$CXX`, else g++ or c++ on the PATH; None if none."""
  for name in (os.environ.get('CXX'), 'g++', 'c++'):
    if name and shutil.which(name):
      return shutil.which(name)
  return None


def flags() -> Tuple[str, ...]:
  """The compiler's flags: `FLAGS` and `-march=$LOPT_NATIVE_MARCH` (default
  'native': this CPU's widest vectors; e.g. 'x86-64-v3' builds the AVX2
  kernel, 'x86-64' the SSE one)."""
  return FLAGS + (f"-march={os.environ.get('LOPT_NATIVE_MARCH') or 'native'}",)


def cpu_identity() -> list:
  """The lines of /proc/cpuinfo that name this CPU and its instruction set
  (what a compiled kernel or program depends on)."""
  try:
    with open('/proc/cpuinfo') as f:
      lines = f.read().split('\n\n')[0].splitlines()
  except OSError:
    return [platform.processor()]
  return [ln for ln in lines if ln.split(':')[0].strip() in
          ('vendor_id', 'model name', 'flags', 'Features', 'CPU part')]


def _key(cxx: str) -> str:
  import jaxlib  # pylint: disable=g-import-not-at-top
  version = subprocess.run([cxx, '--version'], capture_output=True,
                           text=True, check=False).stdout
  h = hashlib.sha256()
  with open(SOURCE, 'rb') as f:
    h.update(f.read())
  for part in (version, ' '.join(flags()), jaxlib.__version__,
               *cpu_identity()):
    h.update(part.encode())
  return h.hexdigest()[:20]


def _check_folder(folder: str) -> None:
  """Creates the cache folder private (0700); refuses one that another user
  owns or that others may write, since its libraries are loaded and run."""
  try:
    os.makedirs(folder, mode=0o700, exist_ok=True)
    st = os.stat(folder)
  except OSError as e:
    raise RuntimeError(f"implementation 'fused': cannot create {folder}: "
                       f'{e}') from e
  if hasattr(os, 'getuid') and st.st_uid != os.getuid():
    raise RuntimeError(f"implementation 'fused': {folder} belongs to another "
                       'user; set $LOPT_NATIVE_CACHE to a folder of yours')
  if st.st_mode & 0o022:
    raise RuntimeError(f"implementation 'fused': {folder} is writable by "
                       'others; set $LOPT_NATIVE_CACHE to a private folder')


def build() -> str:
  """The kernel's shared library for this machine, compiled if not cached.

  Raises RuntimeError if no compiler is found, the build fails (with the
  compiler's message), or the folder is not private.
  """
  cxx = compiler()
  if cxx is None:
    raise RuntimeError(
        "implementation 'fused': no C++ compiler found ($CXX, g++, c++); "
        "install one (e.g. apt-get install g++) or use implementation="
        "'haiku'")
  folder = cache_dir()
  _check_folder(folder)
  path = os.path.join(folder, f'cell_kernel-{_key(cxx)}.so')
  if os.path.exists(path):
    return path
  logging.info('lopt: building the fused cell kernel for this machine '
               '(once, a few seconds) into %s', path)
  fd, tmp = tempfile.mkstemp(suffix='.so.tmp', dir=folder)
  os.close(fd)
  try:
    result = subprocess.run(
        [cxx, *flags(), '-I', jax.ffi.include_dir(), SOURCE, '-o', tmp],
        capture_output=True, text=True, check=False)
    if result.returncode:
      raise RuntimeError(
          f"implementation 'fused': building {SOURCE} failed:\n"
          f'{result.stderr[-4000:]}')
    os.replace(tmp, path)  # atomic: concurrent builders agree on the file
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  _prune(folder, keep=path)
  return path


def _prune(folder: str, keep: str, max_files: int = 8) -> None:
  """Removes all but the `max_files` newest kernels of other builds (other
  sources, compilers or machines); a process that loaded one keeps its
  mapping."""
  others = []
  for n in os.listdir(folder):
    p = os.path.join(folder, n)
    if n.startswith('cell_kernel-') and n.endswith('.so') and p != keep:
      try:
        others.append((os.path.getmtime(p), p))
      except OSError:  # removed meanwhile by another process
        pass
  for _, p in sorted(others, reverse=True)[max_files - 1:]:
    try:
      os.remove(p)
    except OSError:
      pass


def register() -> str:
  """Builds (if needed) and registers the kernel with XLA:CPU, once per
  process; returns the library's path."""
  global _registered
  with _lock:
    if _registered is None:
      path = build()
      try:
        lib = ctypes.cdll.LoadLibrary(path)
      except OSError as e:
        raise RuntimeError(f"implementation 'fused': cannot load {path}: "
                           f'{e}') from e
      jax.ffi.register_ffi_target(
          FORWARD, jax.ffi.pycapsule(lib.LoptCellForward), platform='cpu')
      jax.ffi.register_ffi_target(
          BACKWARD, jax.ffi.pycapsule(lib.LoptCellBackward), platform='cpu')
      _registered = path
  return _registered


def available() -> bool:
  """Whether the kernel can be built and run here (CPU backend and a
  compiler). Logs why not, once, where the backend is CPU."""
  global _unavailable_logged
  if jax.default_backend() != 'cpu':
    return False
  try:
    register()
  except RuntimeError as e:
    if not _unavailable_logged:
      logging.warning('lopt: the fused cell kernel is not available, the '
                      'learned optimizer runs its Haiku module (slower): %s',
                      e)
      _unavailable_logged = True
    return False
  return True


def check_config(config) -> None:
  """Raises ValueError naming the field the kernel cannot run.

  The kernel computes the paper's inputs (`g`, and `s` with
  `second_moment`) only: a cell with OPEN's lifetime-aware inputs
  (`momentum_decays`, `progress_input`) or `adam_residual` is refused, so
  'auto' picks the Haiku module for it.
  """
  for field in ('momentum_decays', 'progress_input', 'adam_residual'):
    if getattr(config, field, None):
      raise ValueError(
          f"{field}: implementation 'fused' has the paper's cell only (no "
          f"lifetime-aware inputs, no Adam residual), got "
          f"{getattr(config, field)!r}; use 'auto' or 'haiku'")
  if config.cell not in CELLS:
    raise ValueError(f"cell: implementation 'fused' has {sorted(CELLS)}, "
                     f'got {config.cell!r}')
  if config.preprocessor not in PREPROCESSORS:
    raise ValueError(
        f"preprocessor: implementation 'fused' has {sorted(PREPROCESSORS)}, "
        f'got {config.preprocessor!r}')
  if config.activation not in ACTIVATIONS:
    raise ValueError(
        f"activation: implementation 'fused' has {sorted(ACTIVATIONS)}, got "
        f'{config.activation!r}')
  if not 1 <= config.hidden_size <= MAX_WIDTH:
    raise ValueError(f"hidden_size: implementation 'fused' takes 1.."
                     f'{MAX_WIDTH}, got {config.hidden_size}')
  if any(d > MAX_WIDTH for d in config.mlp_dims):
    raise ValueError(f"mlp_dims: implementation 'fused' takes widths up to "
                     f'{MAX_WIDTH}, got {config.mlp_dims}')
  if len(config.mlp_dims) + 1 > MAX_LAYERS:
    raise ValueError(f"mlp_dims: implementation 'fused' takes up to "
                     f'{MAX_LAYERS - 1} hidden layers, got {config.mlp_dims}')


def custom_call_bytes(hlo_text: str) -> int:
  """Bytes read and written by the kernel's calls in a compiled program's
  HLO text (every operand and result of each call), which XLA's cost
  analysis does not count for custom calls."""
  total = 0
  for line in hlo_text.splitlines():
    if f'custom_call_target="{FORWARD}"' in line or (
        f'custom_call_target="{BACKWARD}"' in line):
      for dtype, dims in re.findall(r'\b(f32|s32|u32)\[([0-9,]*)\]', line):
        del dtype  # all four bytes wide
        total += 4 * math.prod(int(d) for d in dims.split(',') if d)
  return total


def supports(config) -> bool:
  """Whether the kernel can run `config` (`check_config` passes)."""
  try:
    check_config(config)
  except ValueError:
    return False
  return True


def pack(meta_params, paths: Tuple[str, ...], num_layers: int) -> Array:
  """Each path's weights as one row of `[P, S]`, in the kernel's order:
  w_i, w_h, b of the GRU, then w, b of each MLP layer (row-major)."""
  rows = []
  for p in paths:
    gru = meta_params[f'{p}/gru']
    parts = [gru['w_i'], gru['w_h'], gru['b']]
    for i in range(num_layers):
      layer = meta_params[f'{p}/mlp/~/linear_{i}']
      parts += [layer['w'], layer['b']]
    rows.append(jnp.concatenate([jnp.ravel(x) for x in parts]))
  return jnp.stack(rows).astype(jnp.float32)


def check_backend() -> None:
  """Raises ValueError unless JAX's default backend is the CPU."""
  backend = jax.default_backend()
  if backend != 'cpu':
    raise ValueError(
        f"implementation: 'fused' runs on XLA:CPU only, the default backend "
        f"is {backend!r}; use 'auto' (picks 'haiku' there) or 'haiku'")


def make_step(config, in_place: bool = True):
  """`step(params[P, S], inputs, h) -> (d[N], h)`: the cell's whole step
  (features, paths, direction) on inputs `(g[N],)` or `(g[N], s[N])`
  (`cells.split_inputs`), `h` a tuple of P state arrays `[N, H]` (Haiku's
  layout), differentiable in reverse mode in all three. Leading axes are
  more coordinates (`g[B, N]`, `h[B, N, H]`: a batch sharing the params).
  With `in_place`, undifferentiated, the new state is written over the old
  one (differentiated, never: the backward reads the old state)."""
  check_config(config)
  check_backend()
  register()
  p = float(config.andrychowicz_p)
  attrs = dict(
      dims=np.asarray(tuple(config.mlp_dims) + (NUM_OUTPUTS[config.cell],),
                      np.int64),
      activation=np.int64(ACTIVATIONS[config.activation]),
      hidden=np.int64(config.hidden_size),
      cell=np.int64(CELLS[config.cell]),
      preprocessor=np.int64(PREPROCESSORS[config.preprocessor]),
      second_moment=np.int64(config.input_arity == 2),
      log_eps=np.float32(config.preprocessor_eps),
      p=np.float32(p),
      threshold=np.exp(np.float32(-p)),  # andrychowicz: |g| >= e^-p
      scale=np.exp(np.float32(p)),       # e^p g below it
      update_eps=np.float32(config.update_eps))

  def f32(a):
    return jax.ShapeDtypeStruct(a.shape, jnp.float32)

  def forward(params, inputs, h, in_place):
    g, *s = inputs
    # In place: each new state in its old one's buffer (operand 2 + |s| + p
    # is result 1 + p), which the kernel reads a tile ahead of writing. XLA
    # then allocates no new state and copies none into a loop's carry; it
    # copies the old state first only where it is still needed.
    first = 2 + len(s)
    aliases = {first + p: 1 + p for p in range(len(h))} if in_place else None
    res = jax.ffi.ffi_call(FORWARD, (f32(g),) + tuple(f32(a) for a in h),
                           vmap_method='sequential',
                           input_output_aliases=aliases)(params, g, *s, *h,
                                                         **attrs)
    return res[0], tuple(res[1:])

  @jax.custom_vjp
  def step(params, inputs, h):
    return forward(params, inputs, h, in_place=in_place)

  def step_fwd(params, inputs, h):
    # The old state is kept for the backward: not overwritten.
    return forward(params, inputs, h, in_place=False), (params, inputs, h)

  def step_bwd(res, ct):
    params, (g, *s), h = res
    ct_d, ct_h = ct
    shapes = (f32(params), f32(g)) + tuple(f32(a) for a in (*s, *h))
    out = jax.ffi.ffi_call(BACKWARD, shapes, vmap_method='sequential')(
        params, g, jnp.asarray(ct_d, jnp.float32), *s, *h,
        *(jnp.asarray(c, jnp.float32) for c in ct_h), **attrs)
    num_inputs = 1 + len(s)
    return out[0], tuple(out[1:1 + num_inputs]), tuple(out[1 + num_inputs:])

  step.defvjp(step_fwd, step_bwd)
  return step
