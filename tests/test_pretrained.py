"""The shipped optimizer, dropped into a plain optax + haiku loop."""

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


@pytest.mark.parametrize('name', ['optim4rl_gridworlds', 'optim4rl_ant_ppo'])
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
