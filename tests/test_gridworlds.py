"""Behavioural tests for agents/gridworlds.py."""

import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agents import environments  # pylint: disable=g-import-not-at-top
from agents import gridworlds  # pylint: disable=g-import-not-at-top

NAMES = sorted(gridworlds.GRIDWORLDS)
STAY, UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3, 4
UP_LEFT, UP_RIGHT, DOWN_LEFT, DOWN_RIGHT = 5, 6, 7, 8
NUM_SAMPLES = 4000


@functools.lru_cache(maxsize=None)
def _env(name):
  """The env and its jitted functions, compiled once per name."""
  env = gridworlds.GridWorld(name)
  fns = dict(
      reset=jax.jit(jax.vmap(env.reset)),
      observation=jax.jit(jax.vmap(env.observation)),
      # Many keys, one state and action: for statistics.
      step_keys=jax.jit(jax.vmap(env.step_env, in_axes=(0, None, None))),
      auto_step_keys=jax.jit(jax.vmap(env.step, in_axes=(0, None, None))),
      step=jax.jit(env.step_env),
  )
  return env, fns


def _state(agent, objects, present=None, time=0):
  objects = np.asarray(objects, np.int32)
  if present is None:
    present = np.ones(len(objects), bool)
  return gridworlds.GridState(
      agent=jnp.asarray(agent, jnp.int32),
      objects=jnp.asarray(objects),
      present=jnp.asarray(present, bool),
      time=jnp.asarray(time, jnp.int32))


def _keys(n, seed=0):
  return jax.random.split(jax.random.PRNGKey(seed), n)


def _assert_rate(samples, p, num_se=4.5):
  rate = float(np.mean(samples))
  se = np.sqrt(p * (1 - p) / len(samples))
  assert abs(rate - p) < num_se * se, (rate, p, se)


def _assert_valid_obs(obs, spec):
  """Walls empty, agent exactly once, each object at most once, no overlap."""
  obs = np.asarray(obs)
  assert set(np.unique(obs)) <= {0.0, 1.0}
  assert not obs[..., 0, :, :].any() and not obs[..., -1, :, :].any()
  assert not obs[..., :, 0, :].any() and not obs[..., :, -1, :].any()
  sums = obs.sum(axis=(-3, -2))
  np.testing.assert_array_equal(sums[..., -1], 1)
  assert (sums[..., :-1] <= 1).all()
  assert (obs.sum(axis=-1) <= 1).all()
  assert obs.shape[-3:] == (spec.rows, spec.cols, len(spec.objects) + 1)


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
  assert env.num_actions == 9
  assert env.observation_shape == (spec.rows, spec.cols, n + 1)
  assert isinstance(environments.make(name), gridworlds.GridWorld)

  obs, state = fns['reset'](_keys(2048))
  assert obs.dtype == jnp.float32
  assert obs.shape == (2048,) + env.observation_shape
  _assert_valid_obs(obs, spec)
  # All objects present, exactly one 1 per channel.
  np.testing.assert_array_equal(np.asarray(obs).sum(axis=(1, 2)), 1)
  assert np.asarray(state.present).all() and not np.asarray(state.time).any()
  np.testing.assert_array_equal(obs, fns['observation'](state))
  # The state's positions are where the channels say.
  batch = np.arange(2048)
  agent = np.asarray(state.agent)
  assert (obs[batch, agent[:, 0], agent[:, 1], n] == 1).all()
  for i in range(n):
    cell = np.asarray(state.objects[:, i])
    assert (obs[batch, cell[:, 0], cell[:, 1], i] == 1).all()
  # Start cells spread over the whole interior.
  assert len({tuple(a) for a in agent}) == (spec.rows - 2) * (spec.cols - 2)


def test_walls_block():
  _, fns = _env('small_sparse_short')  # interior rows 1..3, cols 1..8
  key = jax.random.PRNGKey(0)
  objects = [[2, 5], [3, 5]]
  corner = {STAY: (1, 1), UP: (1, 1), LEFT: (1, 1), UP_LEFT: (1, 1),
            UP_RIGHT: (1, 1), DOWN_LEFT: (1, 1), DOWN: (2, 1), RIGHT: (1, 2),
            DOWN_RIGHT: (2, 2)}
  for action, want in corner.items():
    state = fns['step'](key, _state((1, 1), objects), action)[1]
    assert tuple(np.asarray(state.agent)) == want, action
  far_corner = {DOWN: (3, 8), RIGHT: (3, 8), DOWN_RIGHT: (3, 8),
                UP_RIGHT: (3, 8), DOWN_LEFT: (3, 8), UP_LEFT: (2, 7)}
  for action, want in far_corner.items():
    state = fns['step'](key, _state((3, 8), objects), action)[1]
    assert tuple(np.asarray(state.agent)) == want, action
  # Along the top wall: up and its diagonals stay, sideways moves.
  for action, want in {UP: (1, 4), UP_LEFT: (1, 4), UP_RIGHT: (1, 4),
                       LEFT: (1, 3), DOWN_LEFT: (2, 3)}.items():
    state = fns['step'](key, _state((1, 4), objects), action)[1]
    assert tuple(np.asarray(state.agent)) == want, action


