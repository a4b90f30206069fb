"""launchers/common.make_agent: one config -> agent factory for every launcher."""

import os

import jax
import numpy as np
import pytest

from configs import a2c_catch
from configs import evaluate as evaluate_config
from configs import meta_catch
from configs import meta_ppo_brax
from configs import ppo_brax
from launchers.lib import common
from launchers.lib import comparison
from launchers.lib import meta_training
from launchers.lib import training


def _tiny_meta_ppo(env_name='inverted_pendulum'):
  cfg = meta_ppo_brax.get_config(env_name)
  cfg.tasks.num_agents = 1
  cfg.ppo.num_envs, cfg.ppo.unroll_len = 4, 3
  cfg.ppo.policy_hidden, cfg.ppo.value_hidden = (4,), (4,)
  return cfg


def test_train_evaluate_and_meta_training_build_through_it(monkeypatch):
  calls = []
  make_agent = common.make_agent

  def spy(cfg, env_name=None, *args, **kwargs):
    calls.append(env_name or cfg.env_name)
    return make_agent(cfg, env_name, *args, **kwargs)

  monkeypatch.setattr(common, 'make_agent', spy)
  training.validate(a2c_catch.get_config())
  assert calls == ['catch']
  comparison.with_optimizer(comparison.env_config('cartpole'), 'adam:1e-3')
  assert calls == ['catch', 'cartpole']
  meta = meta_catch.get_config()
  meta.tasks.env_names = ('catch', 'small_dense_short')
  meta.tasks.learning_rates = (1e-3, 3e-3)
  meta.tasks.reward_scales = (1., 100.)
  agents = meta_training.validate(meta)
  assert calls == ['catch', 'cartpole', 'catch', 'small_dense_short']
  # Each task's agent carries that task's reward scale.
  assert [a.config.reward_scale for a in agents] == [1., 100.]


def test_env_options_reach_the_meta_training_tasks():
  cfg = _tiny_meta_ppo()
  cfg.episode_length = 1  # every step ends an episode
  cfg.reset_mode = 'sample'
  agents = meta_training.validate(cfg)
  env = agents[0].env.inner  # the Brax env inside the episode-return wrapper
  assert (env.episode_length, env.reset_mode) == (1, 'sample')
  # Default config: Brax's own settings, as before these fields existed.
  default = meta_training.validate(_tiny_meta_ppo())[0].env.inner
  assert (default.episode_length, default.reset_mode) == (1000, 'first')
  # What meta-training runs: the task's inner agent. With one-step episodes
  # each of the 4 envs x 3 steps ends an episode worth inverted_pendulum's
  # reward of 1 per step.
  tasks, _, _ = meta_training.build(cfg, agents)
  inner = tasks[0].agent
  key = jax.random.PRNGKey(0)
  _, _, metrics = jax.jit(inner.rollout)(
      inner.init_params(key), inner.init_actor(key), key)
  assert int(metrics['episodes']) == 4 * 3
  assert float(metrics['return_sum']) == 4 * 3 * 1.


@pytest.mark.parametrize('field,value,match', [
    ('reset_mode', 'restart',
     r"reset_mode: unknown 'restart'; allowed: \['first', 'sample'\]"),
    ('episode_length', -3, 'episode_length: must be 0 .* or an int >= 1'),
    ('tasks.env_names', ('walker3d',),
     "tasks.env_names: unknown environment 'walker3d'"),
    ('agent', 'dqn', "agent: unknown agent 'dqn'"),
])
def test_bad_meta_env_options_are_named_before_compiling(
    tmp_path, field, value, match):
  cfg = _tiny_meta_ppo()
  section, _, name = field.rpartition('.')
  (cfg[section] if section else cfg)[name] = value
  with pytest.raises(ValueError, match=match):
    meta_training.meta_train(cfg, str(tmp_path), verbose=False)
  assert not os.path.exists(tmp_path / 'checkpoints')


