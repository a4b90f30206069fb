"""launchers/lib/comparison.py (evaluate.py's job): specs, table, plots."""

import csv
import os

import numpy as np
import pytest

from configs import evaluate as evaluate_config
from launchers.lib import comparison
import lopt


def test_evaluate_writes_table_summary_and_plots_and_reuses_runs(
    tmp_path, monkeypatch):
  cfg = evaluate_config.get_config()
  cfg.envs = 'catch'
  cfg.optimizers = 'adam:1e-3,optim4rl:1e-3'
  cfg.num_seeds = 1
  cfg.seeds_per_env = 'catch=2'  # overrides num_seeds for catch
  cfg.num_updates = 20
  cfg.updates_per_env = 'catch=100'  # overrides num_updates for catch
  rows = comparison.evaluate(cfg, str(tmp_path))
  assert [r['optimizer'] for r in rows] == ['adam', 'optim4rl',
                                            'random policy']
  assert rows[0]['ratio_to_adam'] == 1.0
  assert all(r['seeds'] == 2 for r in rows)
  assert all(r['final_return_sem'] >= 0 for r in rows)
  # 100 updates x 16 envs x 20 steps per agent.
  assert rows[0]['env_steps_per_agent'] == 100 * 16 * 20
  # Uniform-random Catch: the paddle catches about 1 ball in 5 (return -0.6).
  assert -0.7 < rows[2]['final_return_mean'] < -0.5
  assert rows[2]['episodes'] > 1000
  with open(tmp_path / 'results.csv') as f:
    assert len(list(csv.DictReader(f))) == 3
  assert '| catch | optim4rl |' in (tmp_path / 'results.md').read_text()
  assert os.path.getsize(tmp_path / 'catch.png') > 0
  # The normalized summary: random policy 0, Adam 1.
  with open(tmp_path / 'summary.csv') as f:
    summary = {r['optimizer']: r for r in csv.DictReader(f)}
  assert set(summary) == {'adam', 'optim4rl'}
  assert float(summary['adam']['catch']) == 1.0
  random, adam = rows[2]['final_return_mean'], rows[0]['final_return_mean']
  np.testing.assert_allclose(
      float(summary['optim4rl']['mean']),
      (rows[1]['final_return_mean'] - random) / (adam - random), rtol=1e-6)
  assert os.path.getsize(tmp_path / 'summary.png') > 0

  # Run again with one more spec: the finished runs are reused, only the new
  # one trains; a changed budget is refused before anything trains.
  trained = []
  train = comparison.training.train
  monkeypatch.setattr(comparison.training, 'train',
                      lambda c, *a, **k: trained.append(c) or train(c, *a, **k))
  cfg.optimizers = 'adam:1e-3,optim4rl:1e-3,adam:x3'
  again = comparison.evaluate(cfg, str(tmp_path))
  assert [r['optimizer'] for r in again] == ['adam', 'optim4rl', 'adam x3',
                                            'random policy']
  assert [c.optimizer.learning_rate for c in trained] == [3e-3]
  for a, b in zip(again[:2], rows[:2]):
    assert a['final_return_mean'] == b['final_return_mean']
  cfg.updates_per_env = 'catch=50'
  with pytest.raises(ValueError, match=r'finished run of another configuration'
                     r" \(fields \['num_updates'\] differ\)"):
    comparison.evaluate(cfg, str(tmp_path))
  assert len(trained) == 1


@pytest.mark.parametrize('spec,match', [
    ('adam', 'is not NAME:LEARNING_RATE'),
    ('adam:fast', 'bad learning rate'),
    ('adamq:1e-3', 'optimizer.name: unknown optimizer'),
    ('adam:-1', 'optimizer.learning_rate: must be'),
    ('adam:x0', 'bad multiplier'),
    ('adam:xfast', 'bad multiplier'),
])
def test_bad_optimizer_specs(spec, match):
  with pytest.raises(ValueError, match=match):
    comparison.with_optimizer(comparison.env_config('catch'), spec)


def test_learning_rate_multipliers_and_duplicate_labels():
  label, cfg = comparison.with_optimizer(comparison.env_config('catch'),
                                         'rmsprop:x0.3')
  assert label == 'rmsprop x0.3'
  np.testing.assert_allclose(cfg.optimizer.learning_rate, 3e-4)
  assert comparison.with_optimizer(comparison.env_config('catch'),
                                   'adam:x1')[0] == 'adam'
  ev = evaluate_config.get_config()
  ev.envs, ev.optimizers = 'catch', 'adam:1e-3,adam:3e-3'
  with pytest.raises(ValueError, match="two specs give the label 'adam'"):
    comparison.evaluate(ev, '')


