"""One check every learned optimizer must pass (the contract of `lopt.optimizer`).

    >>> import lopt
    >>> lopt.testing.check_learned_optimizer(
    ...     lopt.learned_optimizer(cell='optim4rl'), zero_grad_moves=False)

Use it in the tests of a new cell: it asserts the properties that
meta-training, serialization and users' optax loops rely on, and raises an
`AssertionError` naming the one that fails.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt import optimizer as optimizer_lib


def _params(dtype):
  return {'w': jnp.ones((3, 2), dtype), 'b': jnp.zeros((2,), dtype),
          'c': {'s': jnp.ones((), dtype)}}


def _spec(tree):
  return jax.tree.map(lambda x: (x.shape, jnp.dtype(x.dtype)), tree)


def _perturbed(meta_params, key, scale=0.3):
  """Meta-params moved away from their init, so outputs depend on them."""
  leaves, treedef = jax.tree.flatten(meta_params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(treedef, [
      x + scale * jax.random.normal(k, x.shape, x.dtype)
      for x, k in zip(leaves, keys)])


def _check_meta_params(lo, meta_params):
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(meta_params))
  assert count == lo.num_meta_params, (
      f'num_meta_params: {lo.num_meta_params}, init gives {count}')
  assert isinstance(lo.name, str) and lo.name, 'name: must be a string'


def _check_shapes_kept(lo, meta_params):
  """Shapes and dtypes of state and updates fixed over steps, under jit."""
  for dtype in (jnp.float32, jnp.bfloat16):
    opt = optax.chain(optax.clip(1.0), lo.opt_fn(meta_params, 1e-2))
    params = _params(dtype)
    state = opt.init(params)
    want_struct, want_spec = jax.tree.structure(state), _spec(state)
    update = jax.jit(opt.update)
    for i in range(3):
      grads = jax.tree.map(lambda p, i=i: jnp.full_like(p, 0.1 * (i + 1)),
                           params)
      updates, state = update(grads, state, params)
      assert jax.tree.structure(state) == want_struct, 'state structure'
      assert _spec(state) == want_spec, f'state shapes/dtypes ({dtype})'
      assert _spec(updates) == _spec(params), f'update dtypes ({dtype})'
      assert all(bool(jnp.all(jnp.isfinite(u)))
                 for u in jax.tree.leaves(updates)), 'non-finite update'
      params = optax.apply_updates(params, updates)
    assert int(optimizer_lib.direction_state(state).count) == 3, 'count'


def _check_init_reads_shapes_only(lo, meta_params, key):
  a = lo.opt_fn(meta_params).init(_params(jnp.float32))
  b = lo.opt_fn(_perturbed(meta_params, key)).init(
      jax.tree.map(lambda x: x + 5., _params(jnp.float32)))
  assert all(bool(jnp.array_equal(x, y)) for x, y in zip(
      jax.tree.leaves(a), jax.tree.leaves(b))), (
          'opt_fn(meta_params).init(params) must read only shapes')


def _check_vmap_and_lr(lo, meta_params, key):
  g = jax.random.normal(key, (4, 5))
  opt = lo.opt_fn(meta_params, 1e-2)
  u_v, _ = jax.vmap(opt.update)(g, jax.vmap(opt.init)(g))
  for i in range(g.shape[0]):
    u_i, _ = opt.update(g[i], opt.init(g[i]))
    # float32: the linear cell's exp(o1) g + exp(o2) o3 cancels, and vmap
    # may order the sums differently (seen: 1.02e-5 relative at XLA -O0).
    np.testing.assert_allclose(u_v[i], u_i, rtol=1e-4, atol=1e-12,
                               err_msg='vmap over a population')
  u2, _ = lo.opt_fn(meta_params, 2e-2).update(g[0], opt.init(g[0]))
  np.testing.assert_allclose(u2, 2. * u_v[0], rtol=1e-5, atol=1e-12,
                             err_msg='learning rate scales the update')


def _check_meta_gradient(lo, meta_params, key):
  """grad of a loss after two updates w.r.t. the meta-params: finite, != 0."""
  target = jax.random.normal(key, (6,))

  def loss(mp):
    opt = lo.opt_fn(mp, 1e-1)
    w = jnp.zeros(6)
    state = opt.init(w)
    for _ in range(2):
      u, state = opt.update(jax.grad(lambda w: jnp.sum((w - target) ** 2))(w),
                            state)
      w = w + u
    return jnp.sum((w - target) ** 2)

  grads = jax.jit(jax.grad(loss))(meta_params)
  leaves = jax.tree.leaves(grads)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in leaves), (
      'non-finite meta-gradient')
  assert any(bool(jnp.any(x != 0)) for x in leaves), 'zero meta-gradient'


def _check_zero_gradient(lo, meta_params, zero_grad_moves: bool):
  opt = lo.opt_fn(meta_params, 1e-2)
  g = jnp.zeros(5)
  u, state = opt.update(g, opt.init(g))
  assert bool(jnp.all(jnp.isfinite(u))), 'non-finite update at g = 0'
  if not zero_grad_moves:
    np.testing.assert_array_equal(u, 0., err_msg='g = 0 must give 0')
  u2, _ = opt.update(g, state)
  assert bool(jnp.all(jnp.isfinite(u2))), 'non-finite 2nd update at g = 0'


def check_non_finite_policy(lo: optimizer_lib.LearnedOptimizer,
                            meta_params) -> None:
  """Asserts the contract's policy for non-finite gradients: NaN in, NaN out.

  As optax's Adam: a coordinate whose gradient is NaN or inf gets a
  non-finite update at that step, the other coordinates are unaffected, and
  the coordinate is never silently frozen afterwards (its later updates are
  non-finite, or move with its gradient; an exact zero or a constant is a
  coordinate frozen by a cell that swallowed the NaN).
  """
  opt = lo.opt_fn(meta_params, 1e-2)
  update = jax.jit(opt.update)
  for bad in (jnp.nan, jnp.inf):
    g = jnp.linspace(-1e-2, 1e-2, 8).at[3].set(1e-3)
    u0, state = update(g, opt.init(g))
    u1, state = update(g.at[3].set(bad), state)
    assert not bool(jnp.isfinite(u1[3])), (
        f'non-finite gradients: a {bad} gradient gave a finite update '
        f'{float(u1[3])}; the policy is NaN in, NaN out')
    others = np.delete(np.arange(8), 3)
    assert bool(jnp.all(jnp.isfinite(u1[others]))), (
        f'non-finite gradients: a {bad} in one coordinate made others '
        'non-finite')
    later = []
    for scale in (1., -3.):
      u, state = update(scale * g, state)
      assert bool(jnp.all(jnp.isfinite(u[others]))), (
          'non-finite gradients: clean coordinates went non-finite later')
      later.append(float(u[3]))
    finite = np.isfinite(later)
    assert not finite.any() or (finite.all() and later[0] != later[1]
                                and 0. not in later), (
        f'non-finite gradients: after a {bad} gradient the coordinate is '
        f'frozen (later updates {later}); it must stay non-finite or move')
    del u0


def check_learned_optimizer(lo: optimizer_lib.LearnedOptimizer, *,
                            zero_grad_moves: bool,
                            seed: int = 0, meta_params=None) -> None:
  """Asserts the learned-optimizer contract for `lo`.

  Checks: `name` and `num_meta_params`; state structure, shapes and dtypes
  (float32 and bfloat16 parameters) fixed across jitted steps inside
  `optax.chain`; `init` reads only shapes and never stores the parameters;
  `vmap` over a population equals a loop; the learning rate scales the
  update linearly; the meta-gradient through two updates is finite and
  non-zero; a zero gradient gives a finite update (exactly zero unless
  `zero_grad_moves`, e.g. LinearOptim's bias term moves at g = 0); a
  non-finite gradient gives a non-finite update and never a frozen
  coordinate (`check_non_finite_policy`); a learning rate of a wrong type
  or value is refused, naming the field.

  Args:
    lo: the learned optimizer. One whose cell has the training-progress
      input (`CellConfig.progress_input`) must have a default run length,
      `lopt.learned_optimizer(..., total_steps=...)`: the checks call
      `lo.opt_fn(meta_params, learning_rate)` as any optax user would.
    zero_grad_moves: whether this cell may move a coordinate whose gradient
      is zero.
    seed: for meta-params and gradients.
    meta_params: check with these (e.g. a shipped optimizer's); default:
      `lo.init` moved off its initial values.
  """
  key = jax.random.PRNGKey(seed)
  k_init, k_pert, k1, k2, k3 = jax.random.split(key, 5)
  _check_meta_params(lo, lo.init(k_init))
  if meta_params is None:
    meta_params = _perturbed(lo.init(k_init), k_pert)
  _check_shapes_kept(lo, meta_params)
  _check_init_reads_shapes_only(lo, meta_params, k1)
  _check_vmap_and_lr(lo, meta_params, k2)
  _check_meta_gradient(lo, meta_params, k3)
  _check_zero_gradient(lo, meta_params, zero_grad_moves)
  check_non_finite_policy(lo, meta_params)
  _check_learning_rate_refused(lo, meta_params)


def _check_learning_rate_refused(lo, meta_params):
  for bad in ('1e-3', True, -1e-3, float('nan'), [1e-3]):
    try:
      lo.opt_fn(meta_params, bad)
    except (TypeError, ValueError) as e:
      assert 'learning_rate' in str(e), (
          f'learning_rate={bad!r} refused without naming the field: {e}')
    else:
      raise AssertionError(f'learning_rate={bad!r} was accepted')
