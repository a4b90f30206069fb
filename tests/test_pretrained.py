"""The shipped optimizer, dropped into a plain optax + haiku loop."""

import os

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt


def test_shipped_optimizer_is_listed_and_documented():
  assert 'optim4rl_gridworlds' in lopt.pretrained_lib.names()
  meta = lopt.serialization.read_metadata(
      lopt.pretrained_lib.path('optim4rl_gridworlds'))
  assert meta['config']['cell'] == 'optim4rl'
  assert meta['extra']['config']['tasks']['env_names'] == [
      'small_dense_long', 'small_dense_short', 'big_sparse_short',
      'big_dense_short', 'big_sparse_long', 'big_dense_long']


def test_ant_ppo_optimizer_is_listed_and_documented():
  assert 'optim4rl_ant_ppo' in lopt.pretrained_lib.names()
  meta = lopt.serialization.read_metadata(
      lopt.pretrained_lib.path('optim4rl_ant_ppo'))
  assert meta['extra']['config']['agent'] == 'ppo'
  assert meta['extra']['config']['meta']['meta_loss'] == 'ppo'
  assert meta['extra']['config']['tasks']['env_names'] == ['ant']
  assert meta['learning_rate'] == pytest.approx(3e-4)


def test_default_is_meta_trained_with_ppo_tasks_from_adams_direction():
  assert lopt.pretrained_lib.DEFAULT == 'optim4rl_from_adam_mix'
  lo, _ = lopt.pretrained_lib.load(lopt.pretrained_lib.DEFAULT)
  assert (lo.config.grad_ema, lo.config.second_moment) == (
      pytest.approx(0.9), pytest.approx(0.999))
  assert lo.learning_rate == pytest.approx(1e-3)
  meta = lopt.serialization.read_metadata(
      lopt.pretrained_lib.path(lopt.pretrained_lib.DEFAULT))
  cfg = meta['extra']['config']
  assert meta['extra']['meta_step'] == 60
  assert cfg['meta']['init_path'].endswith('adam_start.npz')
  assert cfg['meta']['learning_rate'] == pytest.approx(3e-5)
  agents = dict(zip(cfg['tasks']['env_names'], cfg['tasks']['agents']))
  assert agents == {'catch': 'a2c', 'small_dense_long': 'a2c',
                    'small_dense_short': 'a2c', 'big_dense_short': 'a2c',
                    'asterix_minatar': 'ppo', 'ant': 'ppo'}


def test_a2c_only_optimizer_is_the_same_cell_from_the_same_start():
  lo, _ = lopt.pretrained_lib.load('optim4rl_from_adam')
  default, _ = lopt.pretrained_lib.load(lopt.pretrained_lib.DEFAULT)
  assert lo.config == default.config  # the same cell and inputs
  meta = lopt.serialization.read_metadata(
      lopt.pretrained_lib.path('optim4rl_from_adam'))
  cfg = meta['extra']['config']
  assert meta['extra']['meta_step'] == 150
  assert cfg['meta']['init_path'].endswith('adam_start.npz')
  assert cfg['tasks']['env_names'] == ['catch', 'small_dense_long',
                                       'small_dense_short', 'big_dense_short',
                                       'asterix_minatar']
  assert set(cfg['tasks']['agents']) == {'a2c'}


def test_untrained_cell_with_a_momentum_input_is_kept():
  lo, meta_params = lopt.pretrained_lib.load('optim4rl_untrained_ema')
  assert lo.config.grad_ema == pytest.approx(0.9)
  meta = lopt.serialization.read_metadata(
      lopt.pretrained_lib.path('optim4rl_untrained_ema'))
  assert meta['extra']['variant_of'] == 'untrained'
  init = lopt.learned_optimizer().init(jax.random.PRNGKey(0))
  for a, b in zip(jax.tree.leaves(meta_params), jax.tree.leaves(init)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_every_shipped_optimizer_has_a_card():
  for name in lopt.pretrained_lib.names():
    card = lopt.pretrained_lib.path(name)[:-4] + '.md'
    assert os.path.exists(card), card
    with open(card) as f:
      assert f.readline().startswith(f'# {name}'), card


@pytest.mark.parametrize('name', ['optim4rl_gridworlds', 'optim4rl_ant_ppo',
                                  'optim4rl_from_adam',
                                  'optim4rl_from_adam_mix'])
def test_pretrained_trains_a_supervised_problem_in_a_plain_optax_loop(name):
  # Only jax, haiku and optax here: nothing from agents/.
  net = hk.without_apply_rng(hk.transform(
      lambda x: hk.nets.MLP((32, 32, 1))(x)[:, 0]))
  x = jnp.linspace(-2., 2., 128)[:, None]
  y = jnp.sin(2. * x[:, 0])
  params = net.init(jax.random.PRNGKey(0), x)
  loss = lambda p: jnp.mean((net.apply(p, x) - y) ** 2)
  opt = optax.chain(optax.clip_by_global_norm(1.0),
                    lopt.pretrained(name))  # its meta-training lr
  state = opt.init(params)

  @jax.jit
  def train(params, state):
    def step(carry, _):
      params, state = carry
      grads = jax.grad(loss)(params)
      updates, state = opt.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), loss(params)
    return jax.lax.scan(step, (params, state), None, length=500)

  initial = float(loss(params))
  (params, state), losses = train(params, state)
  final = float(loss(params))
  assert np.all(np.isfinite(losses))
  assert final < 0.1 * initial, (initial, final)


