"""The learned optimizer: cell properties and the optax contract."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
from lopt import cells
from lopt.cell_runtime import dispatch
from lopt import optimizer as optimizer_lib

CELLS = sorted(cells.CELLS)


@functools.lru_cache(maxsize=None)
def _lo(cell, lr=1e-3):
  return lopt.learned_optimizer(learning_rate=lr, cell=cell)


def _random_meta_params(lo, key, scale):
  """Meta-params with weights scaled up, so outputs are far from init."""
  mp = lo.init(key)
  leaves, treedef = jax.tree.flatten(mp)
  keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
  leaves = [x * scale + 0.1 * jax.random.normal(k, x.shape)
            for x, k in zip(leaves, keys)]
  return jax.tree.unflatten(treedef, leaves)


def _params(dtype=jnp.float32):
  return {'w': jnp.ones((3, 2), dtype), 'b': jnp.zeros((2,), dtype),
          'c': {'s': jnp.ones((), dtype)}}


@pytest.mark.parametrize('seed', range(4))
def test_optim4rl_update_has_sign_of_minus_g(seed):
  lo = _lo('optim4rl')
  key = jax.random.PRNGKey(seed)
  mp = _random_meta_params(lo, key, scale=1. + seed)
  g = jax.random.normal(jax.random.fold_in(key, 2), (200,))
  g = g * 10. ** jax.random.uniform(jax.random.fold_in(key, 3), (200,),
                                    minval=-12, maxval=2)
  g = g.at[:5].set(0.)
  opt = lo.opt_fn(mp)
  state = opt.init(g)
  for _ in range(3):  # the property holds whatever the recurrent state
    u, state = jax.jit(opt.update)(g, state)
    nz = np.asarray(g) != 0
    np.testing.assert_array_equal(np.sign(u)[nz], -np.sign(g)[nz])
    np.testing.assert_array_equal(np.asarray(u)[:5], 0.)  # g = 0 -> 0
    assert bool(jnp.all(jnp.isfinite(u)))


@pytest.mark.parametrize('cell', CELLS)
def test_zero_gradient_update(cell):
  lo = _lo(cell)
  opt = lo.opt_fn(_random_meta_params(lo, jax.random.PRNGKey(0), 1.))
  g = jnp.zeros(7)
  u, _ = opt.update(g, opt.init(g))
  if cell == 'linear':  # exp(o2) * o3 needs no gradient: moves anyway
    assert bool(jnp.all(jnp.isfinite(u))) and float(jnp.abs(u).max()) > 0
  else:
    np.testing.assert_array_equal(u, 0.)


@pytest.mark.parametrize('cell', CELLS)
def test_recurrent_state_is_carried(cell):
  lo = _lo(cell)
  opt = lo.opt_fn(_random_meta_params(lo, jax.random.PRNGKey(1), 1.))
  g = jnp.linspace(-1., 1., 6) + 0.05
  s0 = opt.init(g)
  u1, s1 = opt.update(g, s0)
  u2, s2 = opt.update(g, s1)
  assert int(lopt.direction_state(s2).count) == 2
  for h in lopt.direction_state(s1).cell_state:
    assert h.shape == (6, lo.config.hidden_size)
    assert float(jnp.abs(h).max()) > 0
  # Same gradient, different state -> different update.
  assert float(jnp.abs(u1 - u2).max()) > 0
  # Restarting from the initial state reproduces the first update.
  u1_again, _ = opt.update(g, s0)
  np.testing.assert_array_equal(u1, u1_again)


@pytest.mark.parametrize('cell', CELLS)
def test_every_cell_passes_the_learned_optimizer_contract(cell):
  lopt.testing.check_learned_optimizer(_lo(cell),
                                       zero_grad_moves=(cell == 'linear'))


def test_contract_check_catches_a_broken_optimizer():
  # An optimizer whose state holds the parameters fails the shared check.
  lo = _lo('l2lgd2')

  def leaky_opt_fn(meta_params, learning_rate=None):
    inner = lo.opt_fn(meta_params, learning_rate)

    def update(u, s, p=None):
      u, inner_state = inner.update(u, s[0])
      return u, (inner_state, s[1])

    return optax.GradientTransformation(lambda p: (inner.init(p), p), update)

  with pytest.raises(AssertionError, match='read only shapes'):
    lopt.testing.check_learned_optimizer(lo._replace(opt_fn=leaky_opt_fn),
                                         zero_grad_moves=False)


def test_contract_is_stated_on_the_optimizer():
  lo = _lo('optim4rl')
  assert lo.name == 'optim4rl'
  mp = lo.init(jax.random.PRNGKey(0))
  assert lo.num_meta_params == sum(x.size for x in jax.tree.leaves(mp))
  # The direction alone: opt_fn is direction_fn chained with -lr.
  g = jnp.array([0.3, -2e-5, 1.])
  d, _ = lo.direction_fn(mp).update(g, lo.direction_fn(mp).init(g))
  u, _ = lo.opt_fn(mp, 0.5).update(g, lo.opt_fn(mp).init(g))
  np.testing.assert_allclose(u, -0.5 * d, rtol=1e-6)


def test_linear_schedule_gives_the_expected_per_step_scale():
  lo = _lo('optim4rl')
  mp = _random_meta_params(lo, jax.random.PRNGKey(2), 1.)
  schedule = optax.linear_schedule(1e-2, 0., transition_steps=4)
  sched_opt, plain = lo.opt_fn(mp, schedule), lo.opt_fn(mp, 1.)
  g = jnp.array([0.5, -1e-3, 2.])
  s_sched, s_plain = sched_opt.init(g), plain.init(g)
  update = jax.jit(sched_opt.update)
  for step in range(5):
    u, s_sched = update(g, s_sched)
    d, s_plain = plain.update(g, s_plain)  # lr 1: minus the direction
    np.testing.assert_allclose(u, float(schedule(step)) * d, rtol=1e-5,
                               atol=1e-12)
  np.testing.assert_array_equal(u, 0.)  # the schedule reached 0


def test_inject_hyperparams_changes_the_step_without_recompiling():
  lo = _lo('optim4rl')
  mp = _random_meta_params(lo, jax.random.PRNGKey(3), 1.)
  opt = optax.inject_hyperparams(functools.partial(lo.opt_fn, mp))(
      learning_rate=1e-2)
  g = jnp.array([0.5, -1e-3, 2.])
  state = opt.init(g)
  update = jax.jit(opt.update)
  u1, _ = update(g, state)
  state.hyperparams['learning_rate'] = 3. * state.hyperparams['learning_rate']
  u3, _ = update(g, state)
  np.testing.assert_allclose(u3, 3. * u1, rtol=1e-5)
  assert update._cache_size() == 1  # pylint: disable=protected-access
  with pytest.raises(ValueError, match='learning_rate: must be'):
    lo.opt_fn(mp, 'high')


def test_one_flat_cell_call_for_all_leaves():
  lo = _lo('optim4rl')
  mp = _random_meta_params(lo, jax.random.PRNGKey(3), 1.)
  opt = lo.opt_fn(mp)
  tree = {'a': jnp.array([0.3, -0.2]), 'b': jnp.array([[1e-4], [-5.]])}
  flat = optimizer_lib.flatten(tree)
  u_tree, s_tree = opt.update(tree, opt.init(tree))
  u_flat, s_flat = opt.update(flat, opt.init(flat))
  np.testing.assert_array_equal(optimizer_lib.flatten(u_tree), u_flat)
  for a, b in zip(lopt.direction_state(s_tree).cell_state,
                  lopt.direction_state(s_flat).cell_state):
    np.testing.assert_array_equal(a, b)


def test_composes_with_clip_in_chain():
  lo = _lo('optim4rl')
  mp = _random_meta_params(lo, jax.random.PRNGKey(4), 1.)
  g = jnp.array([5., -3., 0.5, -0.2])
  chained = optax.chain(optax.clip(1.0), lo.opt_fn(mp))
  u_chain, _ = chained.update(g, chained.init(g))
  plain = lo.opt_fn(mp)
  u_plain, _ = plain.update(jnp.clip(g, -1., 1.), plain.init(g))
  np.testing.assert_allclose(u_chain, u_plain, rtol=1e-6)
  # And a schedule after it: scale_by_schedule multiplies the update.
  sched = optax.chain(lo.opt_fn(mp), optax.scale(0.5))
  u_s, _ = sched.update(g, sched.init(g))
  u_p, _ = plain.update(g, plain.init(g))
  np.testing.assert_allclose(u_s, 0.5 * u_p, rtol=1e-6)


def test_learning_rate_scales_updates():
  lo = _lo('optim4rl')
  mp = lo.init(jax.random.PRNGKey(0))
  g = jnp.array([0.1, -0.3])
  u1, _ = lo.opt_fn(mp, 1e-3).update(g, lo.opt_fn(mp).init(g))
  u2, _ = lo.opt_fn(mp, 2e-3).update(g, lo.opt_fn(mp).init(g))
  np.testing.assert_allclose(u2, 2 * u1, rtol=1e-6)


def test_vmap_population_matches_loop():
  lo = _lo('optim4rl')
  opt = lo.opt_fn(_random_meta_params(lo, jax.random.PRNGKey(5), 1.))
  grads = jax.random.normal(jax.random.PRNGKey(6), (4, 5))
  states = jax.vmap(opt.init)(grads)
  u_v, s_v = jax.jit(jax.vmap(opt.update))(grads, states)
  for i in range(4):
    u_i, s_i = opt.update(grads[i], opt.init(grads[i]))
    np.testing.assert_allclose(u_v[i], u_i, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(lopt.direction_state(s_v).cell_state[0][i],
                               lopt.direction_state(s_i).cell_state[0],
                               rtol=1e-5, atol=1e-7)


def _quadratic_meta_loss(lo, meta_params):
  """Loss of a 3-d quadratic after 4 learned-optimizer steps."""
  a = jnp.array([1., 4., 0.5])
  loss = lambda x: 0.5 * jnp.sum(a * x ** 2)
  opt = lo.opt_fn(meta_params)
  x = jnp.array([1., -1., 2.])
  state = opt.init(x)
  for _ in range(4):
    u, state = opt.update(jax.grad(loss)(x), state)
    x = x + u
  return loss(x)


@pytest.mark.parametrize('cell', CELLS)
def test_meta_gradient_matches_finite_differences(cell):
  lo = lopt.learned_optimizer(learning_rate=0.1, cell=cell)
  mp = lo.init(jax.random.PRNGKey(7))
  f = jax.jit(functools.partial(_quadratic_meta_loss, lo))
  grad = jax.jit(jax.grad(functools.partial(_quadratic_meta_loss, lo)))(mp)
  direction = jax.tree.map(
      lambda x, k: jax.random.normal(k, x.shape),
      mp, jax.tree.unflatten(jax.tree.structure(mp), list(jax.random.split(
          jax.random.PRNGKey(8), len(jax.tree.leaves(mp))))))
  eps = 1e-3
  plus = f(jax.tree.map(lambda p, d: p + eps * d, mp, direction))
  minus = f(jax.tree.map(lambda p, d: p - eps * d, mp, direction))
  fd = (plus - minus) / (2 * eps)
  analytic = sum(jnp.sum(g * d) for g, d in zip(jax.tree.leaves(grad),
                                                jax.tree.leaves(direction)))
  assert abs(float(analytic)) > 1e-4  # the check is not vacuous
  np.testing.assert_allclose(float(analytic), float(fd), rtol=0.05)


def test_bad_config_names_the_field():
  with pytest.raises(ValueError, match="cell: unknown cell 'lstm'"):
    lopt.learned_optimizer(cell='lstm')
  with pytest.raises(ValueError, match='preprocessor: unknown'):
    lopt.learned_optimizer(cell='optim4rl', preprocessor='log')
  with pytest.raises(ValueError, match='activation: unknown'):
    lopt.learned_optimizer(activation='swish2')
  with pytest.raises(ValueError, match='hidden_size'):
    lopt.learned_optimizer(hidden_size=0)
  with pytest.raises(ValueError, match='learning_rate: must be'):
    lopt.learned_optimizer(learning_rate=0.)
  with pytest.raises(ValueError, match='learning_rate: must be'):
    lopt.learned_optimizer(learning_rate=-1e-3)


def test_save_load_round_trip_and_mismatch(tmp_path):
  lo = _lo('optim4rl')
  mp = _random_meta_params(lo, jax.random.PRNGKey(9), 1.)
  path = lopt.save(str(tmp_path / 'opt.npz'), mp, lo, extra={'note': 'x'})
  lo2, mp2 = lopt.load(path, expected=lo.config)
  assert lo2.config == lo.config
  jax.tree.map(np.testing.assert_array_equal, mp, mp2)
  g = jnp.array([0.2, -1e-6])
  u1, _ = lo.opt_fn(mp).update(g, lo.opt_fn(mp).init(g))
  u2, _ = lo2.opt_fn(mp2).update(g, lo2.opt_fn(mp2).init(g))
  np.testing.assert_array_equal(u1, u2)
  assert lopt.serialization.read_metadata(path)['extra'] == {'note': 'x'}
  # Another configuration: a clear error naming the differing field.
  with pytest.raises(ValueError, match='hidden_size: file has 8, expected 16'):
    lopt.load(path, expected=lopt.CellConfig(hidden_size=16))


def test_load_rejects_corrupt_and_mismatched_files(tmp_path):
  bad = tmp_path / 'bad.npz'
  bad.write_bytes(b'not a zip file at all')
  with pytest.raises(ValueError, match='not a readable'):
    lopt.load(str(bad))
  # Arrays that do not fit the config they claim.
  lo = _lo('optim4rl')
  mp = lo.init(jax.random.PRNGKey(0))
  mp = jax.tree.map(lambda x: x, mp)
  mp['sign_path/gru']['w_i'] = jnp.zeros((3, 24))
  path = lopt.save(str(tmp_path / 'shape.npz'), mp, lo)
  with pytest.raises(ValueError, match="'sign_path/gru/w_i' has shape"):
    lopt.load(path)
  # A plain npz without metadata.
  np.savez(tmp_path / 'plain.npz', a=np.zeros(3))
  with pytest.raises(ValueError, match='not a lopt meta-params file'):
    lopt.load(str(tmp_path / 'plain.npz'))


def test_grad_ema_feeds_the_cell_a_debiased_moving_average(tmp_path):
  # grad_ema = b: the cell sees m_t = EMA_b(g)_t / (1 - b^t) in place of g_t;
  # same cell, same meta-params as grad_ema = 0.
  plain = lopt.learned_optimizer(learning_rate=1e-3)
  ema = lopt.learned_optimizer(learning_rate=1e-3, grad_ema=0.9)
  mp = _random_meta_params(plain, jax.random.PRNGKey(3), 1.)
  jax.tree.map(lambda a, b: np.testing.assert_equal(a.shape, b.shape),
               plain.init(jax.random.PRNGKey(0)), ema.init(jax.random.PRNGKey(0)))
  gs = jax.random.normal(jax.random.PRNGKey(4), (5, 7)) * 1e-3
  o_plain, o_ema = plain.opt_fn(mp), ema.opt_fn(mp)
  s_plain, s_ema = o_plain.init(gs[0]), o_ema.init(gs[0])
  avg = jnp.zeros(7)
  for t, g in enumerate(gs, start=1):
    avg = 0.9 * avg + 0.1 * g
    u_plain, s_plain = o_plain.update(avg / (1 - 0.9**t), s_plain)
    u_ema, s_ema = o_ema.update(g, s_ema)
    np.testing.assert_allclose(u_ema, u_plain, rtol=1e-5, atol=1e-12)
  assert int(lopt.direction_state(s_ema).count) == 5
  # The update's sign is the average's, not the last gradient's.
  flip = jnp.array([1., -1., 1., -1., 1., -1., 1.]) * 1e-3
  u, _ = o_ema.update(-0.1 * flip, o_ema.update(flip, o_ema.init(flip))[1])
  np.testing.assert_array_equal(jnp.sign(u), -jnp.sign(flip))
  lopt.testing.check_learned_optimizer(ema, zero_grad_moves=False)
  # Saved and loaded with the rest of the config.
  path = lopt.save(str(tmp_path / 'ema.npz'), mp, ema)
  assert lopt.load(path)[0].config.grad_ema == 0.9
  with pytest.raises(ValueError, match=r'grad_ema: must be in \[0, 1\)'):
    lopt.learned_optimizer(grad_ema=1.0)


@pytest.mark.parametrize('cell,mlp_dims', [(c, (16, 16)) for c in CELLS] +
                         [('optim4rl', (4,))])
def test_rescaled_meta_params_scale_every_update_exactly(cell, mlp_dims):
  # cells.rescale keeps a step factor in the meta-params: the same state,
  # every update times the factor (also a cell with another MLP depth).
  lo = lopt.learned_optimizer(learning_rate=1e-3, cell=cell,
                              mlp_dims=mlp_dims)
  mp = _random_meta_params(lo, jax.random.PRNGKey(1), 1.)
  scaled = cells.rescale(lo.config, mp, 2.5)
  plain, mine = lo.opt_fn(mp), lo.opt_fn(scaled)
  s_plain, s_mine = plain.init(_params()), mine.init(_params())
  for i in range(3):
    g = jax.tree.map(lambda x, i=i: jax.random.normal(
        jax.random.PRNGKey(i), x.shape), _params())
    u_plain, s_plain = plain.update(g, s_plain)
    u_mine, s_mine = mine.update(g, s_mine)
    for a, b in zip(jax.tree.leaves(u_mine), jax.tree.leaves(u_plain)):
      np.testing.assert_allclose(a, 2.5 * b, rtol=1e-5, atol=1e-12)
  with pytest.raises(ValueError, match='scale: must be > 0'):
    cells.rescale(lo.config, mp, 0.)
  with pytest.raises(ValueError, match="no layer 'sign_path/mlp/~/linear_2'"):
    cells.rescale(cells.CellConfig(), {}, 2.)


def test_unit_rms_sets_each_updates_size_to_the_rate(tmp_path):
  # CellConfig.unit_rms: the plain cell's direction over its RMS over all
  # coordinates, per agent under vmap; a zero update stays zero; saved.
  plain = lopt.learned_optimizer(learning_rate=0.1, hidden_size=4,
                                 mlp_dims=(4,))
  unit = lopt.learned_optimizer(learning_rate=0.1, hidden_size=4,
                                mlp_dims=(4,), unit_rms=True)
  mp = _random_meta_params(plain, jax.random.PRNGKey(2), 1.)
  g = jax.tree.map(lambda x: jax.random.normal(jax.random.PRNGKey(3),
                                               x.shape), _params())
  u_plain, _ = plain.opt_fn(mp).update(g, plain.opt_fn(mp).init(g))
  u_unit, _ = unit.opt_fn(mp).update(g, unit.opt_fn(mp).init(g))
  flat = lambda u: np.concatenate([np.ravel(x) for x in jax.tree.leaves(u)])
  a, b = flat(u_unit), flat(u_plain)
  np.testing.assert_allclose(np.sqrt(np.mean(a ** 2)), 0.1, rtol=1e-5)
  np.testing.assert_allclose(a, b * 0.1 / np.sqrt(np.mean(b ** 2)),
                             rtol=1e-5)
  # Two agents, gradients 1e3 apart: each update has RMS 0.1.
  opt = unit.opt_fn(mp)
  gs = jax.tree.map(lambda x: jnp.stack([x, 1e-3 * x]), g)
  us, _ = jax.vmap(opt.update)(gs, jax.vmap(opt.init)(gs))
  for i in range(2):
    u = flat(jax.tree.map(lambda x, i=i: x[i], us))
    np.testing.assert_allclose(np.sqrt(np.mean(u ** 2)), 0.1, rtol=1e-5)
  zero = jax.tree.map(jnp.zeros_like, g)
  u, _ = opt.update(zero, opt.init(zero))
  np.testing.assert_array_equal(flat(u), 0.)
  path = str(tmp_path / 'unit.npz')
  lopt.save(path, mp, unit)
  assert lopt.load(path)[0].config.unit_rms is True
  with pytest.raises(ValueError, match='unit_rms: must be a bool'):
    cells.CellConfig(unit_rms='yes')


def test_second_moment_feeds_the_magnitude_path_adams_moments(tmp_path):
  # second_moment = b2 (with grad_ema = b1): the cell's input is the pair
  # (m_t, s_t), the debiased EMAs of g and g^2, kept flat in the state; the
  # same meta-params shapes; haiku, the fast path (in chunks) and a folded
  # vmap agree, and so do their meta-gradients.
  config = cells.CellConfig(hidden_size=4, mlp_dims=(6,), grad_ema=0.9,
                            second_moment=0.99)
  lo = lopt.learned_optimizer(learning_rate=1e-3, config=config)
  plain = lopt.learned_optimizer(learning_rate=1e-3, hidden_size=4,
                                 mlp_dims=(6,))
  mp = _random_meta_params(plain, jax.random.PRNGKey(5), 1.)
  jax.tree.map(lambda a, b: np.testing.assert_equal(a.shape, b.shape),
               plain.init(jax.random.PRNGKey(0)), lo.init(jax.random.PRNGKey(0)))
  gs = jax.random.normal(jax.random.PRNGKey(6), (4, 2, 7)) * jnp.logspace(
      -6, -1, 7)
  cell = cells.make_cell(config)
  m, s, h, want = jnp.zeros(7), jnp.zeros(7), config.initial_state(7), []
  for t, g in enumerate(gs[:, 0], start=1):
    m, s = 0.9 * m + 0.1 * g, 0.99 * s + 0.01 * g * g
    inputs = (m / (1 - 0.9**t), s / (1 - 0.99**t))
    d, h_next = cell.apply(mp, inputs, h)
    h = h_next
    want.append(-1e-3 * d)
  runs = {}
  for name, kwargs in (('haiku', {}), ('unfolded', dict(fold_vmap=False))):
    lo_i = lopt.learned_optimizer(learning_rate=1e-3, config=config, **kwargs)
    runs[name] = jax.jit(functools.partial(_updates_over, lo_i))
    np.testing.assert_allclose(runs[name](mp, gs[:, 0]), jnp.stack(want),
                               rtol=2e-5, atol=1e-12, err_msg=name)
  state = lo.opt_fn(mp).init(gs[0, 0])
  moments, cell_state = state[0]  # the (direction, rate) chain's first
  assert moments.second.shape == (7,) and moments.mean.shape == (7,)
  assert lopt.direction_state(state) is cell_state
  # Under vmap over two agents (the cell folded): each agent as alone, and
  # the meta-gradient of the folded vmap is the plain vmap's.
  both = jax.vmap(runs['haiku'], in_axes=(None, 1))(mp, gs)
  for i in range(2):
    np.testing.assert_allclose(both[:, -1][i], runs['haiku'](mp, gs[:, i])[-1],
                               rtol=2e-5, atol=1e-12)
  grads = [jax.jit(jax.grad(lambda mp, f=runs[name]: jnp.sum(jnp.sin(
      1e3 * jax.vmap(f, in_axes=(None, 1))(mp, gs)))))(mp)
           for name in ('haiku', 'unfolded')]
  for x, y in zip(*map(jax.tree.leaves, grads)):
    np.testing.assert_allclose(x, y, rtol=1e-4,
                               atol=1e-5 * float(jnp.abs(y).max()) + 1e-12)
  path = lopt.save(str(tmp_path / 'sm.npz'), mp, lo)
  assert lopt.load(path)[0].config.second_moment == 0.99
  with pytest.raises(ValueError, match='second_moment: only the optim4rl'):
    cells.CellConfig(cell='l2lgd2', second_moment=0.99)
  with pytest.raises(ValueError, match=r'second_moment: must be in \[0, 1\)'):
    cells.CellConfig(second_moment=1.)
  with pytest.raises(ValueError, match='grad_ema: scale_by_learned_optimizer '
                     'takes it with second_moment or momentum_decays only'):
    optimizer_lib.scale_by_learned_optimizer(
        dispatch.make(config, 'haiku'), mp, grad_ema=0.9)
  with pytest.raises(ValueError, match=r'inputs: this cell takes the tuple '
                     r'\(g, s\)'):
    cells.make_apply(config)(mp, jnp.zeros(3), config.initial_state(3))


def _updates_over(lo, mp, gs):
  """The updates of `lo.opt_fn(mp)` over gradients `gs[T, N]`: `[T, N]`."""
  o = lo.opt_fn(mp)
  state, out = o.init(gs[0]), []
  for g in gs:
    u, state = o.update(g, state)
    out.append(u)
  return jnp.stack(out)
