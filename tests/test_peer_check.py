"""launchers/lib/peer.py (peer_check.py's job): Brax mapping, shim, a run."""

import csv

import jax
import numpy as np
import pytest

from configs import peer_check as peer_config
from launchers.lib import peer


def _tiny(env='inverted_pendulum'):
  cfg = peer_config.get_config(env)
  cfg.ppo.num_envs = 8
  cfg.ppo.unroll_len = 5
  cfg.ppo.policy_hidden = (8,)
  cfg.ppo.value_hidden = (8,)
  cfg.num_updates = 6
  cfg.episode_length = 50
  cfg.peer.num_chunks = 3
  cfg.peer.num_seeds = 1
  cfg.peer.num_eval_envs = 4
  return cfg


def test_brax_kwargs_match_our_update():
  cfg = peer_config.get_config('ant')
  kw = peer.brax_kwargs(cfg)
  c = cfg.ppo
  # One Brax training step = one of our updates: same env steps, same
  # minibatch count and size, same epochs.
  assert kw['batch_size'] * kw['num_minibatches'] == c.num_envs
  assert (kw['batch_size'] * kw['num_minibatches'] * kw['unroll_length'] ==
          c.num_envs * c.unroll_len)
  assert kw['num_updates_per_batch'] == c.num_epochs
  assert kw['num_timesteps'] == 160 * 64 * 20
  assert kw['num_evals'] == cfg.peer.num_chunks + 1
  assert (kw['discounting'], kw['reward_scaling'], kw['clipping_epsilon'],
          kw['entropy_cost'], kw['learning_rate'], kw['max_grad_norm']) == (
              0.97, 10., 0.3, 1e-2, 3e-4, 1.0)
  nets = kw['network_factory'].keywords
  assert nets['policy_hidden_layer_sizes'] == tuple(c.policy_hidden)
  assert nets['value_hidden_layer_sizes'] == tuple(c.value_hidden)


def test_shim_replicates_like_the_removed_function(monkeypatch):
  monkeypatch.delattr(jax, 'device_put_replicated', raising=False)
  assert peer.install_device_put_replicated_shim()
  tree = {'w': np.arange(6.).reshape(2, 3), 'step': np.int32(4)}
  out = jax.device_put_replicated(tree, jax.local_devices()[:1])
  np.testing.assert_array_equal(out['w'], tree['w'][None])
  assert out['step'].shape == (1,) and int(out['step'][0]) == 4
  # Installed once: a second call leaves the function alone.
  assert not peer.install_device_put_replicated_shim()


@pytest.mark.parametrize('field,value,match', [
    ('env_name', 'catch', 'env_name: the peer check runs a Brax task'),
    ('optimizer.name', 'rmsprop', 'optimizer.name: .*allowed'),
    ('ppo.num_minibatches', 3, 'ppo.num_minibatches: .*must divide'),
    ('peer.num_warmup_chunks', 3, r'peer.num_warmup_chunks: must be in'),
    ('peer.num_chunks', 4, 'peer.num_chunks: 4 must divide num_updates'),
    ('reset_mode', 'sample', "reset_mode: Brax's trainer restarts"),
])
def test_bad_fields_fail_before_building(field, value, match):
  cfg = _tiny()
  section, _, name = field.rpartition('.')
  (cfg[section] if section else cfg)[name] = value
  with pytest.raises(ValueError, match=match):
    peer.validate(cfg)


def test_both_sides_train_the_same_budget(monkeypatch, tmp_path):
  monkeypatch.delattr(jax, 'device_put_replicated', raising=False)
  cfg = _tiny()
  rows = peer.peer_check(cfg, str(tmp_path))
  ours, brax = rows
  assert (ours['implementation'], brax['implementation']) == ('ours', 'brax')
  assert ours['env_steps'] == brax['env_steps'] == 6 * 8 * 5
  for r in rows:
    assert r['env_steps_per_second'] > 0
    # Inverted pendulum pays 1 per step while the pole is up: every policy
    # scores at least 1 and at most the episode length.
    assert 1. <= r['final_return_mean'] <= 50.
  assert isinstance(ours['return_within_brax_seed_range'], bool)
  with open(tmp_path / 'results.csv') as f:
    runs = list(csv.DictReader(f))
  assert [r['implementation'] for r in runs] == ['ours', 'brax']
  # Three timed chunks each, the Brax ones from the trainer's own epochs.
  assert all(len(r['chunk_seconds'].split()) == 3 for r in runs)
  with open(tmp_path / 'curves.csv') as f:
    curves = list(csv.DictReader(f))
  assert [int(r['env_steps']) for r in curves] == [80, 160, 240]
  assert (tmp_path / 'returns.png').stat().st_size > 0
  assert 'Throughput ours / Brax' in (tmp_path / 'results.md').read_text()
