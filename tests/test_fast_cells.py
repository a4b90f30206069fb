"""The fast cell equals the plain Haiku module: values, state, meta-gradient."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt
from lopt import cells
from lopt import fast_cells

CONFIGS = {
    'optim4rl': dict(cell='optim4rl'),
    'optim4rl_no_mlp': dict(cell='optim4rl', mlp_dims=()),
    'optim4rl_tanh': dict(cell='optim4rl', hidden_size=4, mlp_dims=(6,),
                          activation='tanh'),
    'l2lgd2': dict(cell='l2lgd2'),
    'linear': dict(cell='linear'),
}


def _inputs(config, n, key):
  """Meta-params moved off init, RL-like gradients, a non-zero state."""
  cell = cells.make_cell(config)
  k0, k1, k2, k3 = jax.random.split(key, 4)
  mp = cell.init(k0, jnp.zeros(1), config.initial_state(1))
  leaves, tree = jax.tree.flatten(mp)
  mp = jax.tree.unflatten(tree, [
      x + 0.3 * jax.random.normal(k, x.shape)
      for x, k in zip(leaves, jax.random.split(k1, len(leaves)))])
  g = jax.random.normal(k2, (n,)) * 10. ** jax.random.uniform(
      k3, (n,), minval=-9., maxval=1.)
  g = g.at[:3].set(0.)
  state = tuple(0.5 * jnp.tanh(jax.random.normal(jax.random.fold_in(k3, i),
                                                 (n, config.hidden_size)))
                for i in range(cells.NUM_GRUS[config.cell]))
  return cell, mp, g, state


@functools.lru_cache(maxsize=None)
def _fns(name, chunk):
  config = cells.CellConfig(**CONFIGS[name])
  cell = cells.make_cell(config)
  plain = jax.jit(cell.apply)
  fast = jax.jit(lambda mp, g, s: fast_cells.fast_apply(config, mp, g, s,
                                                        chunk=chunk))
  w = lambda n: jnp.cos(jnp.arange(n, dtype=jnp.float32))

  def plain_loss(mp, g, s):
    d, h = cell.apply(mp, g, s)
    return jnp.sum(d * w(g.shape[0])) + sum(jnp.sum(x ** 2) for x in h)

  def fast_loss(mp, g, s):
    d, h = fast_apply_t(mp, g, s)
    return jnp.sum(d * w(g.shape[0])) + sum(jnp.sum(x ** 2) for x in h)

  def fast_apply_t(mp, g, s):
    return fast_cells.fast_apply(config, mp, g, tuple(x.T for x in s),
                                 chunk=chunk)

  return (config, plain, fast, jax.jit(jax.grad(plain_loss)),
          jax.jit(jax.grad(fast_loss)))


# Every config unchunked; two also in chunks of 128 (300 = 2 x 128 + 44:
# padding and the lax.map path).
CASES = ([(name, 300, 4096) for name in sorted(CONFIGS)] +
         [('optim4rl', 300, 128), ('linear', 300, 128)])


@pytest.mark.parametrize('name,n,chunk', CASES)
def test_fast_path_equals_the_haiku_module(name, n, chunk):
  config, plain, fast, plain_grad, fast_grad = _fns(name, chunk)
  _, mp, g, state = _inputs(config, n, jax.random.PRNGKey(n + chunk))
  d0, h0 = plain(mp, g, state)
  d1, h1 = fast(mp, g, tuple(x.T for x in state))
  # The direction spans many decades: compare relative to each coordinate;
  # LinearOptim's sum of two terms may cancel, so its check is relative to
  # the largest term.
  atol = 1e-6 * float(jnp.abs(d0).max()) if config.cell == 'linear' else 0.
  np.testing.assert_allclose(d1, d0, rtol=2e-5, atol=atol)
  for a, b in zip(h0, h1):
    np.testing.assert_allclose(b.T, a, rtol=1e-5, atol=1e-6)
  g0 = plain_grad(mp, g, state)
  g1 = fast_grad(mp, g, state)
  for key in g0:
    for field in g0[key]:
      np.testing.assert_allclose(g1[key][field], g0[key][field], rtol=1e-4,
                                 atol=1e-4 * float(jnp.abs(g0[key][field]).max()),
                                 err_msg=f'{key}/{field}')


def test_optimizer_implementations_agree_over_steps():
  lo_fast = lopt.learned_optimizer(cell='optim4rl', implementation='fast')
  lo_plain = lopt.learned_optimizer(cell='optim4rl', implementation='haiku')
  mp = lo_fast.init(jax.random.PRNGKey(0))
  params = {'w': jnp.ones((40, 30)), 'b': jnp.zeros(30)}
  grads = jax.tree.map(lambda p: 1e-3 * jnp.cos(jnp.arange(p.size).reshape(
      p.shape) * 1.0), params)
  out = []
  for lo in (lo_fast, lo_plain):
    opt = lo.opt_fn(mp, 1e-2)
    state = opt.init(params)
    ups = []
    for _ in range(3):
      u, state = jax.jit(opt.update)(grads, state)
      ups.append(u)
    out.append((ups, lopt.direction_state(state).cell_state))
  for a, b in zip(jax.tree.leaves(out[0][0]), jax.tree.leaves(out[1][0])):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-12)
  for a, b in zip(out[0][1], out[1][1]):
    assert a.shape == (8, 1230) and b.shape == (1230, 8)
    np.testing.assert_allclose(a.T, b, rtol=1e-5, atol=1e-6)


def test_bad_implementation_and_state_shapes_are_named():
  with pytest.raises(ValueError, match="implementation: unknown 'cuda'"):
    lopt.learned_optimizer(implementation='cuda')
  lo = lopt.learned_optimizer(cell='optim4rl', implementation='fast')
  mp = lo.init(jax.random.PRNGKey(0))
  opt = lo.direction_fn(mp)
  state = opt.init(jnp.zeros(5))
  impl = fast_cells.make(lo.config, 'fast')
  with pytest.raises(AssertionError, match='rank'):
    impl.apply(mp, jnp.zeros((5, 1)), state.cell_state)
  bad = state._replace(cell_state=(jnp.zeros((5, 8)), jnp.zeros((5, 8))))
  with pytest.raises(AssertionError, match='shape'):
    opt.update(jnp.zeros(5), bad)
