"""The fused kernel (lopt.cell_runtime.fused) equals the plain Haiku module, and is
built, cached and refused as its docstring says."""

import functools
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt
from lopt import cells
from lopt.cell_runtime import dispatch
from lopt.cell_runtime import fused as fused_cell

# Every cell, each preprocessor (the kernel computes the features and the
# direction too), each activation the kernel has, Adam's moments as inputs,
# no MLP, odd sizes (not multiples of the SIMD width), and each hidden size
# whose state the kernel transposes in registers (2, 4, 8, 16; others go
# through gathers).
CONFIGS = {
    'optim4rl': dict(cell='optim4rl'),
    'optim4rl_moments_silu': dict(cell='optim4rl', second_moment=0.99,
                                  grad_ema=0.9, activation='silu'),
    'optim4rl_no_mlp': dict(cell='optim4rl', mlp_dims=()),
    'optim4rl_tanh': dict(cell='optim4rl', hidden_size=5, mlp_dims=(7, 3),
                          activation='tanh'),
    'optim4rl_h16': dict(cell='optim4rl', hidden_size=16, mlp_dims=(8,)),
    'optim4rl_andrychowicz_moments': dict(
        cell='optim4rl', preprocessor='andrychowicz', andrychowicz_p=5.,
        second_moment=0.9),
    'l2lgd2': dict(cell='l2lgd2'),
    'l2lgd2_log_sign': dict(cell='l2lgd2', preprocessor='log_sign',
                            preprocessor_eps=1e-8),
    'l2lgd2_h4': dict(cell='l2lgd2', hidden_size=4),
    'linear': dict(cell='linear'),
    'linear_h2': dict(cell='linear', hidden_size=2),
}


def _setup(name, batch, n, seed=0):
  """Meta-params moved off init, gradients over many decades (and exact
  zeros), a non-zero state: Haiku's layout `[B, N, H]`."""
  config = cells.CellConfig(**CONFIGS[name])
  cell = cells.make_cell(config)
  keys = jax.random.split(jax.random.PRNGKey(seed), 6)
  mp = cell.init(keys[0], cells.example_inputs(config), config.initial_state(1))
  leaves, tree = jax.tree.flatten(mp)
  mp = jax.tree.unflatten(tree, [
      x + 0.3 * jax.random.normal(k, x.shape)
      for x, k in zip(leaves, jax.random.split(keys[1], len(leaves)))])
  g = jax.random.normal(keys[2], (batch, n)) * 10. ** jax.random.uniform(
      keys[3], (batch, n), minval=-9., maxval=1.)
  g = g.at[:, :3].set(0.)
  inputs = (g, g * g + 1e-8) if config.second_moment else g
  shape = (batch, n, config.hidden_size)
  state = tuple(
      0.5 * jnp.tanh(jax.random.normal(jax.random.fold_in(keys[4], i), shape))
      for i in range(cells.NUM_GRUS[config.cell]))
  return config, cell, mp, inputs, state


def _weights(shape):
  return 1. + jnp.cos(jnp.arange(np.prod(shape), dtype=jnp.float32)
                      ).reshape(shape)


@functools.lru_cache(maxsize=None)
def _fns(name):
  """Jitted (value, gradient) of the Haiku module vmapped over a batch and
  of the fused kernel folded over it; states in Haiku's layout for both."""
  config = cells.CellConfig(**CONFIGS[name])
  cell = cells.make_cell(config)
  fused = dispatch.make(config, 'fused', cell, fold=True).apply
  plain = jax.vmap(cell.apply, in_axes=(None, 0, 0))

  run_fused = jax.vmap(fused, in_axes=(None, 0, 0))

  def loss(fn, mp, inputs, state):
    d, h = fn(mp, inputs, state)
    return jnp.sum(d * _weights(d.shape)) + sum(
        jnp.sum(jnp.sin(x) * _weights(x.shape)) for x in h)

  out = []
  for fn in (plain, run_fused):
    out.append((jax.jit(fn), jax.jit(jax.grad(functools.partial(loss, fn),
                                              argnums=(0, 1, 2)))))
  return config, out


# (config, batch, coordinates): 2100 spans two of the kernel's chunks.
CASES = ([(name, 3, 37) for name in sorted(CONFIGS)] +
         [('optim4rl', 1, 2100), ('linear', 2, 2100)])


@pytest.mark.parametrize('name,batch,n', CASES)
def test_fused_kernel_equals_the_haiku_module(name, batch, n):
  config, ((plain, plain_grad), (fused, fused_grad)) = _fns(name)
  _, _, mp, inputs, state = _setup(name, batch, n, seed=n)
  d0, h0 = plain(mp, inputs, state)
  d1, h1 = fused(mp, inputs, state)
  # The direction spans many decades: relative per coordinate; LinearOptim's
  # two terms may cancel, so its check is relative to the largest.
  atol = 1e-6 * float(jnp.abs(d0).max()) if config.cell == 'linear' else 0.
  np.testing.assert_allclose(d1, d0, rtol=2e-5, atol=atol)
  for a, b in zip(h0, h1):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
  # Meta-gradient, and the cotangents of the inputs and of the state.
  g0 = plain_grad(mp, inputs, state)
  g1 = fused_grad(mp, inputs, state)
  flat0, _ = jax.tree_util.tree_flatten_with_path(g0)
  for (path, a), b in zip(flat0, jax.tree.leaves(g1)):
    scale = float(jnp.abs(a).max())
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * scale + 1e-30,
                               err_msg=jax.tree_util.keystr(path))