def test_return_stats_leave_out_seeds_without_a_finished_episode():
  stats = comparison.return_stats([1., float('nan'), 3.])
  assert stats['seeds'] == 2 and stats['final_return_mean'] == 2.
  np.testing.assert_allclose(stats['final_return_sem'], np.std([1, 3],
                                                              ddof=1) / 2 ** .5)
  assert stats['per_seed'] == '1.000 nan 3.000'
  assert np.isnan(comparison.return_stats([float('nan')])['final_return_mean'])


def test_normalized_summary_by_hand():
  rows = [{'env': 'a', 'optimizer': 'adam', 'final_return_mean': 10.},
          {'env': 'a', 'optimizer': 'lo', 'final_return_mean': 8.},
          {'env': 'a', 'optimizer': 'random policy', 'final_return_mean': 0.},
          {'env': 'b', 'optimizer': 'adam', 'final_return_mean': -1.},
          {'env': 'b', 'optimizer': 'lo', 'final_return_mean': -2.},
          {'env': 'b', 'optimizer': 'random policy', 'final_return_mean': -5.},
          # No random-policy row: not scored.
          {'env': 'c', 'optimizer': 'adam', 'final_return_mean': 1.},
          {'env': 'c', 'optimizer': 'lo', 'final_return_mean': 0.},
          # Adam's best rate on b is x3: it is the reference there.
          {'env': 'b', 'optimizer': 'adam x3', 'final_return_mean': 0.},
          {'env': 'a', 'optimizer': 'adam x0.3', 'final_return_mean': 5.},
          # Adam no better than random (-499 vs -500): not scored.
          {'env': 'd', 'optimizer': 'adam', 'final_return_mean': -499.},
          {'env': 'd', 'optimizer': 'lo', 'final_return_mean': -300.},
          {'env': 'd', 'optimizer': 'random policy',
           'final_return_mean': -500.}]
  summary = {r['optimizer']: r for r in comparison.normalized_summary(rows)}
  assert summary['adam']['envs'] == 2
  np.testing.assert_allclose([summary['adam']['a'], summary['adam']['b']],
                             [1., 0.8])
  assert summary['lo']['adam_rates'] == 'a=adam b=adam x3'
  np.testing.assert_allclose(summary['adam x0.3']['a'], 0.5)
  np.testing.assert_allclose([summary['lo']['a'], summary['lo']['b']],
                             [0.8, 0.6])
  np.testing.assert_allclose(summary['lo']['mean'], 0.7)
  assert summary['lo']['worst_env'] == 'b'
  assert 'c' not in summary['lo'] and 'd' not in summary['lo']
  table = comparison.summary_table(list(summary.values()),
                                   ['a', 'b', 'c', 'd'])
  assert '| lo | 0.700 | 0.60 (b) | 0.80 | 0.60 |' in table
  assert 'Not scored (Adam no better than the random policy' in table
  assert 'row missing): c, d.' in table


def test_normalized_summary_carries_each_tasks_standard_error():
  row = lambda opt, mean, sem: {'env': 'a', 'optimizer': opt,
                                'final_return_mean': mean,
                                'final_return_sem': sem}
  rows = [row('adam', 10., 2.), row('adam x3', 6., 1.), row('lo', 8., 1.),
          row('random policy', 0., 0.1)]
  summary = {r['optimizer']: r for r in comparison.normalized_summary(rows)}
  # On the scale random = 0, best Adam = 1: the s.e. over (10 - 0).
  np.testing.assert_allclose([summary['lo']['a'], summary['lo']['a_se']],
                             [0.8, 0.1])
  np.testing.assert_allclose(summary['adam x3']['a_se'], 0.1)
  table = comparison.summary_table(list(summary.values()), ['a'])
  assert '| lo | 0.800 | 0.80 (a) | 0.80 ± 0.10 |' in table
  assert 'normalized mean ± its standard error' in table


def test_env_families_pick_their_agent():
  assert comparison.env_config('ant').agent == 'ppo'
  assert comparison.env_config('ant').ppo.num_envs == 64
  assert comparison.env_config('ant', paper_scale=True).ppo.num_envs == 4096
  assert comparison.env_config('small_dense_short').get('agent', 'a2c') == 'a2c'


@pytest.mark.parametrize('field', ['updates_per_env', 'seeds_per_env'])
@pytest.mark.parametrize('spec,match', [
    ('ant=10', 'ENV one of the evaluated envs'),
    ('catch', 'is not ENV=N'),
    ('catch=0', 'positive integer'),
    ('catch=ten', 'positive integer'),
])
def test_bad_per_env_fields(field, spec, match):
  with pytest.raises(ValueError, match=f'{field}: .*{match}'):
    comparison.parse_per_env(field, spec, ['catch'])


