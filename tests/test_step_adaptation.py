"""lopt.step_adaptation: a direction times exp(h), h moved by the cosine."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
from lopt import step_adaptation

PARAMS = {'a': jnp.zeros(3), 'b': jnp.zeros((2, 2))}


def _grads(i):
  return {'a': jnp.array([1., -2., 0.5]) * (i + 1.) + i,
          'b': jnp.array([[0.3, -1.], [2., 1.]]) * (-1.) ** i}


def test_beta_zero_is_the_inner_optimizer():
  ours, adam = step_adaptation.adam(1e-2, beta=0.), optax.adam(1e-2)
  s1, s2 = ours.init(PARAMS), adam.init(PARAMS)
  for i in range(4):
    u1, s1 = ours.update(_grads(i), s1)
    u2, s2 = adam.update(_grads(i), s2)
    for x, y in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
      np.testing.assert_allclose(x, y, rtol=1e-6)


def test_log_scale_follows_the_cosine_by_hand():
  """With the identity as direction, u_t = g_t: h_1 = -beta * target (no
  last step), h_2 = h_1 + beta * (cos(g_2, g_1) - target)."""
  beta, target = 0.7, 0.1
  opt = step_adaptation.step_adapted(optax.identity(), beta, target)
  g1 = {'a': jnp.array([1., 0., 0.]), 'b': jnp.zeros((2, 2))}
  g2 = {'a': jnp.array([1., 1., 0.]), 'b': jnp.zeros((2, 2))}
  state = opt.init(PARAMS)
  u1, state = opt.update(g1, state)
  np.testing.assert_allclose(state.log_scale, -beta * target, rtol=1e-6)
  np.testing.assert_allclose(u1['a'], np.exp(-beta * target) * g1['a'],
                             rtol=1e-6)
  u2, state = opt.update(g2, state)
  h2 = -beta * target + beta * (1. / np.sqrt(2.) - target)
  np.testing.assert_allclose(state.log_scale, h2, rtol=1e-5)
  np.testing.assert_allclose(u2['a'], np.exp(h2) * g2['a'], rtol=1e-5)


def test_log_scale_is_clipped():
  opt = step_adaptation.step_adapted(optax.identity(), beta=10.,
                                     target_cosine=0., limit=0.5)
  state = opt.init(PARAMS)
  for _ in range(3):  # the same gradient: cosine 1, h would reach 20
    u, state = opt.update(_grads(0), state)
  np.testing.assert_allclose(state.log_scale, 0.5)
  np.testing.assert_allclose(u['a'], np.exp(0.5) * _grads(0)['a'], rtol=1e-6)


def test_a_short_step_grows_and_reaches_further():
  """Adam at a rate far too small for a quadratic: the adapted step grows
  (the gradient keeps agreeing with the last step) and gets closer."""
  def loss(p):
    return jnp.sum((p['x'] - 5.) ** 2)

  def run(opt):
    params = {'x': jnp.zeros(4)}
    state = opt.init(params)

    def step(carry, _):
      params, state = carry
      updates, state = opt.update(jax.grad(loss)(params), state, params)
      return (optax.apply_updates(params, updates), state), None

    (params, state), _ = jax.lax.scan(step, (params, state), None, length=200)
    return loss(params), state

  adam_loss, _ = run(optax.adam(1e-3))
  adapted_loss, state = run(step_adaptation.adam(1e-3, beta=0.5))
  assert float(state[0].log_scale) > 2.
  assert float(adapted_loss) < 0.5 * float(adam_loss)


def test_non_finite_coordinates_leave_the_others_adapting():
  opt = step_adaptation.adam(1e-2)
  state = opt.init(PARAMS)
  for i in range(3):
    g = _grads(i)
    if i == 1:
      g = {'a': g['a'].at[0].set(jnp.nan), 'b': g['b']}
    u, state = opt.update(g, state)
  assert np.isnan(u['a'][0])
  assert np.all(np.isfinite(u['a'][1:])) and np.all(np.isfinite(u['b']))
  assert np.isfinite(state[0].log_scale)


def test_wraps_a_learned_direction_under_vmap():
  """Drop-in around a learned optimizer's direction, for a population."""
  lo = lopt.learned_optimizer(learning_rate=1e-3, cell='optim4rl')
  meta_params = lo.init(jax.random.PRNGKey(0))
  plain = lo.opt_fn(meta_params)
  adapted = optax.chain(
      step_adaptation.step_adapted(lo.direction_fn(meta_params), beta=0.),
      optax.scale_by_learning_rate(1e-3))
  grads = jax.vmap(lambda k: {'w': jax.random.normal(k, (5,))})(
      jax.random.split(jax.random.PRNGKey(1), 3))

  def one(opt, g):
    return opt.update(g, opt.init(g), g)[0]['w']

  np.testing.assert_allclose(jax.vmap(lambda g: one(adapted, g))(grads),
                             jax.vmap(lambda g: one(plain, g))(grads),
                             rtol=1e-6)


