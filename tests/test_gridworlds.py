"""Behavioural tests for agents/gridworlds.py.

XLA compiles are the slow part here, so each gridworld gets one jitted,
vmapped `reset`, `step_env` and `step`, always called with the same batch size
(`BATCH`): single-state checks broadcast the state over the batch, and the
statistical checks use the whole batch as samples.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import environments
from agents import env_base
from agents import gridworlds

NAMES = sorted(gridworlds.GRIDWORLDS)
STAY, UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3, 4
UP_LEFT, UP_RIGHT, DOWN_LEFT, DOWN_RIGHT = 5, 6, 7, 8
BATCH = 4000


@functools.lru_cache(maxsize=None)
def _env(name):
  """The env and its jitted, vmapped functions, compiled once per name."""
  env = gridworlds.GridWorld(name)
  fns = dict(reset=jax.jit(jax.vmap(env.reset)),
             step=jax.jit(jax.vmap(env.step_env)),
             auto_step=jax.jit(jax.vmap(env.step)))
  return env, fns


def _keys(seed):
  return jax.random.split(jax.random.PRNGKey(seed), BATCH)


def _state(agent, objects, present=None, time=0):
  """One hand-made state, broadcast over the batch."""
  objects = np.asarray(objects, np.int32)
  if present is None:
    present = np.ones(len(objects), bool)
  one = (np.asarray(agent, np.int32), objects, np.asarray(present, bool),
         np.asarray(time, np.int32))
  return gridworlds.GridState(
      *(jnp.asarray(np.broadcast_to(x, (BATCH,) + x.shape)) for x in one))


def _step(name, state, action, seed=0, auto=False):
  """Steps every state of the batch with `action`, each with its own key."""
  fns = _env(name)[1]
  actions = jnp.full((BATCH,), action, jnp.int32)
  fn = fns['auto_step'] if auto else fns['step']
  return jax.tree.map(np.asarray, fn(_keys(seed), state, actions))


def _expected_obs(state, spec):
  """The observation of a batch of states, built independently in numpy."""
  n = len(spec.objects)
  obs = np.zeros((BATCH, spec.rows, spec.cols, n + 1), np.float32)
  batch = np.arange(BATCH)
  agent, objects, present = (np.asarray(x) for x in state[:3])
  obs[batch, agent[:, 0], agent[:, 1], n] = 1
  for i in range(n):
    rows = batch[present[:, i]]
    obs[rows, objects[rows, i, 0], objects[rows, i, 1], i] = 1
  return obs


def _assert_rate(samples, p, num_se=4.5):
  rate = float(np.mean(samples))
  se = np.sqrt(p * (1 - p) / len(samples))
  assert abs(rate - p) < num_se * se, (rate, p, se)


def _assert_valid_obs(obs, spec):
  """Walls empty, agent exactly once, each object at most once, no overlap."""
  assert obs.dtype == np.float32
  assert obs.shape[-3:] == (spec.rows, spec.cols, len(spec.objects) + 1)
  assert ((obs == 0) | (obs == 1)).all()
  assert not obs[..., 0, :, :].any() and not obs[..., -1, :, :].any()
  assert not obs[..., :, 0, :].any() and not obs[..., :, -1, :].any()
  sums = obs.sum(axis=(-3, -2))
  assert (sums[..., -1] == 1).all() and (sums[..., :-1] <= 1).all()
  assert (obs.sum(axis=-1) <= 1).all()


def _cell(array):
  """The one (row, col) shared by every row of a batch of positions."""
  array = np.asarray(array)
  assert (array == array[0]).all()
  return tuple(array[0])


def test_table_matches_paper():
  sparse = ((1, 0, 0.05), (-1, 0.5, 0.05))
  dense = ((1, 0, 0.5), (-1, 0.5, 0.5))
  big = lambda objs: (objs[0], objs[0], objs[1], objs[1])
  expected = {
      'small_sparse_short': (5, 10, sparse, 50),
      'small_sparse_long': (10, 5, sparse, 500),
      'small_dense_short': (6, 8, dense, 50),
      'small_dense_long': (8, 6, dense, 500),
      'big_sparse_short': (12, 14, big(sparse), 50),
      'big_sparse_long': (14, 12, big(sparse), 500),
      'big_dense_short': (11, 15, big(dense), 50),
      'big_dense_long': (15, 11, big(dense), 500),
  }
  assert set(gridworlds.GRIDWORLDS) == set(expected)
  for name, (rows, cols, objects, max_steps) in expected.items():
    spec = gridworlds.GRIDWORLDS[name]
    assert (spec.rows, spec.cols, spec.max_steps) == (rows, cols, max_steps)
    np.testing.assert_allclose(spec.objects, objects)


@pytest.mark.parametrize('name', NAMES)
def test_reset(name):
  env, fns = _env(name)
  spec = env.spec
  n = len(spec.objects)
  assert env.name == name and env.num_actions == 9
  assert env.observation_shape == (spec.rows, spec.cols, n + 1)
  assert isinstance(environments.make(name), gridworlds.GridWorld)

  obs, state = jax.tree.map(np.asarray, fns['reset'](_keys(0)))
  assert obs.shape == (BATCH,) + env.observation_shape
  _assert_valid_obs(obs, spec)
  # All objects present: exactly one 1 in every channel.
  assert (obs.sum(axis=(1, 2)) == 1).all()
  assert state.present.all() and not state.time.any()
  assert state.agent.dtype == state.objects.dtype == np.int32
  np.testing.assert_array_equal(obs, _expected_obs(state, spec))
  # Start cells spread over the whole interior.
  assert (len({tuple(a) for a in state.agent}) ==
          (spec.rows - 2) * (spec.cols - 2))


def test_walls_block():
  name = 'small_sparse_short'  # Interior rows 1..3, cols 1..8.
  objects = [[2, 5], [3, 5]]
  cases = {
      (1, 1): {STAY: (1, 1), UP: (1, 1), LEFT: (1, 1), UP_LEFT: (1, 1),
               UP_RIGHT: (1, 1), DOWN_LEFT: (1, 1), DOWN: (2, 1),
               RIGHT: (1, 2), DOWN_RIGHT: (2, 2)},
      (3, 8): {DOWN: (3, 8), RIGHT: (3, 8), DOWN_RIGHT: (3, 8),
               UP_RIGHT: (3, 8), DOWN_LEFT: (3, 8), UP_LEFT: (2, 7)},
      # Along the top wall: up and its diagonals stay, the rest move.
      (1, 4): {UP: (1, 4), UP_LEFT: (1, 4), UP_RIGHT: (1, 4), LEFT: (1, 3),
               DOWN_LEFT: (2, 3)},
  }
  for start, moves in cases.items():
    for action, want in moves.items():
      _, state, reward, _, _ = _step(name, _state(start, objects), action)
      assert _cell(state.agent) == want, (start, action)
      assert not reward.any()


def test_collect_gives_reward_and_removes_object():
  # Dense: respawn_prob 0.5, so a same-step respawn would show up often.
  name = 'small_dense_short'
  obs, state, reward, terminated, truncated = _step(
      name, _state((2, 2), [[2, 3], [4, 5]]), RIGHT)
  assert reward.dtype == np.float32 and terminated.dtype == np.bool_
  assert reward.shape == terminated.shape == truncated.shape == (BATCH,)
  assert (reward == 1).all()
  assert not terminated.any()  # The +1 object has terminate_prob 0.
  assert not truncated.any()
  assert not state.present[:, 0].any() and state.present[:, 1].all()
  assert not obs[..., 0].any()
  assert (obs[:, 2, 3, 2] == 1).all() and (obs[:, 4, 5, 1] == 1).all()
  assert (state.time == 1).all()

  # The -1 object, diagonally.
  state0 = _state((3, 4), [[1, 1], [4, 5]])
  obs, state, reward, _, _ = _step(name, state0, DOWN_RIGHT)
  assert (reward == -1).all()
  assert not state.present[:, 1].any() and not obs[..., 1].any()
  assert _cell(state.agent) == (4, 5)

  # Missing the objects gives nothing.
  _, _, reward, terminated, _ = _step(name, state0, UP)
  assert not reward.any() and not terminated.any()


@pytest.mark.parametrize('name', ['small_sparse_short', 'big_dense_long'])
def test_terminate_probability(name):
  env, _ = _env(name)
  n = len(env.spec.objects)
  objects = [[1, c + 1] for c in range(n)]
  objects[-1] = [3, 3]  # A -1 object (they come last).
  _, _, reward, terminated, _ = _step(
      name, _state((2, 2), objects), DOWN_RIGHT, seed=1)
  assert (reward == -1).all()
  _assert_rate(terminated, 0.5)
  # The +1 object never terminates.
  _, _, reward, terminated, _ = _step(name, _state((2, 1), objects), UP)
  assert (reward == 1).all() and not terminated.any()


@pytest.mark.parametrize('name,p', [('small_dense_short', 0.5),
                                    ('small_sparse_long', 0.05),
                                    ('big_dense_short', 0.5)])
def test_respawn_probability_and_location(name, p):
  env, _ = _env(name)
  spec = env.spec
  n = len(spec.objects)
  agent = np.array([2, 2])
  objects = np.array([[1, c + 1] for c in range(n)])
  present = np.arange(n) > 0  # Only object 0 is absent.
  obs, state, reward, terminated, _ = _step(
      name, _state(agent, objects, present), STAY, seed=2)
  assert not reward.any() and not terminated.any()
  _assert_valid_obs(obs, spec)
  np.testing.assert_array_equal(obs, _expected_obs(state, spec))
  came_back = state.present[:, 0]
  _assert_rate(came_back, p)
  # Present objects stay put; the respawned one lands on an empty interior
  # cell (not the agent, not another object).
  assert (state.objects[:, 1:] == objects[1:]).all()
  cells = state.objects[came_back, 0]
  assert ((cells >= 1) & (cells <= [spec.rows - 2, spec.cols - 2])).all()
  taken = {tuple(agent)} | {tuple(c) for c in objects[1:]}
  seen = {tuple(c) for c in cells}
  assert not seen & taken
  if p == 0.5:  # Enough samples to see every empty cell.
    assert len(seen) == (spec.rows - 2) * (spec.cols - 2) - len(taken)

  if n > 1:
    # All objects absent: each comes back independently, never two on a cell.
    obs, state, _, _, _ = _step(name, _state(agent, objects, present & False),
                                STAY, seed=3)
    _assert_valid_obs(obs, spec)
    np.testing.assert_array_equal(obs, _expected_obs(state, spec))
    for i in range(n):
      _assert_rate(state.present[:, i], p)


def test_max_steps_truncates():
  name = 'small_sparse_short'
  env, fns = _env(name)
  max_steps = env.spec.max_steps
  state = jax.tree.map(lambda x: x[0], fns['reset'](_keys(3))[1])

  # An unbatched episode under jit + scan. Staying never collects anything
  # (respawns avoid the agent), so only truncation can end it.
  def body(state, key):
    _, state, _, terminated, truncated = env.step_env(key, state, STAY)
    return state, (terminated, truncated, state.time)

  keys = jax.random.split(jax.random.PRNGKey(4), max_steps + 5)
  _, (terminated, truncated, time) = jax.tree.map(
      np.asarray, jax.jit(lambda s, k: jax.lax.scan(body, s, k))(state, keys))
  assert not terminated.any()
  assert not truncated[:max_steps - 1].any() and truncated[max_steps - 1]
  assert time[max_steps - 1] == max_steps

  # Long episodes too.
  name = 'big_sparse_long'
  objects = [[1, 1], [1, 2], [1, 3], [1, 4]]
  assert _env(name)[0].spec.max_steps == 500
  for time, want in [(498, False), (499, True)]:
    _, state, _, _, truncated = _step(
        name, _state((5, 5), objects, time=time), DOWN)
    assert (truncated == want).all() and (state.time == time + 1).all()


def test_auto_reset():
  name = 'small_sparse_short'
  env, _ = _env(name)
  # After the last step `step` returns a fresh episode.
  state = _state((2, 2), [[1, 1], [3, 3]], [False, True],
                 time=env.spec.max_steps - 1)
  obs, state, _, terminated, truncated, info = _step(
      name, state, STAY, seed=5, auto=True)
  assert truncated.all() and not terminated.any() and info == {}
  assert not state.time.any() and state.present.all()
  np.testing.assert_array_equal(obs, _expected_obs(state, env.spec))

  # After a termination too, and only then.
  state = _state((2, 2), [[1, 1], [3, 3]], time=7)
  obs, state, reward, terminated, truncated, _ = _step(
      name, state, DOWN_RIGHT, seed=6, auto=True)
  assert (reward == -1).all() and not truncated.any()
  assert terminated.any() and not terminated.all()
  assert not state.time[terminated].any()
  assert (state.time[~terminated] == 8).all()
  assert state.present[terminated].all()
  assert not state.present[~terminated, 1].any()
  np.testing.assert_array_equal(obs, _expected_obs(state, env.spec))


def test_jit_vmap_rollout():
  name = 'big_dense_short'
  env, fns = _env(name)
  spec = env.spec
  rng = np.random.default_rng(0)
  _, state = fns['reset'](_keys(7))
  ended = np.zeros(BATCH, bool)
  rewards = []
  for t in range(spec.max_steps + 10):
    actions = jnp.asarray(rng.integers(0, env.num_actions, BATCH), jnp.int32)
    obs, state, reward, terminated, truncated, _ = fns['auto_step'](
        _keys(100 + t), state, actions)
    host, reward, terminated, truncated = jax.tree.map(
        np.asarray, (state, reward, terminated, truncated))
    assert reward.dtype == np.float32 and reward.shape == (BATCH,)
    assert terminated.dtype == truncated.dtype == np.bool_
    assert set(np.unique(reward)) <= {-1.0, 0.0, 1.0}
    # Terminations only come with a -1 reward.
    assert (reward[terminated] == -1).all()
    # Auto-reset after every episode end, and never past max_steps.
    done = terminated | truncated
    assert not host.time[done].any()
    assert ((host.time >= 0) & (host.time < spec.max_steps)).all()
    if t % 10 == 0:
      obs = np.asarray(obs)
      _assert_valid_obs(obs, spec)
      np.testing.assert_array_equal(obs, _expected_obs(host, spec))
    ended |= done
    rewards.append(reward)
  assert ended.all()  # Every episode truncated or terminated by now.
  rewards = np.stack(rewards)
  assert (rewards == 1).any() and (rewards == -1).any()


def test_drawn_randomness_steps_as_the_key_does():
  # step_drawn(draw(key)) is step(key), and both are Environment.step's
  # auto-reset with its keys (split: one for step_env, one for reset_env).
  name = 'small_dense_short'
  env, _ = _env(name)
  state = _state((2, 2), [[1, 1], [3, 3]], [False, True],
                 time=env.spec.max_steps - 3)
  actions = jnp.asarray(np.arange(BATCH) % env.num_actions, jnp.int32)
  for t in range(4):  # the last steps truncate and reset every env
    keys = _keys(40 + t)
    drawn = jax.vmap(env.step_drawn)(jax.vmap(env.draw)(keys), state,
                                     actions)
    plain = jax.vmap(functools.partial(env_base.Environment.step, env))(
        keys, state, actions)
    stepped = jax.vmap(env.step)(keys, state, actions)
    for a, b, c in zip(jax.tree.leaves(drawn), jax.tree.leaves(plain),
                       jax.tree.leaves(stepped)):
      np.testing.assert_array_equal(a, b)
      np.testing.assert_array_equal(c, b)
    state = drawn[1]
  assert int(state.time.max()) < env.spec.max_steps


def test_unknown_name():
  with pytest.raises(ValueError, match='env_name'):
    gridworlds.GridWorld('medium_sparse_short')
