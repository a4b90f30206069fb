"""Gradient statistics and the identity fit: hand values, recording windows,
processed beats raw input, the launcher's outputs and its field errors."""

import csv
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from launchers.studies.lib import grad_probe
from launchers.studies.configs import gradients as grad_stats_config
from launchers.studies.lib import gradient_study as launcher
from launchers.studies.lib import grad_stats
from launchers.studies.lib import identity_fit

# Nonzero magnitudes 1e-8, 1e-6, 1e-4, 1e-2, 1: log10 = -8, -6, -4, -2, 0.
HAND = np.array([0., 1e-8, -1e-6, 1e-4, -1e-2, 1.])


def test_spread_stats_hand_values():
  s = grad_stats.spread_stats(HAND)
  # Linear-interpolated percentiles of [-8, -6, -4, -2, 0]: position
  # q / 100 * 4, so p1 = -8 + 0.04 * 2 = -7.92 and p99 = -0.08.
  assert s['n'] == 6
  np.testing.assert_allclose(
      [s['p1'], s['p5'], s['p25'], s['p50'], s['p75'], s['p95'], s['p99']],
      [-7.92, -7.6, -6., -4., -2., -0.4, -0.08], atol=1e-9)
  np.testing.assert_allclose(s['spread_1_99'], 7.84, atol=1e-9)
  np.testing.assert_allclose(s['spread_5_95'], 7.2, atol=1e-9)
  assert (s['log10_min'], s['log10_max']) == (-8., 0.)
  assert s['frac_zero'] == pytest.approx(1 / 6)
  # Zeros count as small; the thresholds are strict (1e-8 is not < 1e-8).
  assert s['frac_below_1e-08'] == pytest.approx(1 / 6)
  assert s['frac_below_1e-06'] == pytest.approx(2 / 6)
  assert s['frac_below_1e-04'] == pytest.approx(3 / 6)
  np.testing.assert_allclose(s['mean_abs'], np.mean(np.abs(HAND)))


def test_spread_stats_rejects_empty_zero_and_nonfinite():
  with pytest.raises(ValueError, match='no gradient'):
    grad_stats.spread_stats(np.array([]))
  with pytest.raises(ValueError, match='exactly zero'):
    grad_stats.spread_stats(np.zeros(4))
  with pytest.raises(ValueError, match='non-finite'):
    grad_stats.spread_stats(np.array([1., np.nan]))


def test_wasserstein_decades():
  g = np.random.default_rng(0).standard_normal(1000) * 1e-3
  assert grad_stats.wasserstein_decades(g, g) == pytest.approx(0., abs=1e-12)
  # A pure rescaling by 100 moves every quantile by 2 decades.
  assert grad_stats.wasserstein_decades(g, 100. * g) == pytest.approx(2.)
  # Zeros are not magnitudes: adding some does not change the distance.
  assert grad_stats.wasserstein_decades(
      np.concatenate([g, np.zeros(50)]), 100. * g) == pytest.approx(2.)


def _counter_learner():
  """A fake learner: its 'gradient' at update i is [i, i, i]."""
  def init(key):
    del key
    return jnp.zeros((), jnp.int32)

  def step(i):
    return i + 1, jnp.full((3,), i, jnp.float32), {'count': jnp.ones(())}

  return grad_probe.Learner(init, step, 3)


def test_collect_records_the_right_updates():
  grads, metrics = jax.jit(lambda k: grad_probe.collect(
      _counter_learner(), k, (0, 5, 9), 2))(jax.random.PRNGKey(0))
  assert grads.shape == (3, 2, 3)
  np.testing.assert_array_equal(np.asarray(grads)[:, :, 0],
                                [[0, 1], [5, 6], [9, 10]])
  np.testing.assert_array_equal(metrics['count'], [2., 2., 2.])


def test_check_starts_names_the_field():
  assert grad_probe.check_starts((0, 4), 2, 10) == (0, 4)
  with pytest.raises(ValueError, match='^stage_fractions: .*overlap'):
    grad_probe.check_starts((0, 1), 2, 10, 'stage_fractions')
  with pytest.raises(ValueError, match='^starts: .*exceeds num_updates'):
    grad_probe.check_starts((0, 9), 2, 10)
  with pytest.raises(ValueError, match='^window:'):
    grad_probe.check_starts((0,), 0, 10)


def _synthetic_gradients(n, steps, seed):
  """Sequences whose magnitudes span 8 decades (1e-9 .. 1e-1), random sign."""
  rng = np.random.default_rng(seed)
  mag = 10. ** rng.uniform(-9., -1., size=(n, steps))
  return (mag * rng.choice([-1., 1.], size=(n, steps))).astype(np.float32)


def test_processed_input_beats_raw_on_many_decades():
  train = _synthetic_gradients(4096, 3, 0)
  test = _synthetic_gradients(1024, 3, 1)
  scores = {}
  for pre in ('identity', 'log_sign'):
    conf = identity_fit.IdentityFitConfig(
        preprocessor=pre, head='sign_exp', loss='log_mse', num_steps=300,
        batch_size=256, learning_rate=1e-2)
    params, losses = identity_fit.fit(conf, train, jax.random.PRNGKey(0))
    assert np.all(np.isfinite(losses))
    scores[pre] = identity_fit.metrics(
        identity_fit.predict(conf, params, test), test)
  raw, processed = scores['identity'], scores['log_sign']
  # Raw input cannot tell 1e-9 from 1e-8 (both ~0 to the GRU): its best
  # guess is one typical magnitude, so most coordinates are far off.
  assert raw['median_rel_err'] > 0.9 and raw['frac_within'] < 0.1
  assert processed['median_rel_err'] < 0.3, processed
  assert processed['frac_within'] > raw['frac_within'] + 0.2
  # The sign_exp head copies the sign of g.
  assert raw['frac_sign'] == processed['frac_sign'] == 1.