@pytest.mark.parametrize('kwargs, field', [
    ({'beta': -1.}, 'beta'), ({'target_cosine': 2.}, 'target_cosine'),
    ({'limit': 0.}, 'limit'), ({'horizon': 0.5}, 'horizon')])
def test_bad_settings_are_named(kwargs, field):
  with pytest.raises(ValueError, match=field):
    step_adaptation.step_adapted(optax.identity(), **kwargs)


def test_delay_compares_with_older_directions_by_hand():
  """delay 2 (horizon 1): h_t moves by cos(g_t, u_{t-3}); the first three
  steps see no direction yet (c 0), the fourth the first one's."""
  g = [{'a': jnp.array(v), 'b': jnp.zeros((2, 2))} for v in
       ([1., 0., 0.], [0., 1., 0.], [0., 0., 1.], [1., 1., 0.])]
  opt = step_adaptation.step_adapted(optax.identity(), beta=0.5,
                                     target_cosine=0., delay=2)
  state = opt.init(PARAMS)
  for i in range(3):
    _, state = opt.update(g[i], state)
    np.testing.assert_allclose(state.log_scale, 0.)
  _, state = opt.update(g[3], state)
  np.testing.assert_allclose(state.log_scale, 0.5 / np.sqrt(2.), rtol=1e-6)
  # Without the delay each step meets the one before: orthogonal here.
  plain = step_adaptation.step_adapted(optax.identity(), beta=0.5,
                                       target_cosine=0.)
  ps = plain.init(PARAMS)
  for i in range(4):
    _, ps = plain.update(g[i], ps)
  np.testing.assert_allclose(ps.log_scale, 0.)
  for bad in (-1, 1.5, True, '2'):
    with pytest.raises(ValueError, match='delay'):
      step_adaptation.step_adapted(optax.identity(), delay=bad)


