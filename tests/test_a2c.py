"""A2C: loss values, learning, vmapped populations."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agents import a2c
from agents import environments
from agents import networks


def test_a2c_loss_hand_computed():
  # T = 2, two actions; lambda = 1 so advantages are Monte-Carlo returns - v.
  logits = jnp.array([[0., 0.], [1., 0.], [0., 0.]])
  v = jnp.array([0.5, 0.2, 1.0])
  a = jnp.array([0, 1])
  r = jnp.array([1., 2.])
  d = jnp.array([0.9, 0.])  # terminal after the second step
  loss, m = a2c.a2c_loss(logits, v, a, r, d, td_lambda=1., critic_weight=0.5,
                         entropy_weight=0.01)
  g1 = 2.                      # r_1 (then terminal)
  g0 = 1. + 0.9 * g1           # r_0 + gamma * G_1
  adv = np.array([g0 - 0.5, g1 - 0.2])
  logp = np.array([np.log(0.5), 0. - np.log(np.e + 1.)])
  pg = -np.mean(logp * adv)
  critic = 0.5 * np.mean(adv ** 2)
  p1 = np.array([np.e, 1.]) / (np.e + 1.)
  ent = np.mean([np.log(2.), -np.sum(p1 * np.log(p1))])
  np.testing.assert_allclose(float(m['pg_loss']), pg, rtol=1e-5)
  np.testing.assert_allclose(float(m['critic_loss']), critic, rtol=1e-5)
  np.testing.assert_allclose(float(m['entropy']), ent, rtol=1e-5)
  np.testing.assert_allclose(float(loss), pg + 0.5 * critic - 0.01 * ent,
                             rtol=1e-5)


def test_advantage_is_stopped_in_policy_gradient():
  logits = jnp.zeros((3, 2))
  a, r, d = jnp.array([0, 1]), jnp.array([1., 1.]), jnp.array([1., 1.])
  def pg_only(v):
    return a2c.a2c_loss(logits, v, a, r, d, td_lambda=0.9, critic_weight=0.,
                        entropy_weight=0.)[0]
  np.testing.assert_array_equal(jax.grad(pg_only)(jnp.ones(3)), 0.)


@pytest.fixture(scope='module')
def catch_agent():
  env = environments.make('catch')
  return a2c.make_a2c(env, networks.paper_network('catch'),
                      a2c.A2CConfig(num_envs=16))


def test_rollout_shapes_and_episode_returns(catch_agent):
  agent = catch_agent
  params = agent.init_params(jax.random.PRNGKey(0))
  actor = agent.init_actor(jax.random.PRNGKey(1))
  traj, actor2, m = jax.jit(agent.rollout)(params, actor, jax.random.PRNGKey(2))
  assert traj.obs.shape == (21, 16, 10, 5)
  assert traj.actions.shape == traj.rewards.shape == (20, 16)
  # Catch episodes last 9 steps: in 20 steps each env finishes 2 episodes,
  # each with return +1 or -1.
  assert int(m['episodes']) == 32
  assert abs(float(m['return_sum'])) <= 32
  np.testing.assert_allclose(float(m['reward_sum']), float(m['return_sum']) +
                             float(jnp.sum(actor2.env_state.episode_return)))
  assert set(np.unique(np.asarray(traj.discounts))) <= {0., 1.}


def _plain_rollout(agent, params, actor, key):
  """The rollout drawing at each step, as written before `rollout_draws`:
  split the step's key, `categorical`, `env.step` with one key per env."""
  env = agent.env
  def step(actor, key):
    key_act, key_env = jax.random.split(key)
    logits, _ = agent.network.apply(params, actor.obs)
    action = jax.random.categorical(key_act, logits)
    obs, env_state, reward, term, trunc, _ = jax.vmap(env.step)(
        jax.random.split(key_env, agent.config.num_envs), actor.env_state,
        action)
    return a2c.ActorState(env_state, obs), (actor.obs, action, reward, term,
                                            trunc)
  return jax.lax.scan(step, actor, jax.random.split(
      key, agent.config.rollout_len))


