"""Lifetime-aware inputs of the cells (OPEN's): training progress and
momentum at several timescales (`CellConfig.progress_input`,
`CellConfig.momentum_decays`)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
from lopt import cells
from lopt import optimizer as optimizer_lib
from lopt.cell_runtime import dispatch
from lopt.cell_runtime import fused

TINY = dict(hidden_size=2, mlp_dims=(4,))
DECAYS = (0.5, 0.9)

# (config fields, zero_grad_moves) of every kind of cell with the new inputs.
CONFIGS = {
    'optim4rl_progress': (dict(progress_input=True), False),
    'optim4rl_momenta': (dict(momentum_decays=DECAYS), False),
    'optim4rl_all': (dict(momentum_decays=DECAYS, progress_input=True,
                          grad_ema=0.8, second_moment=0.99), False),
    'l2lgd2_all': (dict(cell='l2lgd2', momentum_decays=DECAYS,
                        progress_input=True), False),
    'linear_all': (dict(cell='linear', momentum_decays=DECAYS,
                        progress_input=True), True),
}


@functools.lru_cache(maxsize=None)
def _lo(name, total_steps=10):
  fields, _ = CONFIGS[name]
  return lopt.learned_optimizer(learning_rate=1e-2, total_steps=total_steps,
                                **TINY, **fields)


def _meta_params(lo, seed=0, scale=1.):
  """Meta-params moved off their init, so outputs depend on every input."""
  mp = lo.init(jax.random.PRNGKey(seed))
  leaves, treedef = jax.tree.flatten(mp)
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
  return jax.tree.unflatten(treedef, [
      x * scale + 0.5 * jax.random.normal(k, x.shape)
      for x, k in zip(leaves, keys)])


def _probe(k: int) -> dispatch.Implementation:
  """A stateless 'cell' whose direction is its k-th input: shows what the
  optimizer feeds the cell."""
  def apply(meta_params, inputs, state):
    del meta_params
    return (inputs if isinstance(inputs, jax.Array) else inputs[k]), state
  return dispatch.Implementation('probe', lambda n: (), apply)


def test_defaults_are_off_and_shipped_optimizers_have_them_off():
  config = cells.CellConfig()
  assert config.momentum_decays == () and config.progress_input is False
  assert config.input_names == ('g',)
  for name in lopt.pretrained_lib.names():
    lo, _ = lopt.pretrained_lib.load(name)
    assert lo.config.momentum_decays == (), name
    assert lo.config.progress_input is False, name
    assert lo.config.input_names in (('g',), ('g', 's')), name


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_contract(name):
  lo = _lo(name)
  assert lo.implementation == 'haiku'  # 'auto' skips the kernel for these
  lopt.testing.check_learned_optimizer(lo, zero_grad_moves=CONFIGS[name][1])


def test_progress_input_is_count_over_total_steps():
  direction = optimizer_lib.scale_by_learned_optimizer(
      _probe(1), None, total_steps=4)
  g = jnp.array([0.3, -2., 1e-4])
  state = direction.init(g)
  got = []
  for _ in range(6):
    d, state = direction.update(g, state)
    np.testing.assert_array_equal(d, jnp.full_like(g, d[0]))  # same for all
    got.append(float(d[0]))
  np.testing.assert_allclose(got, [0., .25, .5, .75, 1., 1.], rtol=1e-7)
  assert int(state.count) == 6


def test_progress_reaches_the_cell_and_total_steps_overrides_default():
  lo = _lo('optim4rl_progress')
  mp = _meta_params(lo)
  g = jnp.array([0.3, -2., 1e-4, 5e-2])

  def updates(opt):
    state, out = opt.init(g), []
    for _ in range(3):
      u, state = opt.update(g, state)
      out.append(u)
    return out

  short, long_ = updates(lo.opt_fn(mp, total_steps=2)), updates(
      lo.opt_fn(mp, total_steps=1000))
  np.testing.assert_array_equal(short[0], long_[0])  # progress 0 for both
  assert not np.allclose(short[2], long_[2])  # 1 versus 0.002
  default = updates(lo.opt_fn(mp))  # lo's default: 10
  np.testing.assert_array_equal(default[2], updates(
      lo.opt_fn(mp, total_steps=10))[2])


def test_without_total_steps_a_progress_cell_is_refused():
  lo = lopt.learned_optimizer(progress_input=True, **TINY)
  mp = lo.init(jax.random.PRNGKey(0))
  assert lo.total_steps is None
  for make in (lambda: lo.opt_fn(mp), lambda: lo.opt_fn(mp, 1e-3),
               lambda: lo.direction_fn(mp)):
    with pytest.raises(ValueError, match='total_steps: this learned '
                       'optimizer has the training-progress input'):
      make()
  lo.opt_fn(mp, total_steps=100)  # given: fine


def test_total_steps_is_checked_and_ignored_without_progress_input():
  for bad in ('100', True, 0, -5, float('inf'), float('nan'), [10]):
    with pytest.raises(ValueError, match='total_steps: must be'):
      lopt.learned_optimizer(total_steps=bad, **TINY)
    with pytest.raises(ValueError, match='total_steps: must be'):
      _lo('optim4rl_progress').opt_fn(None, total_steps=bad)
  lo = lopt.learned_optimizer(**TINY)  # the paper's cell: no such input
  mp = _meta_params(lo)
  g = jnp.array([0.3, -2., 1e-4])
  a, _ = lo.opt_fn(mp).update(g, lo.opt_fn(mp).init(g))
  b, _ = lo.opt_fn(mp, total_steps=7).update(g, lo.opt_fn(mp).init(g))
  np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('grad_ema,second_moment', [(0., 0.), (0.8, 0.),
                                                    (0.8, 0.99)])
def test_momenta_are_debiased_emas_of_the_raw_gradient(grad_ema,
                                                       second_moment):
  gs = jnp.array([[1., -2., 0.5], [3., 1., -0.5], [-1., 0.25, 2.]])
  k0 = 1 + bool(second_moment)  # index of the first momentum input
  for k in range(k0 + len(DECAYS)):
    direction = optimizer_lib.scale_by_learned_optimizer(
        _probe(k), None, grad_ema, second_moment, DECAYS)
    state = direction.init(gs[0])
    for t, g in enumerate(gs, start=1):
      d, state = direction.update(g, state)
      if k == 0:  # the cell's g: the raw gradient or its EMA
        want = _ema(gs[:t], grad_ema) if grad_ema else g
      elif k < k0:  # Adam's s
        want = _ema(gs[:t] ** 2, second_moment)
      else:
        want = _ema(gs[:t], DECAYS[k - k0])
      np.testing.assert_allclose(d, want, rtol=1e-5, err_msg=f'{k}, {t}')
  moments, momenta, cell_state = state
  assert isinstance(moments, optimizer_lib.MomentsState)
  assert isinstance(cell_state, optimizer_lib.ScaleByLearnedOptimizerState)
  assert int(moments.count) == 3 and momenta.momenta.shape == (2, 3)
  for row, b in zip(momenta.momenta, DECAYS):  # kept biased, as optax.ema
    np.testing.assert_allclose(row, _ema(gs, b) * (1. - b ** 3), rtol=1e-6)


def _ema(gs, b):
  """Hand-computed debiased EMA of the rows of `gs`, at its last row."""
  m = np.zeros(gs.shape[1])
  for g in np.asarray(gs):
    m = b * m + (1. - b) * g
  return m / (1. - b ** len(gs))


def test_grad_ema_with_momenta_is_the_chained_ema():
  """With momenta the cell's g is the same debiased EMA that
  `optax.ema` gives the paper-style cell (kept inside instead)."""
  gs = jax.random.normal(jax.random.PRNGKey(0), (4, 5))
  inside = optimizer_lib.scale_by_learned_optimizer(
      _probe(0), None, 0.8, 0., DECAYS)
  chained = optax.chain(optax.ema(0.8, debias=True),
                        optimizer_lib.scale_by_learned_optimizer(
                            _probe(0), None))
  s1, s2 = inside.init(gs[0]), chained.init(gs[0])
  for g in gs:
    d1, s1 = inside.update(g, s1)
    d2, s2 = chained.update(g, s2)
    np.testing.assert_allclose(d1, d2, rtol=1e-6)


def test_optim4rl_sign_comes_from_the_gradient_with_momenta():
  lo = _lo('optim4rl_all')
  mp = _meta_params(lo, scale=3.)
  opt = lo.opt_fn(mp)
  state = opt.init(jnp.zeros(64))
  for seed in range(3):
    g = jax.random.normal(jax.random.PRNGKey(seed), (64,))
    u, state = opt.update(g, state)
    # grad_ema 0.8: the sign is the (debiased) momentum's, not any m_k's.
    moments = state[0][0]  # (moments, momenta, cell state), lr state
    m = moments.mean / (1. - 0.8 ** (seed + 1))
    np.testing.assert_array_equal(jnp.sign(u), -jnp.sign(m))


def test_state_layouts():
  g = jnp.zeros(3)
  plain = lopt.learned_optimizer(**TINY).opt_fn(None).init(g)
  progress = _lo('optim4rl_progress').opt_fn(None).init(g)
  # progress adds no state: it is read off the count
  assert jax.tree.structure(plain) == jax.tree.structure(progress)
  moments, momenta, _ = _lo('optim4rl_momenta').opt_fn(None).init(g)[0]
  assert moments.mean.shape == moments.second.shape == (0,)
  assert momenta.momenta.shape == (2, 3)


def test_optax_chain_and_inject_hyperparams():
  lo = _lo('optim4rl_all')
  mp = _meta_params(lo)
  params = {'w': jnp.ones((2, 2)), 'b': jnp.zeros(3)}
  grads = jax.tree.map(lambda p: jnp.linspace(-1., 2., p.size).reshape(
      p.shape), params)
  plain = optax.chain(optax.clip_by_global_norm(1.),
                      lo.opt_fn(mp, 1e-2, total_steps=3))
  injected = optax.inject_hyperparams(functools.partial(lo.opt_fn, mp))(
      learning_rate=1e-2, total_steps=3)
  injected = optax.chain(optax.clip_by_global_norm(1.), injected)
  s1, s2 = plain.init(params), injected.init(params)
  update = jax.jit(injected.update)
  for _ in range(4):
    u1, s1 = plain.update(grads, s1, params)
    u2, s2 = update(grads, s2, params)
    for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-12)
  # the run length changes between steps without recompiling
  s2[1].hyperparams['total_steps'] = jnp.asarray(1000)
  u3, _ = update(grads, s2, params)
  assert update._cache_size() == 1  # pylint: disable=protected-access
  assert not np.allclose(jax.tree.leaves(u3)[0], jax.tree.leaves(u2)[0])


def test_vmap_over_population_with_own_run_lengths_equals_loop():
  lo = _lo('optim4rl_all')
  mp = _meta_params(lo)
  gs = jax.random.normal(jax.random.PRNGKey(2), (3, 2, 5))  # [T, P, N]
  steps = jnp.array([2, 50])

  def run(g, total_steps):  # one agent's three updates
    opt = lo.opt_fn(mp, 1e-2, total_steps=total_steps)
    state, out = opt.init(g[0]), []
    for g_t in g:
      u, state = opt.update(g_t, state)
      out.append(u)
    return jnp.stack(out)

  batched = jax.vmap(run, in_axes=(1, 0))(gs, steps)
  for i in range(2):
    np.testing.assert_allclose(batched[i], run(gs[:, i], int(steps[i])),
                               rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize('name', ['optim4rl_all', 'l2lgd2_all'])
def test_meta_gradient_reaches_the_new_input_weights(name):
  # tanh: a tiny ReLU MLP at random weights may be dead (zero gradient)
  lo = lopt.learned_optimizer(**{**TINY, 'activation': 'tanh'},
                              **CONFIGS[name][0])
  mp = _meta_params(lo)
  target = jax.random.normal(jax.random.PRNGKey(3), (6,))

  def loss(meta_params):
    opt = lo.opt_fn(meta_params, 1e-1, total_steps=4)
    w = jnp.zeros(6)
    state = opt.init(w)
    for _ in range(3):
      u, state = opt.update(2. * (w - target), state)
      w = w + u
    return jnp.sum((w - target) ** 2)

  grads = jax.jit(jax.grad(loss))(mp)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(grads))
  path = 'sign_path' if lo.config.cell == 'optim4rl' else 'path'
  w_i = grads[f'{path}/gru']['w_i']  # rows: g's 2 features, 2 per m_k, p
  assert w_i.shape[0] == 2 + 2 * len(DECAYS) + 1
  for row in range(2, w_i.shape[0]):
    assert bool(jnp.any(w_i[row] != 0)), f'{name}: input {row} unused'


@pytest.mark.parametrize('fields', [dict(progress_input=True),
                                    dict(momentum_decays=(0.9,))])
def test_fused_kernel_refuses_lifetime_inputs(fields):
  config = cells.CellConfig(**fields)
  field = next(iter(fields))
  assert not fused.supports(config)
  assert dispatch.resolve('auto', config) == 'haiku'
  with pytest.raises(ValueError, match=f"{field}: implementation 'fused'"):
    lopt.learned_optimizer(config=config, implementation='fused')


@pytest.mark.parametrize('fields,match', [
    (dict(momentum_decays=(0.,)), r'momentum_decays: each decay must be in'),
    (dict(momentum_decays=(1.,)), r'momentum_decays: each decay must be in'),
    (dict(momentum_decays=(0.9, 1.5)), r'momentum_decays: each decay'),
    (dict(momentum_decays=(-0.1,)), r'momentum_decays: each decay'),
    (dict(momentum_decays=(float('nan'),)), r'momentum_decays: each decay'),
    (dict(momentum_decays=(0.9, 0.9)), r'momentum_decays: decays must differ'),
    (dict(momentum_decays=0.9), r'momentum_decays: must be a tuple'),
    (dict(momentum_decays='0.9'), r'momentum_decays: must be a tuple'),
    (dict(momentum_decays=('fast',)), r'momentum_decays: must be a tuple'),
    (dict(progress_input=1), r'progress_input: must be a bool'),
    (dict(progress_input='yes'), r'progress_input: must be a bool'),
])
def test_bad_values_fail_early_naming_the_field(fields, match, monkeypatch):
  def no_compile(*args, **kwargs):
    raise AssertionError('compiled before the check')
  monkeypatch.setattr(cells, 'make_cell', no_compile)
  with pytest.raises(ValueError, match=match):
    cells.CellConfig(**fields)
  with pytest.raises(ValueError, match=match):
    lopt.learned_optimizer(**fields)


def test_serialization_round_trip(tmp_path):
  lo = _lo('optim4rl_all')
  mp = _meta_params(lo)
  path = lopt.save(str(tmp_path / 'open.npz'), mp, lo)
  meta = lopt.serialization.read_metadata(path)
  assert meta['config']['momentum_decays'] == list(DECAYS)
  assert meta['config']['progress_input'] is True
  loaded, loaded_mp = lopt.load(path, expected=lo.config)
  assert loaded.config == lo.config
  assert loaded.config.momentum_decays == DECAYS
  assert loaded.total_steps is None  # the run length is the user's
  g = jnp.array([0.3, -2., 1e-4])
  a, _ = lo.opt_fn(mp).update(g, lo.opt_fn(mp).init(g))
  opt = loaded.opt_fn(loaded_mp, total_steps=10)
  b, _ = opt.update(g, opt.init(g))
  np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match='momentum_decays: file has'):
    lopt.load(path, expected=cells.CellConfig(
        **TINY, momentum_decays=(0.5,), progress_input=True, grad_ema=0.8,
        second_moment=0.99))


def test_launcher_passes_total_steps_on(tmp_path):
  from launchers.lib import common  # pylint: disable=g-import-not-at-top
  from configs import a2c_catch  # pylint: disable=g-import-not-at-top
  lo = _lo('optim4rl_progress')
  path = lopt.save(str(tmp_path / 'p.npz'), _meta_params(lo), lo)
  cfg = a2c_catch.get_config()
  cfg.optimizer.name = 'learned'
  cfg.optimizer.meta_params_path = path
  g = jnp.array([0.3, -2., 1e-4])
  opt = common.make_optimizer(cfg.optimizer, total_steps=2)
  want = lo.opt_fn(lopt.load(path)[1], cfg.optimizer.learning_rate,
                   total_steps=2)
  s, w = opt.init(g), want.init(g)
  for _ in range(3):
    u, s = opt.update(g, s)
    v, w = want.update(g, w)
    np.testing.assert_array_equal(u, v)
  with pytest.raises(ValueError, match='total_steps: this learned optimizer'):
    common.make_optimizer(cfg.optimizer)
