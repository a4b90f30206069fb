"""Meta-training: pipeline resets, meta-gradients, NaN safety, compile count."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt
from agents import a2c
from agents import environments
from agents import networks
from lopt import meta
from lopt import meta_losses

NUM_AGENTS = 6
RESET_INTERVAL = 3
K = 2


@meta_losses.register('test_nan')
def _nan_head(agent, params, actor, key):
  loss, aux = meta_losses.get('a2c')(agent, params, actor, key)
  return loss * jnp.nan, aux


@functools.lru_cache(maxsize=None)
def _trainer(meta_loss='a2c', pipeline=True, steps_per_call=1,
             agent_groups=1, second_order=True, remat=True):
  """Tiny Catch meta-trainer (small net and cell: fast to compile)."""
  env = environments.make('catch')
  agent = a2c.make_a2c(env, networks.NetworkConfig('mlp', (8,)),
                       a2c.A2CConfig(num_envs=1, rollout_len=5))
  lo = lopt.learned_optimizer(cell='optim4rl', hidden_size=4, mlp_dims=(4,))
  tasks = [meta.Task('catch', agent, NUM_AGENTS, 1e-2)]
  return meta.make_meta_trainer(
      tasks, lo, meta.make_meta_optimizer(1e-2), num_inner_steps=K,
      reset_interval=RESET_INTERVAL, pipeline=pipeline, meta_loss=meta_loss,
      steps_per_call=steps_per_call, agent_groups=agent_groups,
      second_order=second_order, remat=remat)


@functools.lru_cache(maxsize=None)
def _jitted(meta_loss, pipeline):
  return jax.jit(_trainer(meta_loss, pipeline).step)


def _jitted_step(meta_loss='a2c', pipeline=True):
  """One compiled step per configuration, shared across tests."""
  return _jitted(meta_loss, pipeline)


def test_reset_index_is_staggered_uniformly():
  np.testing.assert_array_equal(meta.reset_index(8, 4),
                                [0, 0, 0, 1, 1, 2, 2, 3])
  np.testing.assert_array_equal(meta.reset_index(3, 72), [0, 35, 71])
  np.testing.assert_array_equal(meta.reset_index(5, 4, pipeline=False), 0)


def _agent(pop, i):
  return jax.tree.map(lambda x: x[i], pop)


def _equal(a, b):
  return all(bool(jnp.array_equal(x, y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize('pipeline', [True, False])
def test_pipeline_resets(pipeline):
  trainer = _trainer('a2c', pipeline)
  step = _jitted_step(pipeline=pipeline)
  init_agent = jax.jit(jax.vmap(trainer.init_agent[0], in_axes=(0, None)))
  state = trainer.init(jax.random.PRNGKey(0))
  resets = []
  for s in range(2 * RESET_INTERVAL):
    pop = state.population[0]
    reset_keys = jax.vmap(lambda k: jax.random.split(k, 3)[2])(pop.key)
    fresh = init_agent(reset_keys, state.meta_params)
    state, metrics = step(state)
    new = state.population[0]
    new_opt = lopt.direction_state(new.opt_state)
    pop_opt = lopt.direction_state(pop.opt_state)
    was_reset = []
    for i in range(NUM_AGENTS):
      is_fresh = _equal(_agent(new, i), _agent(fresh, i))
      was_reset.append(is_fresh)
      if is_fresh:  # a fresh init from its new key: params, opt and envs
        assert int(new_opt.count[i]) == 0
        assert all(float(jnp.abs(h[i]).max()) == 0
                   for h in new_opt.cell_state)
      else:  # not due: carries on from its K inner updates
        assert int(new_opt.count[i]) == int(pop_opt.count[i]) + K
        assert not _equal(new.params, pop.params)
    due = (s % RESET_INTERVAL) == trainer.reset_index[0]
    np.testing.assert_array_equal(was_reset, due)
    assert int(metrics['resets']) == int(due.sum())
    resets.append(was_reset)
  resets = np.array(resets)
  # In any reset_interval consecutive steps every agent resets exactly once.
  for start in range(RESET_INTERVAL + 1):
    window = resets[start:start + RESET_INTERVAL]
    np.testing.assert_array_equal(window.sum(axis=0), 1)
  if not pipeline:  # the ablation: all agents reset together
    assert all(r.all() or not r.any() for r in resets)
  else:  # staggered: never all at once
    assert not any(r.all() for r in resets)


def test_meta_step_changes_meta_params_and_truncates():
  trainer = _trainer('a2c', True)
  state = trainer.init(jax.random.PRNGKey(1))
  new, metrics = _jitted_step()(state)
  assert int(new.step) == 1 and int(new.skipped) == 0
  assert bool(metrics['finite'])
  assert float(metrics['grad_norm']) > 0
  assert not _equal(new.meta_params, state.meta_params)
  # Meta-gradients do not flow across iterations: the carried population
  # is data, so stepping twice from equal states gives equal results.
  a, _ = _jitted_step()(new)
  b, _ = _jitted_step()(jax.tree.map(jnp.array, new))
  assert _equal(a.meta_params, b.meta_params)


def test_nonfinite_meta_gradient_skips_update():
  trainer = _trainer('test_nan', True)
  state = trainer.init(jax.random.PRNGKey(2))
  new, metrics = _jitted_step(meta_loss='test_nan')(state)
  assert not bool(metrics['finite'])
  assert int(new.skipped) == 1
  assert _equal(new.meta_params, state.meta_params)
  assert _equal(new.meta_opt_state, state.meta_opt_state)
  assert all(bool(jnp.all(jnp.isfinite(x)))
             for x in jax.tree.leaves(new.meta_params))


def test_run_compiles_once_and_matches_steps():
  trainer = _trainer('a2c', True, 2)
  state = trainer.init(jax.random.PRNGKey(3))
  ref = state
  for _ in range(4):  # the same step function, one iteration per call
    ref, _ = _jitted_step()(ref)
  for _ in range(2):
    state, metrics = trainer.run(state)
  assert trainer.run._cache_size() == 1  # pylint: disable=protected-access
  assert metrics['meta_loss'].shape == (2,)
  assert int(state.step) == 4
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-7),
               state.meta_params, ref.meta_params)


def test_bad_arguments():
  env = environments.make('small_dense_short')
  agent = a2c.make_a2c(env, networks.NetworkConfig('mlp', (8,)))
  lo = lopt.learned_optimizer()
  mopt = meta.make_meta_optimizer(1e-3)
  task = meta.Task('sds', agent, 6, 1e-3)
  with pytest.raises(ValueError, match='reset_interval: must be an int >= 1'):
    meta.make_meta_trainer([task], lo, mopt, reset_interval=0)
  with pytest.raises(ValueError, match="meta_loss: unknown meta-loss head"):
    meta.make_meta_trainer([task], lo, mopt, meta_loss='ppo2')
  with pytest.raises(ValueError, match='cannot be split evenly over 4'):
    meta.make_meta_trainer([task], lo, mopt, num_devices=4)
  with pytest.raises(ValueError, match="task_weighting: unknown 'sum'"):
    meta.make_meta_trainer([task], lo, mopt, task_weighting='sum')
  with pytest.raises(ValueError, match='meta.clip_type: unknown'):
    meta.make_meta_optimizer(1e-3, clip_type='value')
  with pytest.raises(ValueError, match='meta.learning_rate: must be'):
    meta.make_meta_optimizer(0.)


def _toy_loss(scale, target):
  """A task whose agents' meta-loss is scale * |w - target|^2 * state."""
  def loss(meta_params, state, key):
    del key
    value = scale * jnp.sum((meta_params['w'] - target) ** 2) * state
    return value, (state + 1., {'return_sum': 0., 'episodes': 0})
  return loss


