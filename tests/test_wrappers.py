"""agents/wrappers.py: completed-episode returns, counted once, hand-checked."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import a2c
from agents import env_base
from agents import environments
from agents import networks
from agents import ppo
from agents import wrappers
from launchers.lib import common


class _Countdown(env_base.Environment):
  """Deterministic: step t of an episode (t = 1, 2, ...) pays t; the episode
  ends on step `length` (terminated, or truncated), so each whole episode
  returns 1 + 2 + ... + length. With `nan_at`, step `nan_at` pays nan."""

  name = 'countdown'
  num_actions = 2
  observation_shape = (1,)

  def __init__(self, length, terminate=True, nan_at=0):
    self.length, self.terminate, self.nan_at = length, terminate, nan_at

  def reset_env(self, key):
    return jnp.zeros(1), jnp.zeros((), jnp.int32)

  def step_env(self, key, t, action):
    t = t + 1
    end = t >= self.length
    reward = jnp.where(t == self.nan_at, jnp.nan, t.astype(jnp.float32))
    return (jnp.full(1, t, jnp.float32), t, reward, end & self.terminate,
            end & (not self.terminate))


def _run(env, state, num_steps):
  """Steps a batch of wrapped envs; per-step infos and the summed count."""
  def step(carry, key):
    state, count = carry
    n = state.episode_return.shape[0]
    _, state, _, _, _, info = jax.vmap(env.step)(
        jax.random.split(key, n), state, jnp.zeros(n, jnp.int32))
    return (state, count.add(info)), (info, state.episode_return)

  return jax.jit(lambda s: jax.lax.scan(
      step, (s, wrappers.no_episodes()),
      jax.random.split(jax.random.PRNGKey(0), num_steps)))(state)


@pytest.mark.parametrize('terminate', [True, False])
def test_returns_of_episodes_ending_at_known_steps(terminate):
  env = wrappers.EpisodeReturns(_Countdown(3, terminate))
  # Three envs, started 0, 1 and 2 steps into an episode of 3 steps.
  state = wrappers.EpisodeState(jnp.array([0, 1, 2], jnp.int32), jnp.zeros(3))
  (final, count), (info, running) = _run(env, state, 7)
  # env 0 ends at steps 3, 6 (1+2+3 each); env 1 at step 2 (2+3, it began
  # mid-episode) and 5; env 2 at step 1 (3), 4 and 7.
  done = np.zeros((7, 3), bool)
  ret = np.zeros((7, 3), np.float32)
  for env_i, ends in enumerate([{3: 6., 6: 6.}, {2: 5., 5: 6.},
                                {1: 3., 4: 6., 7: 6.}]):
    for step, value in ends.items():
      done[step - 1, env_i], ret[step - 1, env_i] = True, value
  np.testing.assert_array_equal(info['episode_done'], done)
  np.testing.assert_array_equal(info['episode_return'], ret)
  # The running return restarts at 0 when an episode ends.
  np.testing.assert_array_equal(running[:, 0], [1., 3., 0., 1., 3., 0., 1.])
  np.testing.assert_array_equal(final.episode_return, [1., 3., 0.])
  assert float(count.return_sum) == 6 + 6 + 5 + 6 + 3 + 6 + 6
  assert int(count.episodes) == 7
  assert count.episodes.dtype == jnp.int32


def test_wrapper_steps_exactly_as_the_inner_env():
  inner = environments.make('catch')
  env = wrappers.track_returns(inner)
  assert wrappers.track_returns(env) is env  # wrapped once
  with pytest.raises(ValueError, match='already wraps'):
    wrappers.EpisodeReturns(env)
  assert (env.name, env.num_actions, env.observation_shape, env.continuous) == (
      inner.name, inner.num_actions, inner.observation_shape, False)
  key = jax.random.PRNGKey(4)
  obs_a, s_a = inner.reset(key)
  obs_b, s_b = env.reset(key)
  for i in range(12):
    k = jax.random.PRNGKey(i)
    obs_a, s_a, r_a, term_a, trunc_a, _ = inner.step(k, s_a, i % 3)
    obs_b, s_b, r_b, term_b, trunc_b, _ = env.step(k, s_b, i % 3)
    np.testing.assert_array_equal(obs_a, obs_b)
    assert (float(r_a), bool(term_a), bool(trunc_a)) == (
        float(r_b), bool(term_b), bool(trunc_b))
  jax.tree.map(np.testing.assert_array_equal, s_a, s_b.env_state)


def test_random_policy_floor_counts_through_the_wrapper():
  # Every episode of 4 steps returns 1 + 2 + 3 + 4, whatever the actions;
  # 10 steps end 2 episodes in each of 3 envs.
  mean, episodes = jax.jit(lambda k: common.random_policy_return(
      _Countdown(4), k, num_envs=3, num_steps=10))(jax.random.PRNGKey(0))
  assert float(mean) == 10. and int(episodes) == 6


def _catch_agents():
  env = environments.make('catch')
  a2c_agent = a2c.make_a2c(env, networks.paper_network('catch'),
                           a2c.A2CConfig(num_envs=4, reward_scale=10.))
  ppo_agent = ppo.make_ppo(env, ppo.PPOConfig(
      num_envs=4, unroll_len=20, num_minibatches=1, reward_scale=10.,
      policy_hidden=(8,), value_hidden=(8,)))
  return a2c_agent, ppo_agent


def test_agent_rollouts_report_raw_env_returns():
  """return_sum + what is still running = every raw reward, reward_scale 10
  notwithstanding (Catch pays +-1 per episode, once, at its 9th step)."""
  a2c_agent, ppo_agent = _catch_agents()
  key = jax.random.PRNGKey(1)
  params = a2c_agent.init_params(key)
  traj, actor, m = jax.jit(a2c_agent.rollout)(
      params, a2c_agent.init_actor(key), key)
  rewards = np.asarray(traj.rewards)
  stats = ppo.ObsStats(jnp.zeros(()), jnp.zeros((10, 5)), jnp.zeros((10, 5)))
  ppo_traj, ppo_actor, ppo_m = jax.jit(ppo_agent.rollout)(
      ppo_agent.init_params(key), ppo_agent.init_actor(key), stats, key)
  for r, act, metrics in ((rewards, actor, m),
                          (np.asarray(ppo_traj.reward), ppo_actor, ppo_m)):
    # 20 steps of 4 envs: each env ends its episodes at steps 9 and 18.
    assert int(metrics['episodes']) == 8
    np.testing.assert_array_equal(np.abs(r[[8, 17]]), 1.)
    assert float(metrics['return_sum']) == r[:18].sum()
    assert float(jnp.sum(act.env_state.episode_return)) == r[18:].sum() == 0.


@pytest.mark.parametrize('num_steps,nan_at,want', [
    (3, 0, 6.),  # one whole episode: 1 + 2 + 3
    (8, 0, 6.),  # later episodes do not count
    (2, 0, 3.),  # still running at the end: its return so far
    (5, 2, 1.),  # a nan reward at step 2 ends it with the return it had
])
def test_peer_check_evaluates_each_envs_first_episode(num_steps, nan_at, want):
  from launchers.lib import peer  # pylint: disable=g-import-not-at-top
  policy = lambda obs, key: jnp.zeros(obs.shape[0], jnp.int32)
  value = jax.jit(lambda k: peer.evaluate_policy(
      _Countdown(3, nan_at=nan_at), policy, k, 2, num_steps))(
          jax.random.PRNGKey(0))
  assert float(value) == want