def test_one_scale_per_network_by_hand():
  """`group_by=by_network`: the policy's and the value net's `h` move by
  the cosine over their own coordinates (identity direction, beta 0.5,
  target 0), and each net's update is scaled by its own exp(h)."""
  params = {'policy/~/linear': {'w': jnp.zeros((2, 2)), 'b': jnp.zeros(2)},
            'value/~/linear': {'w': jnp.zeros((2, 1))}}
  assert step_adaptation.groups(params, step_adaptation.by_network) == (
      (0, 0, 1), 2)
  g1 = {'policy/~/linear': {'w': jnp.array([[1., 0.], [0., 0.]]),
                            'b': jnp.array([0., 1.])},
        'value/~/linear': {'w': jnp.array([[1.], [1.]])}}
  g2 = {'policy/~/linear': {'w': jnp.array([[1., 1.], [0., 0.]]),
                            'b': jnp.array([0., -1.])},
        'value/~/linear': {'w': jnp.array([[-2.], [-2.]])}}
  opt = step_adaptation.step_adapted(
      optax.identity(), beta=0.5, target_cosine=0.,
      group_by=step_adaptation.by_network)
  state = opt.init(params)
  assert state.log_scale.shape == (2,)
  _, state = opt.update(g1, state)
  np.testing.assert_allclose(state.log_scale, [0., 0.])
  out, state = opt.update(g2, state)
  # Policy: (1*1 + 1*(-1)) / (sqrt 2 sqrt 3) = 0; value: -1.
  h = np.array([0., -0.5])
  np.testing.assert_allclose(state.log_scale, h, atol=1e-7)
  np.testing.assert_allclose(out['policy/~/linear']['b'], [0., -1.])
  np.testing.assert_allclose(out['value/~/linear']['w'],
                             np.exp(-0.5) * np.array([[-2.], [-2.]]),
                             rtol=1e-6)
  # The whole-network form moves one h by the cosine over all of them.
  whole = step_adaptation.step_adapted(optax.identity(), beta=0.5,
                                       target_cosine=0.)
  ws = whole.init(params)
  _, ws = whole.update(g1, ws)
  _, ws = whole.update(g2, ws)
  np.testing.assert_allclose(ws.log_scale, 0.5 * (-4.) / (2. * np.sqrt(11.)),
                             rtol=1e-6)
  with pytest.raises(ValueError, match='group_by'):
    step_adaptation.step_adapted(optax.identity(), group_by='network')


def test_horizon_compares_with_the_decayed_sum_by_hand():
  """horizon 2: U_t = U_{t-1} / 2 + u_t, and h_3 uses cos(g_3, U_2) where
  U_2 = g_1 / 2 + g_2 (identity direction); horizon 1 is the last one."""
  beta, target = 0.5, 0.
  g = [{'a': jnp.array(v), 'b': jnp.zeros((2, 2))} for v in
       ([1., 0., 0.], [0., 1., 0.], [1., 0., 1.])]

  def h3(horizon):
    opt = step_adaptation.step_adapted(optax.identity(), beta, target,
                                       horizon=horizon)
    state = opt.init(PARAMS)
    for gi in g:
      _, state = opt.update(gi, state)
    return state.log_scale

  def cos(x, y):
    return np.dot(x, y) / np.linalg.norm(x) / np.linalg.norm(y)

  g1, g2, g3 = (np.asarray(gi['a']) for gi in g)
  h2 = beta * cos(g2, g1)  # U_1 = g_1 for any horizon: 0 here
  np.testing.assert_allclose(h3(2.), h2 + beta * cos(g3, g1 / 2 + g2),
                             rtol=1e-5)
  np.testing.assert_allclose(h3(1.), h2 + beta * cos(g3, g2), atol=1e-6)
  assert float(h3(2.)) > 0.1 > float(h3(1.))  # g_3 agrees with g_1 only


def test_adapt_until_holds_the_scale_after_that_fraction():
  """adapt_until 0.5 of 4 steps: h moves at steps 0 and 1 (progress 0,
  0.25) and is held at 2 and 3; the updates keep exp(h) times the
  direction. Without total_steps it is refused."""
  opt = step_adaptation.step_adapted(optax.identity(), beta=1.,
                                     target_cosine=0., total_steps=4,
                                     adapt_until=0.5)
  full = step_adaptation.step_adapted(optax.identity(), beta=1.,
                                      target_cosine=0.)
  s, f = opt.init(PARAMS), full.init(PARAMS)
  hs, hf = [], []
  for i in range(4):
    u, s = opt.update(_grads(0), s)  # the same gradient: cosine 1
    _, f = full.update(_grads(0), f)
    hs.append(float(s.log_scale))
    hf.append(float(f.log_scale))
  np.testing.assert_allclose(hs, [0., 1., 1., 1.], atol=1e-6)
  np.testing.assert_allclose(hf, [0., 1., 2., 3.], atol=1e-6)
  np.testing.assert_allclose(u['a'], np.e * _grads(0)['a'], rtol=1e-6)
  with pytest.raises(ValueError, match='total_steps: adapt_until'):
    step_adaptation.step_adapted(optax.identity(), adapt_until=0.5)
  with pytest.raises(ValueError, match='adapt_until'):
    step_adaptation.step_adapted(optax.identity(), adapt_until=0.,
                                 total_steps=4)