def test_unknown_pretrained_name():
  with pytest.raises(ValueError, match="pretrained: unknown optimizer 'nope'"):
    lopt.pretrained('nope')


def _regression():
  net = hk.without_apply_rng(hk.transform(
      lambda x: hk.nets.MLP((32, 32, 1))(x)[:, 0]))
  x = jnp.linspace(-2., 2., 128)[:, None]
  y = jnp.sin(2. * x[:, 0])
  params = net.init(jax.random.PRNGKey(0), x)
  return params, lambda p: jnp.mean((net.apply(p, x) - y) ** 2)


def test_pretrained_with_an_lr_schedule_in_a_plain_optax_loop():
  # What a user with `optax.adam(learning_rate=schedule)` writes.
  schedule = optax.linear_schedule(2.5e-4, 0.0, 1000)
  opt = optax.chain(optax.clip_by_global_norm(1.0),
                    lopt.pretrained('optim4rl_gridworlds',
                                    learning_rate=schedule))
  params, loss = _regression()
  state = opt.init(params)

  def step(carry, _):
    params, state = carry
    updates, state = opt.update(jax.grad(loss)(params), state, params)
    return (optax.apply_updates(params, updates), state), None

  initial = float(loss(params))
  (params, state), _ = jax.jit(lambda c: jax.lax.scan(
      step, c, None, length=1000))((params, state))
  final = float(loss(params))
  assert np.isfinite(final) and final < 0.3 * initial, (initial, final)
  # The schedule ran to its end: one more step moves nothing.
  updates, _ = opt.update(jax.grad(loss)(params), state, params)
  assert max(float(jnp.abs(u).max()) for u in jax.tree.leaves(updates)) == 0


def test_pretrained_under_inject_hyperparams():
  opt = optax.inject_hyperparams(lopt.pretrained)(
      name='optim4rl_gridworlds', learning_rate=3e-4)
  params, loss = _regression()
  state = opt.init(params)
  update = jax.jit(opt.update)
  grads = jax.grad(loss)(params)
  u1, _ = update(grads, state, params)
  state.hyperparams['learning_rate'] = 0.5 * state.hyperparams['learning_rate']
  u_half, _ = update(grads, state, params)
  for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u_half)):
    np.testing.assert_allclose(b, 0.5 * a, rtol=1e-5, atol=1e-12)
  # Training with it works: 300 steps with the rate set per step.
  for i in range(300):
    state.hyperparams['learning_rate'] = jnp.asarray(
        3e-4 * (1. - i / 300), state.hyperparams['learning_rate'].dtype)
    updates, state = update(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
  assert float(loss(params)) < 0.5 * float(loss(_regression()[0]))


@pytest.mark.parametrize('implementation', ['auto', 'haiku'])
def test_every_shipped_optimizer_keeps_the_non_finite_policy(implementation):
  # NaN in, NaN out (never a coordinate silently frozen), on the kernel
  # ('auto' on one CPU device) and on the Haiku module; and a learning rate
  # of a wrong type is refused naming the field.
  for name in lopt.pretrained_lib.names():
    shipped, meta_params = lopt.pretrained_lib.load(name)
    lo = lopt.learned_optimizer(learning_rate=shipped.learning_rate,
                                config=shipped.config,
                                implementation=implementation)
    lopt.testing.check_non_finite_policy(lo, meta_params)
  with pytest.raises(ValueError, match='learning_rate: must be a finite'):
    lopt.pretrained(learning_rate='1e-3')
  with pytest.raises(ValueError, match='learning_rate: must be a finite'):
    lopt.pretrained(learning_rate=True)
