"""Meta-loss heads: one head serves every agent; shape checks at its door."""

import os
import subprocess
import sys
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt import meta_losses


class _ToyAgent(NamedTuple):
  rollout: Callable
  loss: Callable


def _toy_agent(loss_shape=()):
  """Rollout: 3 normal samples as data; loss: squared distance to params."""

  def rollout(params, actor, key):
    del params
    x = jax.random.normal(key, (3,))
    return x, actor + 1, {'return_sum': jnp.sum(x),
                          'episodes': jnp.ones((), jnp.int32)}

  def loss(params, traj):
    value = jnp.sum(jnp.square(params - traj)) * jnp.ones(loss_shape)
    return value, {'sq_dist': value}

  return _ToyAgent(rollout, loss)


def test_a2c_and_ppo_name_the_same_head():
  assert meta_losses.get('a2c') is meta_losses.rollout_loss
  assert meta_losses.get('ppo') is meta_losses.rollout_loss
  assert {'a2c', 'ppo'} <= set(meta_losses.names())


def test_ppo_head_is_there_without_importing_agents():
  code = ('import sys\n'
          'from lopt import meta_losses\n'
          "assert meta_losses.get('ppo') is meta_losses.rollout_loss\n"
          "bad = [m for m in sys.modules if m.split('.')[0] == 'agents']\n"
          'assert not bad, bad\n')
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  subprocess.run([sys.executable, '-c', code], check=True, cwd=root, env=env)


@pytest.mark.parametrize('transform', [lambda f: f, jax.jit],
                         ids=['plain', 'jit'])
def test_rollout_loss_value_and_gradient(transform):
  agent = _toy_agent()
  params = jnp.array([0.5, -1., 2.])
  key = jax.random.PRNGKey(0)
  head = transform(lambda p, a, k: meta_losses.rollout_loss(agent, p, a, k))
  loss, (actor, metrics) = head(params, jnp.zeros(()), key)
  x = np.asarray(jax.random.normal(key, (3,)))
  np.testing.assert_allclose(float(loss), np.sum((params - x) ** 2),
                             rtol=1e-6)
  assert float(actor) == 1.
  assert set(metrics) == {'return_sum', 'episodes', 'sq_dist'}
  np.testing.assert_allclose(float(metrics['return_sum']), x.sum(),
                             rtol=1e-6)
  grad = jax.grad(lambda p: head(p, jnp.zeros(()), key)[0])(params)
  np.testing.assert_allclose(grad, 2. * (params - x), rtol=1e-5)


def test_rollout_loss_under_vmap_matches_one_agent_at_a_time():
  agent = _toy_agent()
  params = jnp.arange(12.).reshape(4, 3)
  actors = jnp.arange(4.)
  keys = jax.random.split(jax.random.PRNGKey(1), 4)
  head = lambda p, a, k: meta_losses.rollout_loss(agent, p, a, k)
  losses, (new_actors, _) = jax.jit(jax.vmap(head))(params, actors, keys)
  for i in range(4):
    one, (actor, _) = head(params[i], actors[i], keys[i])
    np.testing.assert_allclose(losses[i], one, rtol=1e-6)
    assert float(new_actors[i]) == float(actor)


def test_rollout_loss_takes_a_typed_key():
  loss, _ = meta_losses.rollout_loss(_toy_agent(), jnp.zeros(3), jnp.zeros(()),
                                     jax.random.key(0))
  assert loss.shape == ()


def test_rollout_loss_rejects_a_batch_of_keys():
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  with pytest.raises(AssertionError,
                     match=r'rollout_loss: key must be one raw key'):
    meta_losses.rollout_loss(_toy_agent(), jnp.zeros(3), jnp.zeros(()),
                             keys)
  with pytest.raises(AssertionError, match=r'rollout_loss: key must be one'):
    meta_losses.rollout_loss(_toy_agent(), jnp.zeros(3), jnp.zeros(()),
                             jax.random.split(jax.random.key(0), 4))
  with pytest.raises(AssertionError, match=r'rollout_loss: key'):
    meta_losses.rollout_loss(_toy_agent(), jnp.zeros(3), jnp.zeros(()),
                             jnp.zeros(2, jnp.float32))


def test_rollout_loss_rejects_a_non_scalar_loss():
  with pytest.raises(AssertionError,
                     match='agent.loss must return a scalar loss'):
    jax.jit(lambda k: meta_losses.rollout_loss(
        _toy_agent(loss_shape=(2,)), jnp.zeros(3), jnp.zeros(()), k))(
            jax.random.PRNGKey(0))