def test_launcher_gives_the_calibrated_adam_the_run_length():
  """`adam_step_calibrated` adapts over the first 10% of the run the
  launcher passes on (here 15 steps: the first two move h, at progress 0
  and 1/15; the third, at 2/15, does not) and is refused without it."""
  from launchers.lib import common  # pylint: disable=g-import-not-at-top
  from configs import a2c_catch  # pylint: disable=g-import-not-at-top
  cfg = a2c_catch.get_config()
  cfg.optimizer.name = 'adam_step_calibrated'
  cfg.optimizer.max_grad_norm = 0.
  opt = common.make_optimizer(cfg.optimizer, total_steps=15)
  g = {'w': jnp.array([0.3, -2., 1.])}
  s = opt.init(g)
  for _ in range(3):
    _, s = opt.update(g, s)
  inner = s[0]
  assert isinstance(inner, step_adaptation.StepAdaptationState)
  # Step 0: no last direction (c 0); step 1: c = cos(g, Adam's first
  # direction, sign(g)); step 2: held.
  w = np.asarray(g['w'])
  np.testing.assert_allclose(
      inner.log_scale, w @ np.sign(w) / np.linalg.norm(w) / np.sqrt(3.),
      rtol=1e-5)
  with pytest.raises(ValueError, match='total_steps'):
    common.make_optimizer(cfg.optimizer)


def test_launcher_delays_by_the_agents_update():
  """`adam_step_calibrated_delayed` compares with directions one agent
  update old: with 2 steps an update, h stays 0 for three steps (no
  direction that old yet) and the fourth meets Adam's first direction
  (sign g); refused without `steps_per_update`."""
  from launchers.lib import common  # pylint: disable=g-import-not-at-top
  from configs import a2c_catch  # pylint: disable=g-import-not-at-top
  cfg = a2c_catch.get_config()
  cfg.optimizer.name = 'adam_step_calibrated_delayed'
  cfg.optimizer.max_grad_norm = 0.
  opt = common.make_optimizer(cfg.optimizer, total_steps=100,
                              steps_per_update=2)
  g = {'w': jnp.array([0.3, -2., 1.])}
  s = opt.init(g)
  assert s[0].recent['w'].shape == (2, 3)
  for _ in range(3):
    _, s = opt.update(g, s)
    np.testing.assert_allclose(s[0].log_scale, 0.)
  _, s = opt.update(g, s)
  w = np.asarray(g['w'])
  np.testing.assert_allclose(
      s[0].log_scale, w @ np.sign(w) / np.linalg.norm(w) / np.sqrt(3.),
      rtol=1e-5)
  for bad in (None, 0):
    with pytest.raises(ValueError, match='steps_per_update'):
      common.make_optimizer(cfg.optimizer, total_steps=100,
                            steps_per_update=bad)


def test_a_shipped_direction_under_the_calibrated_rule():
  """'<shipped>_calibrated' is the shipped optimizer's own update times
  exp(h), h moved by cos(g, its past directions) as in `step_adapted`: the
  first step is the shipped one's (no past direction, h = 0), the second
  exp(h_1) times it with h_1 the cosine with the first direction."""
  from launchers.lib import common  # pylint: disable=g-import-not-at-top
  from configs import a2c_catch  # pylint: disable=g-import-not-at-top
  cfg = a2c_catch.get_config()
  cfg.optimizer.max_grad_norm = 0.
  cfg.optimizer.learning_rate = 0.01
  cfg.optimizer.name = lopt.pretrained_lib.DEFAULT + '_calibrated'
  opt = common.make_optimizer(cfg.optimizer, total_steps=100)
  plain = lopt.pretrained(lopt.pretrained_lib.DEFAULT, 0.01)
  params = {'w': jnp.zeros((2, 3)), 'b': jnp.zeros(3)}
  grads = [{'w': jnp.array([[0.3, -2., 1.], [0.5, 0.1, -0.4]]),
            'b': jnp.array([1., -0.2, 0.])},
           {'w': jnp.array([[0.2, -1., 1.5], [-0.5, 0.3, -0.1]]),
            'b': jnp.array([0.7, 0.1, 0.3])}]
  s, p = opt.init(params), plain.init(params)
  first, s = opt.update(grads[0], s, params)
  ref, p = plain.update(grads[0], p, params)

  def close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)

  jax.tree.map(close, first, ref)
  second, s = opt.update(grads[1], s, params)
  ref2, _ = plain.update(grads[1], p, params)
  # The first direction (before the rate, whose sign flips it).
  h1 = step_adaptation.cosine(grads[1], jax.tree.map(lambda u: -u / 0.01,
                                                     ref))
  assert abs(float(h1)) > 0.05
  jax.tree.map(lambda a, b: close(a, np.exp(float(h1)) * b), second, ref2)
  with pytest.raises(ValueError, match='total_steps'):
    common.make_optimizer(cfg.optimizer)


