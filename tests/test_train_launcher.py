"""launchers/train.py: runs, writes outputs, rejects bad input early."""

import os
import subprocess
import sys

import numpy as np
import pytest

import lopt
import stopping
from configs import a2c_catch
from configs import a2c_gridworld
from launchers.lib import runtime
from launchers.lib import training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(cfg, **overrides):
  cfg.num_updates = 20
  cfg.log_every = 10
  cfg.a2c.num_envs = 4
  for k, v in overrides.items():
    node, *rest = k.split('.')
    if rest:
      cfg[node][rest[0]] = v
    else:
      cfg[k] = v
  return cfg


def test_untrained_optim4rl_trains_without_nan(tmp_path):
  cfg = _tiny(a2c_gridworld.get_config('small_dense_short'),
              **{'optimizer.name': 'optim4rl', 'num_seeds': 2})
  runtime.enable_executable_cache(str(tmp_path / 'cache'), enabled=True)
  try:
    result = training.train(cfg, str(tmp_path), verbose=False)
    # Again: both programs loaded from the executable cache, same returns.
    again = training.train(cfg, '', verbose=False)
  finally:
    runtime.enable_executable_cache('')
  assert result['executable_cache'] == {'init': 'miss', 'train': 'miss'}
  assert again['executable_cache'] == {'init': 'hit', 'train': 'hit'}
  np.testing.assert_array_equal(again['returns'], result['returns'])
  assert not result['nonfinite']
  assert result['returns'].shape == (2, 2)
  assert np.all(np.isfinite(result['returns']))
  for name in ('returns.csv', 'learning_curve.png', 'summary.json'):
    assert os.path.getsize(tmp_path / name) > 0
  header = (tmp_path / 'returns.csv').read_text().splitlines()[0]
  assert header.startswith('update,env_steps,mean_return,return_seed0')


@pytest.mark.parametrize('field,value,match', [
    ('env_name', 'pong', "env_name: unknown environment 'pong'"),
    ('optimizer.name', 'adamax2', "optimizer.name: unknown optimizer"),
    ('optimizer.learning_rate', 0., 'optimizer.learning_rate: must be'),
    ('optimizer.learning_rate', -1e-3, 'optimizer.learning_rate: must be'),
    ('num_updates', 0, 'num_updates: must be'),
    ('a2c.rollout_len', 0, 'rollout_len: must be'),
    ('optimizer.lr_schedule', 'step', "optimizer.lr_schedule: unknown"),
    ('optimizer.lr_end', 2., 'optimizer.lr_end: must be in'),
])
def test_bad_input_names_the_field(field, value, match):
  cfg = _tiny(a2c_catch.get_config(), **{field: value})
  with pytest.raises(ValueError, match=match):
    training.validate(cfg)


def test_learned_optimizer_file_of_another_config(tmp_path):
  lo = lopt.learned_optimizer(cell='optim4rl', hidden_size=4)
  import jax  # pylint: disable=g-import-not-at-top
  path = lopt.save(str(tmp_path / 'small.npz'), lo.init(jax.random.PRNGKey(0)),
                   lo)
  cfg = _tiny(a2c_catch.get_config(), **{'optimizer.name': 'learned'})
  with pytest.raises(ValueError, match='meta_params_path: required'):
    training.validate(cfg)
  cfg.optimizer.meta_params_path = path
  training.validate(cfg)  # a file carries its own config: loads fine
  # ... but a file whose arrays do not match its config is refused.
  mp = lo.init(jax.random.PRNGKey(0))
  mp['sign_path/gru']['w_h'] = np.zeros((8, 24), np.float32)
  bad = lopt.save(str(tmp_path / 'bad.npz'), mp, lo)
  cfg.optimizer.meta_params_path = bad
  with pytest.raises(ValueError, match="'sign_path/gru/w_h' has shape"):
    training.validate(cfg)


def test_cli_rejects_unknown_env_before_compiling(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'launchers.train',
       '--config=configs/a2c_catch.py', '--config.env_name=pong',
       f'--workdir={tmp_path}'],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert "env_name: unknown environment 'pong'" in proc.stderr
  assert 'small_dense_short' in proc.stderr  # lists what is allowed
  assert not os.path.exists(tmp_path / 'returns.csv')


