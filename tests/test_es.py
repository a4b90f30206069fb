"""lopt.es and meta.algorithm='es': the ES estimate ascends the true
meta-gradient on a toy task, whole-run scores, bad fields named early, and a
resumed ES meta-training equals an uninterrupted one."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import meta_catch
from launchers.lib import meta_training
import lopt
from lopt import es


def _toy():
  """A learned optimizer and a deterministic fitness: minus the loss of a
  quadratic after five updates with it."""
  lo = lopt.learned_optimizer(cell='optim4rl', hidden_size=2, mlp_dims=(),
                              implementation='haiku')
  target = jnp.array([1.0, -2.0, 0.5, 3.0])
  scale = jnp.array([1.0, 0.3, 2.0, 0.5])

  def fitness(meta_params, key=None):
    del key
    opt = lo.opt_fn(meta_params, 0.1)
    w = jnp.zeros(4)
    state = opt.init(w)
    for _ in range(5):
      g = jax.grad(lambda w: jnp.sum(scale * (w - target) ** 2))(w)
      u, state = opt.update(g, state)
      w = w + u
    return -jnp.sum(scale * (w - target) ** 2)

  return lo, fitness


def test_es_step_points_the_way_of_the_true_meta_gradient():
  lo, fitness = _toy()
  mp = lo.init(jax.random.PRNGKey(0))
  true = jax.flatten_util.ravel_pytree(jax.grad(fitness)(mp))[0]
  trainer = es.make_es_trainer(fitness, mp, population_size=512, sigma=1e-3,
                               learning_rate=1e-3)
  state = trainer.init(jax.random.PRNGKey(1))
  new, metrics = jax.jit(trainer.step)(state)
  delta = (jax.flatten_util.ravel_pytree(new.meta_params)[0] -
           jax.flatten_util.ravel_pytree(state.meta_params)[0])
  # Adam's first step is lr * sign(estimate): the coordinates that carry
  # the true gradient's mass must move its way.
  agree = jnp.sign(delta) == jnp.sign(true)
  weight = jnp.abs(true)
  assert float(jnp.sum(weight * agree) / jnp.sum(weight)) > 0.9
  np.testing.assert_allclose(jnp.abs(delta), 1e-3, rtol=1e-3)
  assert float(fitness(new.meta_params)) > float(fitness(mp))
  assert int(new.step) == 1 and int(metrics['nonfinite_members']) == 0
  # Antithetic pairs: members i and i + P/2 share their run keys.
  keys = es.member_keys(jax.random.PRNGKey(3), 8)
  np.testing.assert_array_equal(keys[:4], keys[4:])


def test_unscored_center_leaves_the_search_as_it_is():
  # score_center=False skips the extra run: the metric is NaN and the
  # generation (members, update) is the same as with the mean scored.
  lo, fitness = _toy()
  mp = lo.init(jax.random.PRNGKey(0))
  out = []
  for scored in (True, False):
    trainer = es.make_es_trainer(fitness, mp, population_size=8, sigma=1e-2,
                                 learning_rate=1e-3, score_center=scored)
    out.append(jax.jit(trainer.step)(trainer.init(jax.random.PRNGKey(1))))
  (a, ma), (b, mb) = out
  np.testing.assert_allclose(float(ma['fitness_center']),
                             float(fitness(mp)), rtol=1e-5)
  assert np.isnan(float(mb['fitness_center']))
  np.testing.assert_array_equal(
      jax.flatten_util.ravel_pytree(a.meta_params)[0],
      jax.flatten_util.ravel_pytree(b.meta_params)[0])
  assert float(ma['fitness_mean']) == float(mb['fitness_mean'])


def test_non_finite_members_rank_last_and_are_counted():
  lo, fitness = _toy()
  mp = lo.init(jax.random.PRNGKey(0))
  # A fitness that is NaN for half the members: the step still moves the
  # mean, finitely, and counts them.
  def half_nan(meta_params, key):
    f = fitness(meta_params)
    return jnp.where(jax.random.bernoulli(key), jnp.nan, f)
  trainer = es.make_es_trainer(half_nan, mp, population_size=16, sigma=1e-2,
                               learning_rate=1e-3)
  new, metrics = jax.jit(trainer.step)(trainer.init(jax.random.PRNGKey(1)))
  flat = jax.flatten_util.ravel_pytree(new.meta_params)[0]
  assert bool(jnp.all(jnp.isfinite(flat)))
  assert 0 < int(metrics['nonfinite_members']) < 16
  assert int(new.skipped) == int(metrics['nonfinite_members'])
  assert np.isfinite(float(metrics['fitness_mean']))


def test_rate_factors_scale_each_runs_rate(monkeypatch):
  # A stand-in run scored by the size of the optimizer's first step: with
  # meta.es.rate_factors (1, 10) each run's step is the plain fitness's
  # times 1 or 10, drawn per run key (both occur).
  cfg = _tiny_es_config()

  def task_run(cfg, kind, agent):
    del cfg, kind, agent

    def run(optimizer, key):
      del key
      p = jnp.zeros(())
      u, _ = optimizer.update(jnp.ones(()), optimizer.init(p), p)
      return jnp.abs(u)

    return run

  monkeypatch.setattr(meta_training, '_task_run', task_run)
  agents = meta_training.validate(cfg, check_devices=False)
  lo, plain = meta_training.build_es(cfg, agents, [(0., 1.)])
  cfg.meta.es.rate_factors = (1., 10.)
  _, drawn = meta_training.build_es(cfg, agents, [(0., 1.)])
  start = lo.init(jax.random.PRNGKey(0))
  keys = jax.random.split(jax.random.PRNGKey(5), 32)
  score = lambda t: np.asarray(jax.jit(jax.vmap(
      t.fitness, in_axes=(None, 0)))(start, keys))
  base, ratio = score(plain), score(drawn) / score(plain)
  assert np.all(base > 0)
  np.testing.assert_allclose(np.sort(np.unique(np.round(ratio, 4))),
                             [1., 10.], rtol=1e-4)


def test_run_return_final_and_auc_by_hand():
  metrics = {'return_sum': jnp.array([[1., 0.], [0., 0.], [3., 2.],
                                      [0., 0.], [0., 0.], [0., 0.],
                                      [0., 0.], [0., 0.], [0., 0.],
                                      [4., 0.]]),
             'episodes': jnp.array([[1, 0], [0, 0], [2, 1], [0, 0], [0, 0],
                                    [0, 0], [0, 0], [0, 0], [0, 0], [2, 0]])}
  # final: the last 10% of 10 updates, one update: 4 over 2 episodes.
  assert float(meta_training.run_return(metrics, 'final')) == 2.0
  # auc: every episode, (1 + 3 + 2 + 4) / (1 + 3 + 2).
  np.testing.assert_allclose(
      float(meta_training.run_return(metrics, 'auc')), 10. / 6.)
  none = {k: jnp.zeros_like(v) for k, v in metrics.items()}
  assert np.isnan(float(meta_training.run_return(none, 'final')))


def _tiny_es_config():
  cfg = meta_catch.get_config()
  cfg.meta.algorithm = 'es'
  cfg.meta.es.population_size = 4
  cfg.meta.es.run_updates = 30
  cfg.meta.es.reference_seeds = 2
  cfg.a2c.num_envs = 4
  cfg.optimizer.hidden_size = 2
  cfg.optimizer.mlp_dims = ()
  cfg.tasks.learning_rates = (3e-3,)
  cfg.num_meta_steps = 4
  cfg.log_every = 2
  cfg.save_every = 2
  return cfg


@pytest.mark.parametrize('field,value,message', [
    ('algorithm', 'pbt', r"meta.algorithm: unknown 'pbt'; allowed"),
    ('es.population_size', 5, r'meta.es.population_size: must be an even'),
    ('es.sigma', 0., r'meta.es.sigma: must be a finite number > 0'),
    ('es.fitness', 'best', r"meta.es.fitness: unknown 'best'"),
    ('es.fitness_shaping', 'rank', r"meta.es.fitness_shaping: unknown"),
    ('es.run_updates', 0, r'meta.es.run_updates: must be an int >= 1'),
    ('es.rate_factors', (1., -3.), r'meta.es.rate_factors: factors > 0'),
])
def test_bad_es_fields_are_named_before_compiling(field, value, message):
  cfg = _tiny_es_config()
  node = cfg.meta
  *path, leaf = field.split('.')
  for p in path:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ValueError, match=message):
    meta_training.validate(cfg)


def test_saved_references_are_reused_across_search_settings(tmp_path,
                                                          monkeypatch):
  # The references depend on the tasks and runs, not on the search: a
  # workdir's are read back after sigma or rate_factors change, and
  # recomputed when the runs change.
  cfg = _tiny_es_config()
  agents = meta_training.validate(cfg, check_devices=False)
  calls = []

  def fake(cfg, agents):
    calls.append(1)
    return [(0., float(cfg.meta.es.run_updates))]

  monkeypatch.setattr(meta_training, 'es_references', fake)
  first = meta_training.es_references_in(str(tmp_path), cfg, agents, True)
  cfg.meta.es.sigma = 0.5
  cfg.meta.es.rate_factors = (0.3, 3.)
  cfg.meta.es.score_center = False
  assert meta_training.es_references_in(str(tmp_path), cfg, agents,
                                        True) == first
  assert len(calls) == 1
  cfg.meta.es.run_updates = 31
  assert meta_training.es_references_in(str(tmp_path), cfg, agents,
                                        True) == [(0., 31.)]
  assert len(calls) == 2


def test_resumed_es_meta_training_equals_an_uninterrupted_run(tmp_path):
  cfg = _tiny_es_config()
  whole = meta_training.meta_train(cfg, str(tmp_path / 'whole'),
                                   verbose=False)
  assert whole['meta_step'] == 4 and whole['skipped_meta_updates'] == 0
  refs = (tmp_path / 'whole' / 'es_references.json').read_text()
  half = cfg.copy_and_resolve_references()
  half.num_meta_steps = 2
  meta_training.meta_train(half, str(tmp_path / 'split'), verbose=False)
  resumed = meta_training.meta_train(cfg, str(tmp_path / 'split'),
                                     verbose=False)
  assert resumed['meta_step'] == 4
  assert (tmp_path / 'split' / 'es_references.json').read_text() == refs
  _, a = lopt.load(str(tmp_path / 'whole' / 'meta_params.npz'))
  _, b = lopt.load(str(tmp_path / 'split' / 'meta_params.npz'))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  rows = [(tmp_path / d / 'metrics.csv').read_text() for d in ('whole',
                                                                'split')]
  assert rows[0] == rows[1] and len(rows[0].splitlines()) == 5
  # The search moved the meta-params off their start.
  start = lopt.learned_optimizer(config=meta_training.cell_config(cfg)).init(
      jax.random.PRNGKey(cfg.seed))
  moved = [float(jnp.max(jnp.abs(x - y))) for x, y in
           zip(jax.tree.leaves(a), jax.tree.leaves(start))]
  assert max(moved) > 0
  assert os.path.exists(tmp_path / 'whole' / 'meta_training.png')


def test_references_extend_past_a_winning_edge_in_one_program(monkeypatch,
                                                                capsys):
  # A stand-in run whose score peaks where Adam's first step is 27x the
  # task rate: the grid {0.3, 1, 3} is extended by its step at that edge
  # (x3) to 9, 27 and 81, the best (27) is then bracketed, and every factor
  # runs in one compiled program (the factor is an argument, so the run is
  # traced once).
  cfg = _tiny_es_config()
  rate = cfg.tasks.learning_rates[0]
  traces = []

  def task_run(cfg, kind, agent):
    del cfg, kind, agent

    def run(optimizer, key):
      del key
      traces.append(1)
      p = jnp.zeros(())
      u, _ = optimizer.update(jnp.ones(()), optimizer.init(p), p)
      return 10. - (jnp.log(-u) - jnp.log(27. * rate)) ** 2

    return run

  monkeypatch.setattr(meta_training, '_task_run', task_run)
  agents = meta_training.validate(cfg, check_devices=False)
  [(floor, adam)] = meta_training.es_references(cfg, agents)
  assert len(traces) == 1
  assert adam == pytest.approx(10., abs=1e-4)
  assert floor < 1.
  out = capsys.readouterr().out
  assert 'Adam best at x27 of the task rate' in out
  for factor in ('x0.3', 'x1 ', 'x3 ', 'x9 ', 'x27 ', 'x81 '):
    assert factor in out + ' ', factor