def test_env_options_are_checked_for_every_env_family():
  cfg = ppo_brax.get_config('cartpole,cpu')  # episode_length 1000
  with pytest.raises(ValueError, match='episode_length: cartpole has a fixed '
                     r'episode length, so it must be 0; got 1000'):
    training.validate(cfg)
  cfg.episode_length = 0
  cfg.reset_mode = 'sample'  # Brax only: other envs ignore it
  training.validate(cfg)
  cfg.reset_mode = 'fresh'
  with pytest.raises(ValueError, match="reset_mode: unknown 'fresh'"):
    training.validate(cfg)
  # evaluate.py's reset_mode override reaches its Brax runs too.
  ev = evaluate_config.get_config()
  ev.envs, ev.optimizers, ev.reset_mode = 'inverted_pendulum', 'adam:1e-3', 'x'
  with pytest.raises(ValueError, match="reset_mode: unknown 'x'"):
    comparison.evaluate(ev, '')


def _tiny_mix():
  from configs import meta_mix  # pylint: disable=g-import-not-at-top
  cfg = meta_mix.get_config('')  # no Brax task: catch, 3 gridworlds, asterix
  keep = ('catch', 'asterix_minatar')
  idx = [i for i, n in enumerate(cfg.tasks.env_names) if n in keep]
  for f in ('env_names', 'agents', 'learning_rates', 'reward_scales',
            'reset_intervals'):
    cfg.tasks[f] = tuple(cfg.tasks[f][i] for i in idx)
  cfg.tasks.num_agents = 2
  cfg.a2c.rollout_len = 4
  cfg.network.hidden_sizes = (8,)
  cfg.ppo.num_envs, cfg.ppo.unroll_len = 4, 3
  cfg.ppo.policy_hidden, cfg.ppo.value_hidden = (4,), (4,)
  cfg.optimizer.hidden_size, cfg.optimizer.mlp_dims = 4, (4,)
  cfg.num_meta_steps, cfg.log_every, cfg.save_every = 2, 1, 2
  return cfg


def test_a_task_mix_of_a2c_and_ppo_agents_meta_trains_together(tmp_path):
  cfg = _tiny_mix()
  assert tuple(cfg.tasks.agents) == ('a2c', 'ppo')
  agents = meta_training.validate(cfg)
  assert [type(a).__name__ for a in agents] == ['A2C', 'PPO']
  # Env steps: 2 agents x (K + 1) rollouts x (A2C 1 x 4 + PPO 4 x 3).
  assert meta_training.env_steps_per_iteration(cfg) == 2 * 5 * (4 + 12)
  summary = meta_training.meta_train(cfg, str(tmp_path), verbose=False)
  assert summary['meta_step'] == 2 and summary['skipped_meta_updates'] == 0
  with open(tmp_path / 'metrics.csv') as f:
    header = f.readline().strip().split(',')
    rows = [dict(zip(header, line.strip().split(','))) for line in f]
  # Both tasks contribute a finite meta-loss and meta-gradient (the mix
  # weighs the tasks' meta-gradients at unit norm and logs their norms);
  # PPO logs its own loss terms.
  assert cfg.meta.task_weighting == 'unit_norm'
  for row in rows:
    for task in ('catch', 'asterix_minatar'):
      assert np.isfinite(float(row[f'meta_loss/{task}'])), row
      assert float(row[f'meta_grad_norm/{task}']) > 0, row
  assert 'value_loss/asterix_minatar' in header


@pytest.mark.parametrize('field,value,match', [
    ('tasks.agents', ('a2c',), r'tasks.agents: 1 values for 2 tasks'),
    ('tasks.agents', ('a2c', 'dqn'), r"tasks.agents: unknown agent 'dqn'"),
    ('meta.task_weighting', 'sum',
     r"meta.task_weighting: unknown 'sum'; allowed: \['mean', 'unit_norm'\]"),
])
def test_bad_task_mix_fields_are_named(field, value, match):
  cfg = _tiny_mix()
  section, name = field.split('.')
  cfg[section][name] = value
  with pytest.raises(ValueError, match=match):
    meta_training.validate(cfg)