def test_fused_gradient_is_the_same_every_call():
  # Chunks sum their own parameter cotangent and are added in a fixed
  # order: no dependence on threads or scheduling, to the bit.
  _, ((_, _), (_, fused_grad)) = _fns('optim4rl')
  _, _, mp, inputs, state = _setup('optim4rl', 4, 5000, seed=1)
  first = fused_grad(mp, inputs, state)
  for _ in range(3):
    again = fused_grad(mp, inputs, state)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again)):
      np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('name,batch', [
    ('optim4rl', None), ('optim4rl', 3),
    ('optim4rl_andrychowicz_moments', 3),  # a second input before the state
    ('l2lgd2', None)])                      # one path
def test_the_state_is_written_in_place_and_kept_where_still_read(name, batch):
  # Undifferentiated, the kernel writes each new state over the old one:
  # in a scan's body (one seed, or a batch folded under vmap) XLA copies
  # no state, and the steps equal the Haiku module's.
  config, cell, mp, g, state = _setup(name, batch or 1, 300, seed=2)
  fused = dispatch.make(config, 'fused', cell, fold=True).apply
  plain = cell.apply
  if batch:
    fused = jax.vmap(fused, in_axes=(None, 0, 0))
    plain = jax.vmap(plain, in_axes=(None, 0, 0))
  else:
    g, state = jax.tree.map(lambda x: x[0], (g, state))

  def run(fn, state):
    def body(h, scale):
      d, h = fn(mp, jax.tree.map(lambda x: x * scale, g), h)
      return h, d
    return jax.lax.scan(body, state, jnp.array([1., 0.5, 2.]))

  # The state donated: no copy of it anywhere, in the loop or before it.
  loop = jax.jit(functools.partial(run, fused), donate_argnums=0)
  copies = [
      line for line in loop.lower(state).compile().as_text().splitlines()
      if ' copy(' in line and f',{config.hidden_size}]' in line]
  assert not copies, copies
  (h1, d1) = loop(tuple(h + 0. for h in state))
  (h0, d0) = jax.jit(functools.partial(run, plain))(state)
  np.testing.assert_allclose(d1, d0, rtol=2e-5)
  for a, b in zip(h0, h1):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)

  # Differentiated, the kernel keeps the old state for its backward
  # without a copy: its forward writes the new state elsewhere.
  def loss(mp, h):
    d, h = fused(mp, g, h)
    return jnp.sum(d) + sum(jnp.sum(x) for x in h)

  grad_hlo = jax.jit(jax.value_and_grad(loss)).lower(
      mp, state).compile().as_text()
  assert 'lopt_cell_forward' in grad_hlo
  assert not [line for line in grad_hlo.splitlines()
              if ' copy(' in line and f',{config.hidden_size}]' in line]

  # Where the old state is read after the step, XLA keeps it: here and
  # eagerly.
  def step_and_old(h):
    d, new = fused(mp, g, h)
    return d, new, tuple(x * 1. for x in h)

  kept = tuple(np.asarray(h) for h in state)
  for fn in (jax.jit(step_and_old), step_and_old):
    _, new, old = fn(state)
    for k, o, x, n in zip(kept, old, state, new):
      np.testing.assert_array_equal(o, k)
      np.testing.assert_array_equal(x, k)
      assert not np.allclose(n, k)


def test_fused_optimizer_passes_the_contract():
  lo = lopt.learned_optimizer(cell='optim4rl', implementation='fused')
  lopt.testing.check_learned_optimizer(lo, zero_grad_moves=False)


def test_what_the_kernel_cannot_run_is_refused_by_field():
  with pytest.raises(ValueError, match="activation: implementation 'fused'"):
    lopt.learned_optimizer(implementation='fused', activation='gelu')
  with pytest.raises(ValueError, match='hidden_size: .* 1..64, got 65'):
    lopt.learned_optimizer(implementation='fused', hidden_size=65)
  with pytest.raises(ValueError, match='mlp_dims: .* up to 64'):
    lopt.learned_optimizer(implementation='fused', mlp_dims=(16, 80))
  # 'auto' takes the Haiku module for what the kernel cannot run.
  assert lopt.learned_optimizer(activation='gelu').implementation == 'haiku'
  assert lopt.learned_optimizer().implementation == 'fused'