def test_identity_metrics_hand_values():
  g = np.array([1., -2., 0., 1e-6])
  g_hat = np.array([1.05, 2., 5., 2e-6])  # 5% off, wrong sign, masked, 100%
  m = identity_fit.metrics(g_hat, g)
  assert m['n'] == 3
  np.testing.assert_allclose(m['mean_rel_err'], (0.05 + 2. + 1.) / 3)
  np.testing.assert_allclose(m['median_rel_err'], 1.)
  assert m['frac_within'] == pytest.approx(1 / 3)
  assert m['frac_sign'] == pytest.approx(2 / 3)
  # Split at 1e-5: the small one (1e-6) is 100% off; of 1 and -2, one is in.
  assert m['frac_within_small'] == 0.
  assert m['frac_within_large'] == pytest.approx(1 / 2)


def test_identity_config_errors_name_the_field():
  with pytest.raises(ValueError, match='^head:'):
    identity_fit.IdentityFitConfig(head='softplus')
  with pytest.raises(ValueError, match='^preprocessor:'):
    identity_fit.IdentityFitConfig(preprocessor='andrychowicz')
  with pytest.raises(ValueError, match='^num_steps:'):
    identity_fit.IdentityFitConfig(num_steps=0)


def tiny_config():
  cfg = grad_stats_config.get_config()
  cfg.sources = 'regression'
  cfg.num_seeds = 2
  cfg.num_updates = 12
  cfg.window = 3
  cfg.stage_fractions = '0,1'
  cfg.regression.student_hidden = '8'
  cfg.regression.teacher_hidden = '4'
  cfg.regression.input_dim = 4
  cfg.regression.batch_size = 8
  cfg.identity.sources = 'regression'
  cfg.identity.variants = 'sign_exp:log_mse'
  cfg.identity.preprocessors = 'log_sign'  # one compile; raw vs processed
                                           # is tested on synthetic data
  cfg.identity.num_seeds = 1
  cfg.identity.num_steps = 5
  cfg.identity.batch_size = 16
  cfg.identity.plot_points = 50
  return cfg


def _header(path):
  with open(path) as f:
    return next(csv.reader(f))


def test_launcher_writes_tables_and_plots(tmp_path):
  cfg = tiny_config()
  result = launcher.run(cfg, str(tmp_path))
  for name in ('grad_stats.csv', 'grad_stats_seeds.csv', 'grad_hist.png',
               'grad_spread.png', 'identity.csv', 'identity_summary.csv',
               'identity.png', 'summary.json'):
    assert os.path.getsize(tmp_path / name) > 0, name
  header = _header(tmp_path / 'grad_stats.csv')
  for column in ('source', 'update', 'train_mse', 'p1', 'p50', 'p99',
                 'spread_1_99', 'spread_1_99_std', 'frac_zero',
                 'frac_below_1e-06', 'w1_from_first', 'w1_within'):
    assert column in header, column
  with open(tmp_path / 'grad_stats_seeds.csv') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 2 * 2  # seeds x stages
  # The summary row is the mean over seeds of the per-seed rows.
  with open(tmp_path / 'grad_stats.csv') as f:
    first = next(csv.DictReader(f))
  np.testing.assert_allclose(
      float(first['spread_1_99']),
      np.mean([float(r['spread_1_99']) for r in rows if r['stage'] == '0']))
  for column in ('variant', 'preprocessor', 'seed', 'eval_source',
                 'mean_rel_err', 'median_rel_err', 'frac_within',
                 'frac_sign', 'frac_within_small', 'frac_within_large'):
    assert column in _header(tmp_path / 'identity.csv'), column
  with open(tmp_path / 'summary.json') as f:
    summary = json.load(f)
  assert summary['stage_updates'] == [0, 9]
  pres = {r['preprocessor'] for r in result['identity']}
  assert pres == {'-', 'log_sign'}  # '-': the predict-zero baseline row


@pytest.mark.parametrize('field, value, match', [
    ('sources', 'regression,nowhere', '^sources: unknown source'),
    ('sources', 'ant', '^sources: .*continuous'),
    ('stage_fractions', '0,0.5,0.4', '^stage_fractions:'),
    ('stage_fractions', '0,0.1', '^stage_fractions: .*overlap'),
    ('num_seeds', 0, '^num_seeds:'),
    ('learning_rate', 0., '^learning_rate:'),
    ('regression.student_hidden', '8,x', '^regression.student_hidden:'),
    ('regression.noise_std', -1., '^regression.noise_std:'),
    ('identity.variants', 'sign_exp:l1', '^identity.variants:'),
    ('identity.preprocessors', 'identity,raw', '^identity.preprocessors:'),
    ('identity.hidden_size', 0, '^identity.hidden_size:'),
    ('identity.sources', 'catch', '^identity.sources:'),
    ('identity.heldout_fraction', 1., '^identity.heldout_fraction:'),
    ('identity.magnitude_split', 0., '^identity.magnitude_split:'),
])
def test_bad_fields_are_named(field, value, match):
  cfg = tiny_config()
  node = cfg
  *parents, leaf = field.split('.')
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ValueError, match=match):
    launcher.validate(cfg)


def test_bad_a2c_field_is_named():
  cfg = tiny_config()
  cfg.sources = 'catch'
  cfg.identity.sources = ''
  cfg.a2c.num_envs = 0
  with pytest.raises(ValueError, match='^a2c.num_envs:'):
    launcher.validate(cfg)