def test_collect_gives_reward_and_removes_object():
  # Dense: respawn_prob 0.5, so a same-step respawn would show up often.
  _, fns = _env('small_dense_short')
  keys = _keys(1000)
  state = _state((2, 2), [[2, 3], [4, 5]])
  obs, new, reward, terminated, truncated = fns['step_keys'](
      keys, state, RIGHT)
  assert reward.dtype == jnp.float32 and terminated.dtype == jnp.bool_
  assert reward.shape == terminated.shape == truncated.shape == (1000,)
  np.testing.assert_array_equal(reward, 1.0)
  assert not np.asarray(terminated).any()  # +1 object: terminate_prob 0.
  assert not np.asarray(truncated).any()
  assert not np.asarray(new.present[:, 0]).any()
  assert np.asarray(new.present[:, 1]).all()
  assert not np.asarray(obs[..., 0]).any()
  assert (obs[:, 2, 3, 2] == 1).all() and (obs[:, 4, 5, 1] == 1).all()
  np.testing.assert_array_equal(new.time, 1)

  # The -1 object, diagonally.
  state = _state((3, 4), [[1, 1], [4, 5]])
  obs, new, reward, _, _ = fns['step_keys'](keys, state, DOWN_RIGHT)
  np.testing.assert_array_equal(reward, -1.0)
  assert not np.asarray(new.present[:, 1]).any()
  assert not np.asarray(obs[..., 1]).any()
  np.testing.assert_array_equal(new.agent, np.broadcast_to([4, 5], (1000, 2)))

  # Missing the objects gives nothing.
  _, _, reward, terminated, _ = fns['step_keys'](keys, state, UP)
  assert not np.asarray(reward).any() and not np.asarray(terminated).any()


@pytest.mark.parametrize('name', ['small_sparse_short', 'big_dense_long'])
def test_terminate_probability(name):
  env, fns = _env(name)
  n = len(env.spec.objects)
  bad = n - 1  # The -1 objects come last.
  objects = [[1, c + 1] for c in range(n)]
  objects[bad] = [3, 3]
  keys = _keys(NUM_SAMPLES, seed=1)
  _, _, reward, terminated, _ = fns['step_keys'](
      keys, _state((2, 2), objects), DOWN_RIGHT)
  np.testing.assert_array_equal(reward, -1.0)
  _assert_rate(np.asarray(terminated), 0.5)
  # The +1 object never terminates.
  _, _, reward, terminated, _ = fns['step_keys'](
      keys, _state((2, 1), objects), UP)
  np.testing.assert_array_equal(reward, 1.0)
  assert not np.asarray(terminated).any()


@pytest.mark.parametrize('name,p', [('small_dense_short', 0.5),
                                    ('small_sparse_long', 0.05),
                                    ('big_dense_short', 0.5)])
def test_respawn_probability_and_location(name, p):
  env, fns = _env(name)
  spec = env.spec
  n = len(spec.objects)
  agent = np.array([2, 2])
  objects = np.array([[1, c + 1] for c in range(n)])
  present = np.ones(n, bool)
  present[0] = False
  keys = _keys(NUM_SAMPLES, seed=2)
  obs, new, reward, terminated, _ = fns['step_keys'](
      keys, _state(agent, objects, present), STAY)
  assert not np.asarray(reward).any() and not np.asarray(terminated).any()
  _assert_valid_obs(obs, spec)
  came_back = np.asarray(new.present[:, 0])
  _assert_rate(came_back, p)
  # Present objects stay put; the respawned one lands on an empty interior
  # cell (not the agent, not another object).
  np.testing.assert_array_equal(new.objects[:, 1:],
                                np.broadcast_to(objects[1:], (NUM_SAMPLES,
                                                              n - 1, 2)))
  cells = np.asarray(new.objects[came_back, 0])
  assert ((cells >= 1) & (cells <= [spec.rows - 2, spec.cols - 2])).all()
  taken = {tuple(agent)} | {tuple(c) for c in objects[1:]}
  seen = {tuple(c) for c in cells}
  assert not seen & taken
  if p == 0.5:  # Enough samples to see every empty cell.
    assert len(seen) == (spec.rows - 2) * (spec.cols - 2) - len(taken)
  np.testing.assert_array_equal(obs[came_back, cells[:, 0], cells[:, 1], 0], 1)
  assert not np.asarray(obs[~came_back, ..., 0]).any()

  if n > 1:
    # All objects absent: each comes back independently, never two on a cell.
    state = _state(agent, objects, np.zeros(n, bool))
    obs, new, _, _, _ = fns['step_keys'](keys, state, STAY)
    _assert_valid_obs(obs, spec)
    for i in range(n):
      _assert_rate(np.asarray(new.present[:, i]), p)
    np.testing.assert_array_equal(np.asarray(obs).sum(axis=(1, 2, 3)),
                                  np.asarray(new.present).sum(axis=1) + 1)