def test_task_weighting_unit_norm_equalises_tasks_by_hand():
  losses = (_toy_loss(1e6, 1.), _toy_loss(1., -2.))
  meta_params = {'w': jnp.array([0.5, 0.])}
  pop = (jnp.ones(2), jnp.full((3,), 2.))
  keys = (jax.random.split(jax.random.PRNGKey(0), 2),
          jax.random.split(jax.random.PRNGKey(1), 3))
  # d/dw of each task's mean meta-loss, by hand.
  g1 = 2e6 * (np.array([0.5, 0.]) - 1.)
  g2 = 2. * 2. * (np.array([0.5, 0.]) + 2.)
  loss1 = 1e6 * 1.25
  loss2 = 2. * (2.5 ** 2 + 4.)
  (loss, (new_pop, metrics)), grads = meta.population_grads(
      losses, meta_params, pop, keys)
  np.testing.assert_allclose(loss, (loss1 + loss2) / 2, rtol=1e-6)
  np.testing.assert_allclose(grads['w'], (g1 + g2) / 2, rtol=1e-6)
  (loss_u, (new_pop_u, metrics_u)), grads_u = meta.population_grads(
      losses, meta_params, pop, keys, task_weighting='unit_norm')
  np.testing.assert_allclose(loss_u, loss, rtol=1e-6)
  unit = lambda g: g / np.linalg.norm(g)
  np.testing.assert_allclose(grads_u['w'], (unit(g1) + unit(g2)) / 2,
                             rtol=1e-5)
  # The gridworld-scale task no longer decides the direction alone.
  cos = lambda a, b: a @ b / np.linalg.norm(a) / np.linalg.norm(b)
  assert cos(grads['w'], g2) < 0 < cos(grads_u['w'], g2)
  for m, g, task_loss in zip(metrics_u, (g1, g2), (loss1, loss2)):
    np.testing.assert_allclose(m['meta_grad_norm'], np.linalg.norm(g),
                               rtol=1e-5)
    np.testing.assert_allclose(m['meta_loss'], task_loss, rtol=1e-6)
  for a, b in zip(new_pop_u, (pop[0] + 1, pop[1] + 1)):
    np.testing.assert_array_equal(a, b)
  # A task with a non-finite meta-gradient makes the whole one non-finite
  # (so the guarded update skips it); a zero one stays zero.
  _, bad = meta.population_grads(
      (_toy_loss(jnp.nan, 1.), losses[1]), meta_params, pop, keys,
      task_weighting='unit_norm')
  assert not np.isfinite(bad['w']).all()
  _, zero = meta.population_grads(
      (_toy_loss(0., 1.), losses[1]), meta_params, pop, keys,
      task_weighting='unit_norm')
  np.testing.assert_allclose(zero['w'], unit(g2) / 2, rtol=1e-5)


