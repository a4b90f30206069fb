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


def test_policies_are_chosen_once_and_match_their_formulas():
  assert ppo.make_policy(environments.make('cartpole')).action_kind is int
  tanh_normal = ppo.tanh_normal_policy(1)
  assert tanh_normal.num_outputs == 2 and tanh_normal.action_shape == (1,)
  mean, raw, u = 0.3, -0.4, 0.8
  std = np.log1p(np.exp(raw)) + 1e-3
  want = (-0.5 * ((u - mean) / std) ** 2 - np.log(std)
          - 0.5 * np.log(2 * np.pi) - np.log(1 - np.tanh(u) ** 2))
  out = jnp.array([[mean, raw]])
  np.testing.assert_allclose(tanh_normal.log_prob(out, jnp.array([[u]])),
                             [want], rtol=1e-5)
  np.testing.assert_allclose(tanh_normal.mode(out), [[np.tanh(mean)]],
                             rtol=1e-6)
  categorical = ppo.categorical_policy(3)
  logits = jnp.array([[0., 1., 2.]])
  p = np.exp([0., 1., 2.]) / np.exp([0., 1., 2.]).sum()
  np.testing.assert_allclose(categorical.log_prob(logits, jnp.array([2])),
                             np.log(p[2:]), rtol=1e-5)
  np.testing.assert_allclose(categorical.entropy(logits),
                             [-(p * np.log(p)).sum()], rtol=1e-5)
  stored, env_action, logp = categorical.sample(jax.random.PRNGKey(0),
                                                logits)
  assert stored.dtype == env_action.dtype == jnp.int32
  np.testing.assert_allclose(logp, np.log(p[np.asarray(stored)]), rtol=1e-5)


def _small_cartpole_ppo():
  return ppo.make_ppo(environments.make('cartpole'), ppo.PPOConfig(
      num_envs=2, unroll_len=3, num_minibatches=1, policy_hidden=(8,),
      value_hidden=(8,)))


def _rollout_like(t=3, b=2):
  """A `[T, B]` rollout of cartpole with distinct values per entry."""
  x = jnp.arange(t * b, dtype=jnp.float32).reshape(t, b) / 10.
  return ppo.Transition(
      obs=jnp.ones((t, b, 4)) * x[..., None], action=(x > 0.2).astype(int),
      log_prob=-x, value=x, reward=1. - x, discount=jnp.ones((t, b)),
      truncated=jnp.zeros((t, b)).at[1, 0].set(1.))


@pytest.mark.parametrize('variant', ['jit', 'vmap', 'jit_vmap'])
def test_advantages_and_loss_checks_pass_under_jit_and_vmap(variant):
  agent = _small_cartpole_ppo()
  params = agent.init_params(jax.random.PRNGKey(0))
  stats = ppo.ObsStats(jnp.zeros(()), jnp.zeros(4), jnp.zeros(4))
  traj, last_value = _rollout_like(), jnp.array([0.5, -0.5])

  def adv_and_loss(traj, last_value):
    adv, target = agent.advantages(traj, last_value)
    flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]),
                        (traj, adv, target))
    return adv, agent.loss(params, stats, flat)

  want_adv, (want_loss, _) = adv_and_loss(traj, last_value)
  if variant == 'jit':
    adv, (loss, _) = jax.jit(adv_and_loss)(traj, last_value)
  else:  # 3 copies of the rollout, vmapped over a leading axis
    fn = jax.vmap(adv_and_loss)
    fn = jax.jit(fn) if variant == 'jit_vmap' else fn
    adv, (loss, _) = fn(*jax.tree.map(lambda x: jnp.stack([x] * 3),
                                      (traj, last_value)))
    assert loss.shape == (3,)
    adv, loss = adv[2], loss[2]
  np.testing.assert_allclose(adv, want_adv, rtol=1e-6)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-6)


@pytest.mark.parametrize('field, bad, message', [
    ('value', jnp.zeros((3,)), r'ppo.advantages: traj.value\]'),
    ('reward', jnp.zeros((3, 2), jnp.int32), r'ppo.advantages: traj.reward'),
    ('truncated', jnp.zeros((3, 3)), 'must all be \\[T, B\\]'),
    ('last_value', jnp.zeros((3,)), r'ppo.advantages: last_value must be'),
    ('last_value', jnp.zeros((2, 1)), r'ppo.advantages: last_value\]'),
])
def test_advantages_wrong_shape_or_dtype_names_the_argument(field, bad,
                                                            message):
  agent = _small_cartpole_ppo()
  traj, last_value = _rollout_like(), jnp.zeros((2,))
  if field == 'last_value':
    last_value = bad
  else:
    traj = traj._replace(**{field: bad})
  with pytest.raises(AssertionError, match=message):
    agent.advantages(traj, last_value)
  with pytest.raises(AssertionError, match=message):
    jax.jit(agent.advantages)(traj, last_value)


@pytest.mark.parametrize('field, bad, message', [
    ('action', jnp.zeros((6,)), r'ppo.loss: traj.action\]'),    # float
    ('action', jnp.zeros((6, 1), int), r'ppo.loss: traj.action\]'),
    ('action', jnp.zeros((5,), int), r'ppo.loss: traj.action must be'),
    ('log_prob', jnp.zeros((5,)), r'adv, target, traj.log_prob must all'),
    ('adv', jnp.zeros((6, 1)), r'ppo.loss: adv\]'),
    ('target', jnp.zeros((6,), int), r'ppo.loss: target\]'),
    ('obs', jnp.zeros((6, 5)), r'ppo.loss: traj.obs must be'),
])
def test_ppo_loss_wrong_shape_or_dtype_names_the_argument(field, bad,
                                                          message):
  agent = _small_cartpole_ppo()
  params = agent.init_params(jax.random.PRNGKey(0))
  stats = ppo.ObsStats(jnp.zeros(()), jnp.zeros(4), jnp.zeros(4))
  traj = jax.tree.map(lambda x: x.reshape((6,) + x.shape[2:]),
                      _rollout_like())
  adv, target = jnp.zeros((6,)), jnp.zeros((6,))
  if field == 'adv':
    adv = bad
  elif field == 'target':
    target = bad
  else:
    traj = traj._replace(**{field: bad})
  with pytest.raises(AssertionError, match=message):
    agent.loss(params, stats, (traj, adv, target))
  with pytest.raises(AssertionError, match=message):
    jax.jit(agent.loss)(params, stats, (traj, adv, target))