def test_train_runs_ppo_from_the_brax_config_family(tmp_path):
  from configs import ppo_brax  # pylint: disable=g-import-not-at-top
  cfg = ppo_brax.get_config('cartpole,cpu')  # PPO on a gymnax env: quick
  cfg.episode_length = 0  # gymnax CartPole has its own episode length
  cfg.ppo.num_envs, cfg.ppo.unroll_len = 8, 8
  cfg.ppo.num_minibatches, cfg.ppo.num_epochs = 2, 1
  cfg.ppo.policy_hidden, cfg.ppo.value_hidden = (16,), (16,)
  cfg.num_updates, cfg.log_every = 4, 2
  result = training.train(cfg, str(tmp_path), verbose=False)
  assert not result['nonfinite']
  np.testing.assert_array_equal(result['env_steps'], [128, 256])
  cfg.agent = 'dqn'
  with pytest.raises(ValueError, match="agent: unknown agent 'dqn'"):
    training.validate(cfg)
  cfg.agent = 'a2c'
  cfg.env_name = 'inverted_pendulum'
  with pytest.raises(ValueError, match='A2C needs discrete actions'):
    training.validate(cfg)
  cfg.agent = 'ppo'
  cfg.reset_mode = 'restart'
  with pytest.raises(ValueError, match="reset_mode: unknown 'restart'"):
    training.validate(cfg)


@pytest.mark.parametrize('name', ['adam', 'optim4rl'])
def test_config_lr_schedule_reaches_the_optimizer(name):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from launchers.lib import common  # pylint: disable=g-import-not-at-top
  cfg = a2c_catch.get_config()
  cfg.optimizer.name = name
  cfg.optimizer.lr_schedule = 'linear'
  cfg.optimizer.lr_end = 0.25
  opt = common.make_optimizer(cfg.optimizer, total_steps=4)
  cfg.optimizer.lr_schedule = 'constant'
  const = common.make_optimizer(cfg.optimizer)
  g = jnp.array([0.3, -1e-3, 2.])
  s, c = opt.init(g), const.init(g)
  for step in range(6):
    u, s = opt.update(g, s, g)
    v, c = const.update(g, c, g)
    frac = 1. - 0.75 * min(step, 4) / 4  # 1 -> 0.25 over 4 steps, then flat
    np.testing.assert_allclose(u, frac * v, rtol=1e-5, atol=1e-12)
  del jax


def test_meta_training_task_rate_follows_the_config_schedule():
  from configs import meta_catch  # pylint: disable=g-import-not-at-top
  from launchers.lib import meta_training  # pylint: disable=g-import-not-at-top
  cfg = meta_catch.get_config()
  cfg.tasks.num_agents = 2
  cfg.tasks.lr_schedule = 'cosine'
  cfg.tasks.lr_end = 0.1
  tasks, _, _ = meta_training.build(cfg)
  rate = tasks[0].learning_rate
  life = cfg.meta.reset_interval * cfg.meta.num_inner_steps
  lr = cfg.tasks.learning_rates[0]
  assert float(rate(0)) == pytest.approx(lr)
  assert float(rate(life)) == pytest.approx(0.1 * lr)
  cfg.tasks.lr_schedule = 'exp'
  with pytest.raises(ValueError, match='tasks.lr_schedule: unknown'):
    meta_training.validate(cfg)


def test_stopped_run_resumes_exactly(tmp_path):
  cfg = _tiny(a2c_catch.get_config(), num_updates=40, num_seeds=2)
  runtime.enable_executable_cache(str(tmp_path / 'cache'), enabled=True)
  try:
    whole = training.train(cfg, '', verbose=False)
    run = str(tmp_path / 'run')
    first = training.train(cfg, run, verbose=False, resume=True,
                           stop=stopping.StopAfterRows(f'{run}/returns.csv', 2))
    # Another config in the same folder is refused before compiling, naming
    # the field, and the checkpoint is kept.
    other = _tiny(a2c_catch.get_config(), num_updates=40, num_seeds=2,
                  **{'optimizer.learning_rate': 3e-3})
    with pytest.raises(ValueError, match='optimizer.learning_rate: '
                       'checkpoint has 0.001'):
      training.train(other, run, verbose=False, resume=True)
    rest = training.train(cfg, run, verbose=False, resume=True)
    again = training.train(cfg, run, verbose=False, resume=True)  # finished
  finally:
    runtime.enable_executable_cache('')
  assert first['stopped_early'] and not rest['stopped_early']
  assert first['returns'].shape == (2, 2)
  np.testing.assert_array_equal(first['returns'], whole['returns'][:2])
  # The resumed run continues the agents, their optimizer states, envs and
  # keys: the same curve as the run that never stopped, to the bit.
  np.testing.assert_array_equal(rest['returns'], whole['returns'])
  np.testing.assert_array_equal(rest['final_return'], whole['final_return'])
  np.testing.assert_array_equal(again['returns'], whole['returns'])
  with open(f'{run}/returns.csv') as f:
    assert len(f.read().splitlines()) == 1 + 4  # no row written twice
  with pytest.raises(ValueError, match='resume: needs a workdir'):
    training.train(cfg, '', verbose=False, resume=True)
