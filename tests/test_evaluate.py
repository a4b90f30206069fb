"""launchers/comparison.py (evaluate.py's job): specs, table, plots."""

import csv
import os

import pytest

from configs import evaluate as evaluate_config
from launchers import comparison


def test_evaluate_writes_table_and_plots(tmp_path):
  cfg = evaluate_config.get_config()
  cfg.envs = 'catch'
  cfg.optimizers = 'adam:1e-3,optim4rl:1e-3'
  cfg.num_seeds = 2
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


@pytest.mark.parametrize('spec,match', [
    ('adam', 'is not NAME:LEARNING_RATE'),
    ('adam:fast', 'bad learning rate'),
    ('adamq:1e-3', 'optimizer.name: unknown optimizer'),
    ('adam:-1', 'optimizer.learning_rate: must be'),
])
def test_bad_optimizer_specs(spec, match):
  with pytest.raises(ValueError, match=match):
    comparison.with_optimizer(comparison.env_config('catch'), spec)


def test_env_families_pick_their_agent():
  assert comparison.env_config('ant').agent == 'ppo'
  assert comparison.env_config('ant').ppo.num_envs == 64
  assert comparison.env_config('ant', paper_scale=True).ppo.num_envs == 4096
  assert comparison.env_config('small_dense_short').get('agent', 'a2c') == 'a2c'


@pytest.mark.parametrize('spec,match', [
    ('ant=10', 'ENV one of the evaluated envs'),
    ('catch', 'is not ENV=N'),
    ('catch=0', 'positive integer'),
    ('catch=ten', 'positive integer'),
])
def test_bad_updates_per_env(spec, match):
  with pytest.raises(ValueError, match=match):
    comparison.parse_updates_per_env(spec, ['catch'])


def test_random_policy_on_a_continuous_env():
  import jax  # pylint: disable=g-import-not-at-top
  from agents import environments  # pylint: disable=g-import-not-at-top
  from launchers import common  # pylint: disable=g-import-not-at-top
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
  meta_trained = {'small_dense_long', 'small_dense_short', 'big_sparse_short',
                  'big_dense_short', 'big_sparse_long', 'big_dense_long',
                  'catch', 'ant'}
  assert not meta_trained & set(envs)
  ppo_envs = {'hopper', 'halfcheetah', 'inverted_pendulum'}
  for env in envs:
    base = comparison.env_config(env)
    assert base.get('agent', 'a2c') == ('ppo' if env in ppo_envs else 'a2c')
  # 'default' takes each env config's rate (A2C 1e-3, PPO 3e-4); every
  # spec of the preset is a known optimizer (validated on a gymnax task).
  base = comparison.env_config('breakout_minatar')
  base.env_name = 'breakout_minatar'
  for spec in cfg.optimizers.split(','):
    _, run = comparison.with_optimizer(base, spec)
    assert run.optimizer.learning_rate == 1e-3
  base = comparison.env_config('inverted_pendulum')
  base.env_name = 'inverted_pendulum'
  _, run = comparison.with_optimizer(base, 'adam:default')
  assert run.optimizer.learning_rate == 3e-4
  with pytest.raises(ValueError, match="unknown preset 'heldin'"):
    evaluate_config.get_config('heldin')