def test_several_tasks_each_with_own_settings():
  env = environments.make('catch')
  small = a2c.make_a2c(env, networks.NetworkConfig('mlp', (4,)),
                       a2c.A2CConfig(num_envs=1, rollout_len=5))
  wide = a2c.make_a2c(env, networks.NetworkConfig('mlp', (8,)),
                      a2c.A2CConfig(num_envs=1, rollout_len=5,
                                    reward_scale=10.))
  lo = lopt.learned_optimizer(cell='optim4rl', hidden_size=4, mlp_dims=(4,))
  trainer = meta.make_meta_trainer(
      [meta.Task('small', small, 2, 1e-2), meta.Task('wide', wide, 4, 1e-3)],
      lo, meta.make_meta_optimizer(1e-2), num_inner_steps=1,
      reset_interval=(2, 4))
  np.testing.assert_array_equal(trainer.reset_index[0], [0, 1])
  np.testing.assert_array_equal(trainer.reset_index[1], [0, 1, 2, 3])
  state = trainer.init(jax.random.PRNGKey(4))
  # Each task keeps its own network shape.
  assert state.population[0].params['linear']['w'].shape == (2, 50, 4)
  assert state.population[1].params['linear']['w'].shape == (4, 50, 8)
  new, metrics = jax.jit(trainer.step)(state)
  np.testing.assert_allclose(
      metrics['meta_loss'],
      (metrics['meta_loss/small'] + metrics['meta_loss/wide']) / 2, rtol=1e-5)
  assert int(metrics['resets']) == 2  # agent 0 of each task at step 0
  assert not _equal(new.meta_params, state.meta_params)


def test_ppo_inner_agents_and_ppo_meta_loss_head():
  from agents import ppo  # pylint: disable=g-import-not-at-top
  agent = ppo.inner_agent(ppo.make_ppo(environments.make('cartpole'),
                                       ppo.PPOConfig(
                                           num_envs=4, unroll_len=5,
                                           num_minibatches=1, num_epochs=1,
                                           reward_scale=1.,
                                           policy_hidden=(8,),
                                           value_hidden=(8,))))
  lo = lopt.learned_optimizer(cell='optim4rl', hidden_size=4, mlp_dims=(4,))
  trainer = meta.make_meta_trainer(
      [meta.Task('cartpole', agent, 2, 1e-2)], lo,
      meta.make_meta_optimizer(1e-2), num_inner_steps=2, reset_interval=4,
      meta_loss='ppo')
  state = trainer.init(jax.random.PRNGKey(5))
  new, metrics = jax.jit(trainer.step)(state)
  assert bool(metrics['finite'])
  assert float(metrics['grad_norm']) > 0
  assert not _equal(new.meta_params, state.meta_params)
  # Observation statistics are carried: 3 rollouts of 4 envs x 5 steps.
  np.testing.assert_array_equal(new.population[0].actor.obs_stats.count[1],
                                60.)
  # The PPO head's loss terms are logged per task; they add up to the loss.
  parts = (float(metrics['pg_loss/cartpole']) +
           0.5 * float(metrics['value_loss/cartpole']) -
           0.01 * float(metrics['entropy/cartpole']))
  np.testing.assert_allclose(parts, float(metrics['meta_loss/cartpole']),
                             rtol=1e-4, atol=1e-6)