@pytest.mark.parametrize('name', ['catch', 'small_dense_short'])
def test_rollout_draws_the_same_numbers_as_a_per_step_loop(name):
  # All draws made before the loop (gymnax: keys; gridworlds: the uniform
  # draws themselves) give the very same rollout, bit for bit.
  agent = a2c.make_a2c(environments.make(name), networks.paper_network(name),
                       a2c.A2CConfig(num_envs=4, rollout_len=60))
  params = agent.init_params(jax.random.PRNGKey(0))
  actor = agent.init_actor(jax.random.PRNGKey(1))
  traj, end, _ = jax.jit(agent.rollout)(params, actor, jax.random.PRNGKey(2))
  plain_end, (obs, actions, rewards, term, trunc) = jax.jit(
      functools.partial(_plain_rollout, agent))(params, actor,
                                                jax.random.PRNGKey(2))
  np.testing.assert_array_equal(traj.obs[:-1], obs)
  np.testing.assert_array_equal(traj.actions, actions)
  np.testing.assert_array_equal(traj.rewards, rewards)
  np.testing.assert_array_equal(traj.discounts, 1. - (term | trunc))
  for a, b in zip(jax.tree.leaves(end), jax.tree.leaves(plain_end)):
    np.testing.assert_array_equal(a, b)
  assert np.asarray(term | trunc).any()  # episodes ended and reset


def test_a2c_adam_learns_catch(catch_agent):
  opt = optax.adam(1e-3)
  train = jax.jit(a2c.make_train(catch_agent, opt, 100))
  state = a2c.init_state(catch_agent, opt, jax.random.PRNGKey(0))
  returns = []
  for _ in range(3):
    state, m = train(state)
    returns.append(float(m['return_sum'].sum() / m['episodes'].sum()))
  # Random play catches ~1 ball in 5 (mean return ~ -0.6).
  assert returns[0] < 0.3
  assert returns[-1] > 0.7, returns


def test_population_is_a_vmap_away(catch_agent):
  opt = optax.adam(1e-3)
  keys = jax.random.split(jax.random.PRNGKey(3), 3)
  states = jax.vmap(lambda k: a2c.init_state(catch_agent, opt, k))(keys)
  step = lambda s: a2c.update(catch_agent, opt, s)
  new, _ = jax.jit(jax.vmap(step))(states)
  one, _ = jax.jit(step)(jax.tree.map(lambda x: x[1], states))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a[1], b, rtol=1e-5,
                                                       atol=1e-6), new, one)
  # Agents are independent: different keys, different params.
  w = jax.tree.leaves(new.params)[0]
  assert float(jnp.abs(w[0] - w[1]).max()) > 0


def test_bad_a2c_config():
  with pytest.raises(ValueError, match='rollout_len'):
    a2c.A2CConfig(rollout_len=0).validate()
  with pytest.raises(ValueError, match='discount'):
    a2c.A2CConfig(discount=1.5).validate()


def _loss_inputs():
  return (jnp.array([[0., 0.], [1., 0.], [0., 0.]]), jnp.array([0.5, 0.2, 1.]),
          jnp.array([0, 1]), jnp.array([1., 2.]), jnp.array([0.9, 0.]))


def _a2c_loss(*args):
  return a2c.a2c_loss(*args, td_lambda=0.9, critic_weight=0.5,
                      entropy_weight=0.01)


@pytest.mark.parametrize('variant', ['jit', 'vmap', 'jit_vmap'])
def test_a2c_loss_checks_pass_under_jit_and_vmap(variant):
  args = _loss_inputs()
  want, want_m = _a2c_loss(*args)
  if variant == 'jit':
    got, m = jax.jit(_a2c_loss)(*args)
  else:  # a batch of 3 copies of the sequence, vmapped over axis 0
    fn = jax.vmap(_a2c_loss)
    fn = jax.jit(fn) if variant == 'jit_vmap' else fn
    got, m = fn(*[jnp.stack([x] * 3) for x in args])
    assert got.shape == (3,)
    got, m = got[1], jax.tree.map(lambda x: x[1], m)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_allclose(m['pg_loss'], want_m['pg_loss'], rtol=1e-6)


@pytest.mark.parametrize('arg, bad, message', [
    (1, jnp.zeros((3, 1)), 'a2c_loss: v_t'),                 # rank
    (0, jnp.zeros((3,)), 'a2c_loss: logits_t'),              # rank
    (2, jnp.array([0., 1.]), 'a2c_loss: a_t'),               # dtype
    (3, jnp.array([1, 2]), 'a2c_loss: r_t'),                 # dtype
    (4, jnp.array([0.9, 0., 1.]), 'a_t, r_t, discount_t must all be'),
    (1, jnp.array([0.5, 0.2]), r'a2c_loss: v_t need T \+ 1 steps'),
    (0, jnp.zeros((2, 2)), r'a2c_loss: logits_t need T \+ 1 steps'),
])
def test_a2c_loss_wrong_shape_or_dtype_names_the_argument(arg, bad, message):
  args = list(_loss_inputs())
  args[arg] = bad
  with pytest.raises(AssertionError, match=message):
    _a2c_loss(*args)
  with pytest.raises(AssertionError, match=message):  # also when traced
    jax.jit(_a2c_loss)(*args)
