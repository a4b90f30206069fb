"""launchers/studies/variant.py: another optimizer's meta-params with a momentum
input, written to a file that loads like any meta_train.py output."""

import os

import jax
import numpy as np
import optax
import pytest

import lopt
from launchers.studies import variant


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_untrained_variant_has_the_initial_meta_params_and_the_ema(tmp_path):
  out = str(tmp_path / 'init_momentum.npz')
  assert variant.write_variant('untrained', out, 0.9, seed=3) == out
  lo, meta_params = lopt.load(out)
  ref = lopt.learned_optimizer(learning_rate=1e-3)
  assert lo.config.grad_ema == pytest.approx(0.9)
  assert lo.learning_rate == pytest.approx(1e-3)
  for a, b in zip(_leaves(meta_params),
                  _leaves(ref.init(jax.random.PRNGKey(3)))):
    np.testing.assert_array_equal(a, b)
  meta = lopt.serialization.read_metadata(out)['extra']
  assert meta['variant_of'] == 'untrained' and meta['seed'] == 3
  # Its updates are the untrained cell's, fed the debiased EMA of g.
  params = {'w': np.zeros(5, np.float32)}
  grads = [{'w': np.asarray(np.random.RandomState(i).randn(5), np.float32)}
           for i in range(4)]
  plain = optax.chain(optax.ema(0.9, debias=True),
                      ref.opt_fn(ref.init(jax.random.PRNGKey(3))))
  mine = lo.opt_fn(meta_params)
  s_plain, s_mine = plain.init(params), mine.init(params)
  for g in grads:
    u_plain, s_plain = plain.update(g, s_plain, params)
    u_mine, s_mine = mine.update(g, s_mine, params)
    np.testing.assert_allclose(u_mine['w'], u_plain['w'], rtol=1e-6,
                               atol=1e-9)


def test_shipped_variant_keeps_meta_params_and_rate(tmp_path):
  out = str(tmp_path / 'ant_ema.npz')
  variant.write_variant('optim4rl_ant_ppo', out, 0.8)
  lo, meta_params = lopt.load(out)
  src, src_params = lopt.pretrained_lib.load('optim4rl_ant_ppo')
  assert lo.config.grad_ema == pytest.approx(0.8)
  assert lo.config.hidden_size == src.config.hidden_size
  assert lo.learning_rate == pytest.approx(src.learning_rate)
  for a, b in zip(_leaves(meta_params), _leaves(src_params)):
    np.testing.assert_array_equal(a, b)


def test_scaled_variant_steps_that_many_times_its_source(tmp_path):
  out = str(tmp_path / 'scaled.npz')
  variant.write_variant('untrained', out, 0.9, scale=2.)
  lo, meta_params = lopt.load(out)
  assert lopt.serialization.read_metadata(out)['extra']['scale'] == 2.
  ref = lopt.learned_optimizer(learning_rate=1e-3, grad_ema=0.9)
  params = {'w': np.zeros(6, np.float32)}
  mine, plain = lo.opt_fn(meta_params), ref.opt_fn(
      ref.init(jax.random.PRNGKey(0)))
  s_mine, s_plain = mine.init(params), plain.init(params)
  for i in range(3):
    g = {'w': np.asarray(np.random.RandomState(i).randn(6), np.float32)}
    u_mine, s_mine = mine.update(g, s_mine, params)
    u_plain, s_plain = plain.update(g, s_plain, params)
    np.testing.assert_allclose(u_mine['w'], 2. * u_plain['w'], rtol=1e-5)
  # unit_rms is kept from the source unless given.
  unit = str(tmp_path / 'unit.npz')
  variant.write_variant(out, unit, 0.9, unit_rms=True)
  assert lopt.load(unit)[0].config.unit_rms
  again = str(tmp_path / 'again.npz')
  variant.write_variant(unit, again, 0.8)
  assert lopt.load(again)[0].config.unit_rms
  assert not lopt.load(out)[0].config.unit_rms


@pytest.mark.parametrize('source,out,ema,kwargs,match', [
    ('nope', 'x.npz', 0.9, {}, "source: unknown optimizer 'nope'"),
    ('untrained', 'x.npz', 1.0, {}, r'grad_ema: must be in \[0, 1\)'),
    ('untrained', 'x.txt', 0.9, {}, 'out: must be a path ending in .npz'),
    ('untrained', 'x.npz', 0.9, {'learning_rate': -1.}, 'learning_rate'),
    ('untrained', 'x.npz', 0.9, {'scale': 0.}, 'scale: must be > 0'),
])
def test_bad_arguments_are_refused_and_nothing_is_written(
    tmp_path, source, out, ema, kwargs, match):
  path = str(tmp_path / out)
  with pytest.raises(ValueError, match=match):
    variant.write_variant(source, path, ema, **kwargs)
  assert not os.listdir(tmp_path)


def test_adam_start_variant_is_written_with_its_match_to_adam(tmp_path):
  out = str(tmp_path / 'adam.npz')
  variant.write_variant('untrained', out, 0.9, second_moment=0.999,
                        adam_start=True)
  lo, meta_params = lopt.load(out)
  assert lo.config.second_moment == pytest.approx(0.999)
  extra = lopt.serialization.read_metadata(out)['extra']
  assert extra['adam_start']['within_10_percent'] > 0.99
  assert "Adam's direction in closed form" in extra['description']
  ref = lopt.imitation.adam_start(lo.config, lopt.learned_optimizer(
      config=lo.config).init(jax.random.PRNGKey(0)))
  for a, b in zip(_leaves(meta_params), _leaves(ref)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match='adam_start: needs second_moment > 0'):
    variant.write_variant('untrained', str(tmp_path / 'no.npz'), 0.9,
                          adam_start=True)
  assert not os.path.exists(tmp_path / 'no.npz')
