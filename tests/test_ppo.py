"""PPO: statistics, squashed-Gaussian log-probs, learning, Brax envs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agents import brax_envs
from agents import environments
from agents import ppo


def test_running_obs_stats_match_numpy():
  rng = np.random.default_rng(0)
  a, b = rng.normal(2., 3., (7, 3)), rng.normal(-1., 0.5, (11, 3))
  stats = ppo.ObsStats(jnp.zeros(()), jnp.zeros(3), jnp.zeros(3))
  stats = ppo.update_stats(ppo.update_stats(stats, jnp.asarray(a)),
                           jnp.asarray(b))
  both = np.concatenate([a, b])
  np.testing.assert_allclose(stats.mean, both.mean(0), rtol=1e-5)
  np.testing.assert_allclose(stats.m2 / stats.count, both.var(0), rtol=1e-5)
  z = ppo.normalize(stats, jnp.asarray(both))
  np.testing.assert_allclose(np.mean(z, 0), 0., atol=1e-5)
  np.testing.assert_allclose(np.std(z, 0), 1., rtol=1e-4)


def test_tanh_correction_is_log_jacobian():
  u = jnp.array([[-3., -0.5, 0., 0.7, 8.]])
  want = np.sum(np.log(1. - np.tanh(np.asarray(u, np.float64)) ** 2 +
                       1e-300))
  np.testing.assert_allclose(float(ppo._tanh_correction(u)[0]), want,  # pylint: disable=protected-access
                             rtol=1e-5)


def test_advantages_against_a_hand_computed_gae():
  env = environments.make('cartpole')
  agent = ppo.make_ppo(env, ppo.PPOConfig(
      num_envs=1, unroll_len=4, num_minibatches=1, discount=0.9,
      gae_lambda=0.5, reward_scale=2.))
  r = np.array([1., 2., 3., 4.])
  v = np.array([0.5, 1., 1.5, 2.])
  term = np.array([0., 1., 0., 0.])  # step 1 ended the episode
  trunc = np.array([0., 0., 0., 1.])  # step 3 hit the time limit
  col = lambda x: jnp.asarray(x, jnp.float32)[:, None]
  traj = ppo.Transition(obs=jnp.zeros((4, 1, 4)), action=jnp.zeros((4, 1)),
                        log_prob=jnp.zeros((4, 1)), value=col(v),
                        reward=col(r), discount=col(1. - term),
                        truncated=col(trunc))
  adv, target = agent.advantages(traj, jnp.array([10.]))
  # By hand, backwards: step 3 truncated -> 0; step 2 continues into it;
  # step 1 terminated; step 0 continues into step 1.
  a3 = 0.
  a2 = 2 * 3 + 0.9 * 2. - 1.5 + 0.9 * 0.5 * a3
  a1 = 2 * 2 - 1.
  a0 = 2 * 1 + 0.9 * 1. - 0.5 + 0.9 * 0.5 * a1
  np.testing.assert_allclose(adv[:, 0], [a0, a1, a2, a3], rtol=1e-6)
  np.testing.assert_allclose(target[:, 0], np.array([a0, a1, a2, a3]) + v,
                             rtol=1e-6)


def test_bad_config():
  with pytest.raises(ValueError, match='num_minibatches: 3 does not divide'):
    ppo.PPOConfig(num_envs=4, unroll_len=5, num_minibatches=3).validate()
  with pytest.raises(ValueError, match='clip_eps'):
    ppo.PPOConfig(clip_eps=0.).validate()


def test_ppo_adam_learns_cartpole():
  env = environments.make('cartpole')
  agent = ppo.make_ppo(env, ppo.PPOConfig(
      num_envs=16, unroll_len=32, num_minibatches=4, num_epochs=4,
      discount=0.99, reward_scale=1., clip_eps=0.2, entropy_weight=0.,
      policy_hidden=(64, 64), value_hidden=(64, 64)))
  opt = optax.adam(3e-3)
  train = jax.jit(ppo.make_train(agent, opt, 10))
  state = ppo.init_state(agent, opt, jax.random.PRNGKey(0))
  returns = []
  for _ in range(8):
    state, m = train(state)
    returns.append(float(m['return_sum'].sum() / m['episodes'].sum()))
  # A random policy balances ~22 steps; learning more than triples it.
  assert returns[0] < 40, returns
  assert returns[-1] > 3 * returns[0] and returns[-1] > 100, returns
  assert float(state.obs_stats.count) == 80 * 16 * 32


@pytest.mark.parametrize('reset_mode', ['first', 'sample'])
def test_brax_env_interface_and_truncation(reset_mode):
  env = brax_envs.BraxEnvironment('inverted_pendulum', episode_length=4,
                                  reset_mode=reset_mode)
  assert env.continuous and env.action_size == 1
  assert env.observation_shape == (4,)
  step = jax.jit(env.step)
  first_obs, state = jax.jit(env.reset)(jax.random.PRNGKey(0))
  assert first_obs.shape == (4,)
  flags, observations = [], []
  for i in range(5):
    obs, state, reward, term, trunc, _ = step(jax.random.PRNGKey(i), state,
                                              jnp.zeros(1))
    flags.append((bool(term), bool(trunc), int(state.t)))
    observations.append(obs)
  # Truncated on the 4th step, then a fresh episode (counter back to 0).
  assert flags[3] == (False, True, 0)
  assert [f[2] for f in flags] == [1, 2, 3, 0, 1]
  assert float(reward) == 1.
  # 'first' restarts from the very first initial state; 'sample' draws anew.
  restarted = np.allclose(observations[3], first_obs)
  assert restarted == (reset_mode == 'first')
  assert not np.allclose(observations[2], first_obs)  # it did move
  with pytest.raises(ValueError, match="env_name: unknown Brax environment"):
    brax_envs.BraxEnvironment('pong')
  with pytest.raises(ValueError, match="reset_mode: unknown 'fresh'"):
    brax_envs.BraxEnvironment('inverted_pendulum', reset_mode='fresh')


def test_ppo_continuous_update_on_brax_is_finite():
  env = brax_envs.BraxEnvironment('inverted_pendulum', episode_length=50)
  agent = ppo.make_ppo(env, ppo.PPOConfig(
      num_envs=8, unroll_len=5, num_minibatches=2, num_epochs=2,
      policy_hidden=(16,), value_hidden=(16,)))
  opt = optax.adam(3e-4)
  state = ppo.init_state(agent, opt, jax.random.PRNGKey(0))
  new, metrics = jax.jit(lambda s: ppo.update(agent, opt, s))(state)
  assert all(bool(jnp.all(jnp.isfinite(x)))
             for x in jax.tree.leaves(new.params))
  assert np.isfinite(float(metrics['pg_loss']))
  assert float(new.obs_stats.count) == 40
  assert not all(bool(jnp.array_equal(a, b)) for a, b in
                 zip(jax.tree.leaves(new.params),
                     jax.tree.leaves(state.params)))