def test_target_moves_with_the_training_progress_by_hand():
  """target_t = target + slope * t / total_steps: at t = 0 and t = 1 of 2."""
  beta, target, slope = 0.5, 0.1, 0.4
  opt = step_adaptation.step_adapted(optax.identity(), beta, target,
                                     target_slope=slope, total_steps=2)
  g1 = {'a': jnp.array([1., 0., 0.]), 'b': jnp.zeros((2, 2))}
  g2 = {'a': jnp.array([1., 1., 0.]), 'b': jnp.zeros((2, 2))}
  state = opt.init(PARAMS)
  _, state = opt.update(g1, state)
  h1 = beta * (0. - target)
  np.testing.assert_allclose(state.log_scale, h1, rtol=1e-6)
  _, state = opt.update(g2, state)
  h2 = h1 + beta * (1. / np.sqrt(2.) - (target + slope * 0.5))
  np.testing.assert_allclose(state.log_scale, h2, rtol=1e-5)
  with pytest.raises(ValueError, match='total_steps'):
    step_adaptation.step_adapted(optax.identity(), target_slope=0.1)


def test_constants_may_be_traced():
  """Searched constants (jit, vmap over a population of them) give what
  the same numbers give as floats."""
  def first_updates(beta, target):
    opt = step_adaptation.step_adapted(optax.identity(), beta, target)
    state = opt.init(PARAMS)
    for i in range(3):
      u, state = opt.update(_grads(i), state)
    return u['a']

  betas, targets = jnp.array([0.5, 2.]), jnp.array([0.1, -0.2])
  traced = jax.jit(jax.vmap(first_updates))(betas, targets)
  for k in range(2):
    np.testing.assert_allclose(
        traced[k], first_updates(float(betas[k]), float(targets[k])),
        rtol=1e-5)


def test_standardized_cosine_is_in_units_of_chance():
  """cos * sqrt(N): two independent random directions give about unit
  spread at any N, and the step's h moves by beta * (z - target)."""
  def z(key, n):
    a, b = jax.random.normal(key, (2, n))
    return step_adaptation.cosine({'x': a}, {'x': b}, standardize=True)

  keys = jax.random.split(jax.random.PRNGKey(0), 200)
  for n in (100, 20_000):
    spread = float(jnp.std(jax.vmap(lambda k, n=n: z(k, n))(keys)))
    assert 0.8 < spread < 1.2, (n, spread)
  opt = step_adaptation.step_adapted(optax.identity(), beta=0.1,
                                     target_cosine=2., standardize=True)
  g = {'a': jnp.array([1., 0., 0.]), 'b': jnp.zeros((2, 2))}
  state = opt.init(PARAMS)
  _, state = opt.update(g, state)
  _, state = opt.update(g, state)  # cosine 1 over 7 coordinates
  np.testing.assert_allclose(state.log_scale,
                             0.1 * (0. - 2.) + 0.1 * (np.sqrt(7.) - 2.),
                             rtol=1e-5)