def test_a_preprocessor_the_kernel_lacks_is_refused_by_field(monkeypatch):
  # A preprocessor registered after the kernel was written: the Haiku
  # module runs it, the kernel names the field instead of computing
  # something else.
  from lopt import preprocessing  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(preprocessing.PREPROCESSORS, 'clipped',
                      lambda g: jnp.clip(g, -1., 1.)[..., None])
  monkeypatch.setitem(preprocessing.NUM_FEATURES, 'clipped', 1)
  with pytest.raises(ValueError, match="preprocessor: implementation 'fused' "
                     "has .*, got 'clipped'"):
    lopt.learned_optimizer(implementation='fused', preprocessor='clipped')
  lo = lopt.learned_optimizer(preprocessor='clipped')
  assert lo.implementation == 'haiku'


def test_other_backends_are_refused_and_auto_falls_back(monkeypatch):
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  with pytest.raises(ValueError, match="'fused' runs on XLA:CPU only, the "
                     "default backend is 'gpu'"):
    lopt.learned_optimizer(implementation='fused')
  assert lopt.learned_optimizer().implementation == 'haiku'


def test_build_is_cached_and_a_missing_compiler_is_named(tmp_path, monkeypatch):
  monkeypatch.setenv('LOPT_NATIVE_CACHE', str(tmp_path))
  path = fused_cell.build()
  assert os.path.dirname(path) == str(tmp_path)
  stamp = os.stat(path).st_mtime_ns
  assert fused_cell.build() == path            # a hit: not rebuilt
  assert os.stat(path).st_mtime_ns == stamp
  assert [p.name for p in tmp_path.iterdir()] == [os.path.basename(path)]
  # Kernels of other builds: the 7 newest are kept beside this one.
  for i in range(10):
    old = tmp_path / f'cell_kernel-old{i}.so'
    old.write_bytes(b'')
    os.utime(old, (1e9 + i, 1e9 + i))
  (tmp_path / 'other.txt').write_text('not a kernel')
  fused_cell._prune(str(tmp_path), keep=path)  # pylint: disable=W0212
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
      [os.path.basename(path), 'other.txt'] +
      [f'cell_kernel-old{i}.so' for i in range(3, 10)])
  fused_cell._check_folder(str(tmp_path / 'new'))  # pylint: disable=W0212
  assert os.stat(tmp_path / 'new').st_mode & 0o777 == 0o700
  # A library that does not load is named, and 'auto' would fall back.
  broken = tmp_path / 'broken'
  broken.mkdir(mode=0o700)
  monkeypatch.setenv('LOPT_NATIVE_CACHE', str(broken))
  name = os.path.basename(path)
  (broken / name).write_bytes(b'not a library')
  monkeypatch.setattr(fused_cell, '_registered', None)
  with pytest.raises(RuntimeError, match=f'cannot load .*{name}'):
    fused_cell.register()
  # A folder others may write is not loaded from (its libraries run).
  shared = tmp_path / 'shared'
  shared.mkdir()
  shared.chmod(0o777)
  monkeypatch.setenv('LOPT_NATIVE_CACHE', str(shared))
  with pytest.raises(RuntimeError, match='writable by others'):
    fused_cell.build()
  monkeypatch.setenv('LOPT_NATIVE_CACHE', str(tmp_path / 'fresh'))
  monkeypatch.setenv('CXX', '')
  monkeypatch.setenv('PATH', str(tmp_path))
  assert fused_cell.compiler() is None
  with pytest.raises(RuntimeError, match='no C.. compiler found'):
    fused_cell.build()


NARROW = textwrap.dedent('''
    import jax, numpy as np
    import test_fused_cell as t
    for name in ('optim4rl_moments_silu', 'optim4rl_tanh', 'linear'):
      t.test_fused_kernel_equals_the_haiku_module(name, 2, 45)
    print('OK', flush=True)
''')


@pytest.mark.parametrize('march,lanes', [('x86-64-v3', 8), ('x86-64', 4)])
def test_narrower_vectors_give_the_same_values(tmp_path, march, lanes):
  # The AVX2 (8 lanes) and SSE (4 lanes) builds: no AVX-512 exp, reciprocal
  # or gathers, so their own paths. 45 coordinates end on a partial tile.
  import platform  # pylint: disable=g-import-not-at-top
  if platform.machine() not in ('x86_64', 'AMD64'):
    pytest.skip('x86 -march names')
  env = dict(os.environ, LOPT_NATIVE_MARCH=march,
             LOPT_NATIVE_CACHE=str(tmp_path), JAX_PLATFORMS='cpu',
             PYTHONPATH=os.pathsep.join([os.path.dirname(__file__),
                                         os.path.dirname(os.path.dirname(
                                             os.path.abspath(__file__)))]))
  proc = subprocess.run([sys.executable, '-c', NARROW], env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'OK' in proc.stdout
  built = [p for p in os.listdir(tmp_path) if p.endswith('.so')]
  assert len(built) == 1, built
  if not shutil.which('objdump'):
    return
  disassembly = subprocess.run(['objdump', '-d', str(tmp_path / built[0])],
                               capture_output=True, text=True).stdout
  assert 'zmm' not in disassembly  # no AVX-512 instructions
  assert ('ymm' in disassembly) == (lanes == 8)