def test_random_policy_on_a_continuous_env():
  import jax  # pylint: disable=g-import-not-at-top
  from agents import environments  # pylint: disable=g-import-not-at-top
  from launchers.lib import common  # pylint: disable=g-import-not-at-top
  env = environments.make('inverted_pendulum', episode_length=1000)
  mean, episodes = jax.jit(
      lambda k: common.random_policy_return(env, k, 4, 200))(
          jax.random.PRNGKey(0))
  # The pole falls within a few steps under random torques (1 per step),
  # so many short episodes end, each worth a handful of reward.
  assert episodes >= 40
  assert 1. <= float(mean) <= 30.


def test_heldout_suite_plans_every_task_with_its_own_learning_rate():
  cfg = evaluate_config.get_config('heldout')
  envs = cfg.envs.split(',')
  assert len(envs) == 9 and cfg.num_seeds >= 4
  from configs import meta_gridworlds  # pylint: disable=g-import-not-at-top
  from configs import meta_mix  # pylint: disable=g-import-not-at-top
  # No task of a shipped optimizer's meta-training (the gridworlds, ant) or
  # of the mix (configs/meta_mix.py) is in the suite.
  meta_trained = (set(meta_gridworlds.get_config().tasks.env_names) |
                  set(meta_mix.get_config().tasks.env_names) | {'ant'})
  assert {'catch', 'asterix_minatar', 'ant'} <= meta_trained
  assert not meta_trained & set(envs)
  ppo_envs = {'hopper', 'halfcheetah', 'inverted_pendulum'}
  for env in envs:
    base = comparison.env_config(env)
    assert base.get('agent', 'a2c') == ('ppo' if env in ppo_envs else 'a2c')
  # 'default' takes each env config's rate (A2C 1e-3, PPO 3e-4); every
  # spec of the preset is a known optimizer (validated on a gymnax task).
  base = comparison.env_config('breakout_minatar')
  base.env_name = 'breakout_minatar'
  rates = {}
  for spec in cfg.optimizers.split(','):
    label, run = comparison.with_optimizer(base, spec)
    rates[label] = run.optimizer.learning_rate
  # Adam's sweep: 0.3x, 1x, 3x the A2C rate; the rest at 1x.
  np.testing.assert_allclose(
      [rates.pop('adam x0.3'), rates.pop('adam'), rates.pop('adam x3')],
      [3e-4, 1e-3, 3e-3])
  assert set(rates.values()) == {1e-3}
  # RMSProp, the untrained cell and every shipped optimizer.
  assert set(rates) == {'rmsprop', 'optim4rl', *lopt.pretrained_lib.names()}
  assert comparison.parse_per_env('updates_per_env', cfg.updates_per_env,
                                  envs) == {
      'hopper': 60, 'halfcheetah': 60, 'inverted_pendulum': 60}
  # 16 seeds on the A2C tasks, fewer on the costly Brax ones.
  assert cfg.num_seeds == 16
  assert comparison.parse_per_env('seeds_per_env', cfg.seeds_per_env,
                                  envs) == {
      'hopper': 4, 'halfcheetah': 4, 'inverted_pendulum': 8}
  base = comparison.env_config('inverted_pendulum')
  base.env_name = 'inverted_pendulum'
  _, run = comparison.with_optimizer(base, 'adam:default')
  assert run.optimizer.learning_rate == 3e-4
  # The validation tasks (for choosing variants) are outside the suite.
  valid = evaluate_config.get_config('validation')
  assert valid.num_seeds >= 4 and not set(valid.envs.split(',')) & set(envs)
  for spec in valid.optimizers.split(','):
    comparison.with_optimizer(base, spec)
  with pytest.raises(ValueError, match="unknown preset 'heldin'"):
    evaluate_config.get_config('heldin')


def test_final_return_falls_back_to_the_latest_chunk_that_ended_an_episode():
  from launchers.lib import training  # pylint: disable=g-import-not-at-top
  nan = float('nan')
  # 20 chunks x 3 seeds: the tail is the last 2 chunks.
  returns = np.full((20, 3), nan)
  returns[-2:, 0] = [4., 6.]       # episodes in the tail: their mean
  returns[-1, 1] = 8.
  returns[12, 2] = 7.              # none in the tail: chunk 12's figure
  np.testing.assert_allclose(training.final_return(returns), [5., 8., 7.])
  assert np.isnan(training.final_return(np.full((5, 1), nan))[0])