def test_pipeline_reset_replaces_the_due_agents_and_nonfinite_ones():
  slots = meta.reset_index(5, 3)                    # [0, 0, 1, 1, 2]

  def init_agent(key, meta_params):
    return meta.AgentState({'w': jnp.full((2,), meta_params) + key[0]},
                           None, None, None)

  pop = {'w': jnp.arange(10.).reshape(5, 2)}
  keys = jnp.stack([jnp.array([100 + i, 0], jnp.uint32) for i in range(5)])
  step = jax.jit(lambda pop, s: meta.pipeline_reset(
      init_agent, meta.AgentState(pop, None, None, None), s, slots, 3, keys,
      0.5))
  for s, due in ((3, [0, 1]), (4, [2, 3]), (5, [4])):
    new, count = step(pop, s)
    want = np.arange(10.).reshape(5, 2)
    want[due] = 0.5 + 100 + np.array(due)[:, None]
    np.testing.assert_array_equal(new.params['w'], want)
    assert int(count) == len(due)
  # A non-finite agent is reset too, whatever its slot.
  bad = {'w': pop['w'].at[3, 1].set(jnp.nan)}
  new, count = step(bad, 5)  # agent 4 due; agent 3 non-finite
  want = np.arange(10.).reshape(5, 2)
  want[3], want[4] = 103.5, 104.5
  np.testing.assert_array_equal(new.params['w'], want)
  assert int(count) == 2


def test_agent_groups_give_the_same_meta_step():
  state = _trainer().init(jax.random.PRNGKey(6))
  whole, m_whole = _jitted_step()(state)
  grouped, m_grouped = jax.jit(_trainer(agent_groups=3).step)(state)
  for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(grouped)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(m_whole['meta_loss'], m_grouped['meta_loss'],
                             rtol=1e-5)
  with pytest.raises(ValueError, match='agent_groups: must be an int >= 1 '
                     'dividing'):
    _trainer(agent_groups=4)


def test_inner_updates_unrolled_or_in_a_loop_give_the_same_meta_step(
    monkeypatch):
  # K <= meta.MAX_UNROLLED runs the inner updates unrolled (no stacked
  # buffers for the backward); as a loop, the same meta-step.
  assert K <= meta.MAX_UNROLLED
  state = _trainer().init(jax.random.PRNGKey(8))
  unrolled, m_unrolled = _jitted_step()(state)
  program = _jitted_step().lower(state).as_text()
  monkeypatch.setattr(meta, 'MAX_UNROLLED', 0)
  step = jax.jit(_trainer().step)
  # Another program: K updates in one loop body, not K bodies.
  looped_program = step.lower(state).as_text()
  assert looped_program.count('stablehlo.while') != program.count(
      'stablehlo.while')
  looped, m_looped = step(state)
  np.testing.assert_allclose(m_unrolled['grad_norm'], m_looped['grad_norm'],
                             rtol=1e-4)
  for x, y in zip(jax.tree.leaves(unrolled), jax.tree.leaves(looped)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('second_order', [True, False])
def test_remat_keeps_the_meta_step(second_order):
  # inner_unroll recomputes each update on the backward pass but keeps the
  # rollout, the kernel's outputs and, first-order, the inner gradient
  # (meta.REMAT_POLICY, FIRST_ORDER_REMAT_POLICY): the same meta-step as
  # keeping everything.
  state = _trainer().init(jax.random.PRNGKey(7))
  (a, m_a), (b, m_b) = (
      jax.jit(_trainer(second_order=second_order, remat=remat).step)(state)
      for remat in (True, False))
  np.testing.assert_allclose(m_a['grad_norm'], m_b['grad_norm'], rtol=1e-4)
  assert float(m_a['grad_norm']) > 0
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