def test_max_steps_truncates_and_auto_resets():
  env, fns = _env('small_sparse_short')
  max_steps = env.spec.max_steps
  _, state = env.reset(jax.random.PRNGKey(3))

  def body(state, key):
    # Staying never collects anything (respawns avoid the agent).
    _, state, _, terminated, truncated = env.step_env(key, state, STAY)
    return state, (terminated, truncated, state.time)

  _, (terminated, truncated, time) = jax.jit(
      lambda s, k: jax.lax.scan(body, s, k))(state, _keys(max_steps + 5))
  assert not np.asarray(terminated).any()
  truncated = np.asarray(truncated)
  assert not truncated[:max_steps - 1].any() and truncated[max_steps - 1]
  assert time[max_steps - 1] == max_steps

  # Auto-reset: after the last step `step` returns a fresh episode.
  state = _state((2, 2), [[1, 1], [3, 3]], [False, True], time=max_steps - 1)
  obs, new, _, terminated, truncated, _ = fns['auto_step_keys'](
      _keys(64, seed=4), state, STAY)
  assert np.asarray(truncated).all() and not np.asarray(terminated).any()
  assert not np.asarray(new.time).any()
  assert np.asarray(new.present).all()
  np.testing.assert_array_equal(obs, fns['observation'](new))
  # One step earlier it goes on.
  _, _, _, _, truncated = fns['step'](
      jax.random.PRNGKey(0), state._replace(time=max_steps - 2), STAY)
  assert not truncated

  # Long episodes too.
  env, fns = _env('big_sparse_long')
  assert env.spec.max_steps == 500
  state = _state((2, 2), [[1, 1], [1, 2], [1, 3], [1, 4]], time=498)
  _, state, _, _, truncated = fns['step'](jax.random.PRNGKey(0), state, DOWN)
  assert not truncated
  _, _, _, _, truncated = fns['step'](jax.random.PRNGKey(1), state, DOWN)
  assert truncated


def test_termination_auto_resets():
  _, fns = _env('small_sparse_short')
  state = _state((2, 2), [[1, 1], [3, 3]], time=7)
  obs, new, reward, terminated, truncated, _ = fns['auto_step_keys'](
      _keys(500, seed=5), state, DOWN_RIGHT)
  np.testing.assert_array_equal(reward, -1.0)
  terminated = np.asarray(terminated)
  assert terminated.any() and not terminated.all()
  assert not np.asarray(truncated).any()
  time = np.asarray(new.time)
  assert not time[terminated].any() and (time[~terminated] == 8).all()
  assert np.asarray(new.present[terminated]).all()
  np.testing.assert_array_equal(obs, fns['observation'](new))


def test_jit_vmap_rollout():
  env, _ = _env('big_dense_short')
  batch, steps = 32, 120
  spec = env.spec

  @jax.jit
  def rollout(key):
    key_reset, key_run = jax.random.split(key)
    _, state = jax.vmap(env.reset)(jax.random.split(key_reset, batch))

    def body(state, key):
      key_act, key_step = jax.random.split(key)
      action = jax.random.randint(key_act, (batch,), 0, env.num_actions)
      obs, state, reward, terminated, truncated, _ = jax.vmap(env.step)(
          jax.random.split(key_step, batch), state, action)
      return state, (obs, state, reward, terminated, truncated)

    return jax.lax.scan(body, state, jax.random.split(key_run, steps))[1]

  obs, state, reward, terminated, truncated = rollout(jax.random.PRNGKey(6))
  assert obs.shape == (steps, batch) + env.observation_shape
  assert reward.dtype == jnp.float32 and reward.shape == (steps, batch)
  assert terminated.dtype == truncated.dtype == jnp.bool_
  _assert_valid_obs(obs, spec)
  obs = np.asarray(obs)
  np.testing.assert_array_equal(obs[..., :-1].sum(axis=(2, 3)),
                                np.asarray(state.present))
  assert set(np.unique(reward)) <= {-1.0, 0.0, 1.0}
  assert (np.asarray(reward) != 0).any()
  time = np.asarray(state.time)
  assert ((time >= 0) & (time < spec.max_steps)).all()
  done = np.asarray(terminated | truncated)
  assert not time[done].any()  # Auto-reset after every episode end.
  assert np.asarray(truncated).sum() >= batch  # 120 steps > max_steps 50.
  assert np.asarray(terminated).any()
  # Terminations only come with a -1 reward.
  assert (np.asarray(reward)[np.asarray(terminated)] == -1).all()

  # jit and eager agree.
  _, state0 = env.reset(jax.random.PRNGKey(7))
  key = jax.random.PRNGKey(8)
  eager = env.step_env(key, state0, DOWN_RIGHT)
  jitted = jax.jit(env.step_env)(key, state0, DOWN_RIGHT)
  for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
    np.testing.assert_array_equal(a, b)


def test_unknown_name():
  with pytest.raises(ValueError, match='env_name'):
    gridworlds.GridWorld('medium_sparse_short')
