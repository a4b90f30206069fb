"""Optim4RL learning corrections of Adam's moments (`CellConfig.adam_residual`):
the untrained cell is Adam, the paths scale `m` and `v`, and the option is
checked like every cell field."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
from lopt import cells
from lopt.cell_runtime import dispatch
from lopt.cell_runtime import fused

TINY = dict(hidden_size=2, mlp_dims=(4,))
ADAM = dict(grad_ema=0.9, second_moment=0.999, adam_residual=True)


@functools.lru_cache(maxsize=None)
def _lo(lifetime: bool = False):
  extra = (dict(progress_input=True, momentum_decays=(0.5,)) if lifetime
           else {})
  return lopt.learned_optimizer(learning_rate=3e-2, total_steps=20,
                                **TINY, **ADAM, **extra)


def _params():
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  return {'w': jax.random.normal(k1, (3, 4)), 'b': jax.random.normal(k2, (4,))}


def _updates(opt, grads):
  state = opt.init(grads[0])
  out = []
  for g in grads:
    u, state = opt.update(g, state)
    out.append(u)
  return out


def _grads(n=6):
  keys = jax.random.split(jax.random.PRNGKey(1), n)
  shapes = jax.tree.map(jnp.shape, _params())
  return [jax.tree.map(lambda s, k=k: jax.random.normal(k, s) * 1e-2, shapes)
          for k in keys]


@pytest.mark.parametrize('lifetime', [False, True])
def test_untrained_cell_is_adam(lifetime):
  # The last layers start at zero, so both corrections are exp(0) = 1 and
  # the direction is m_hat / sqrt(v_hat + eps): optax's Adam with eps
  # inside the root, whatever the other inputs say.
  lo = _lo(lifetime)
  mp = lo.init(jax.random.PRNGKey(3))
  grads = _grads()
  ours = _updates(lo.opt_fn(mp), grads)
  adam = _updates(optax.adam(3e-2, b1=0.9, b2=0.999, eps=0.,
                             eps_root=lo.config.update_eps), grads)
  for a, b in zip(ours, adam):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-9)


def test_the_paths_scale_adams_moments():
  # With the sign path's output bias at log 2 and the magnitude path's at
  # log 4, m doubles and v quadruples: the step is Adam's times 2 / 2 = 1;
  # with only the sign path's, it is Adam's times 2.
  lo = _lo()
  mp = lo.init(jax.random.PRNGKey(3))
  grads = _grads(3)
  adam = _updates(lo.opt_fn(mp), grads)
  def shifted(sign, mag):
    return {**mp,
            'sign_path/out': {**mp['sign_path/out'],
                              'b': mp['sign_path/out']['b'] + np.log(sign)},
            'magnitude_path/out': {
                **mp['magnitude_path/out'],
                'b': mp['magnitude_path/out']['b'] + np.log(mag)}}
  both = _updates(lo.opt_fn(shifted(2., 4.)), grads)
  sign_only = _updates(lo.opt_fn(shifted(2., 1.)), grads)
  for a, b, c in zip(adam, both, sign_only):
    for x, y, z in zip(*map(jax.tree.leaves, (a, b, c))):
      np.testing.assert_allclose(y, x, rtol=1e-5)
      np.testing.assert_allclose(z, 2. * x, rtol=1e-5)
  # cells.rescale finds the residual cell's last layer too.
  scaled = _updates(lo.opt_fn(cells.rescale(lo.config, mp, 2.5)), grads)
  for a, b in zip(adam, scaled):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(y, 2.5 * x, rtol=1e-5)


@pytest.mark.parametrize('lifetime', [False, True])
def test_contract(lifetime):
  lo = _lo(lifetime)
  assert lo.implementation == 'haiku'  # 'auto' skips the kernel for it
  lopt.testing.check_learned_optimizer(lo, zero_grad_moves=False)


def test_meta_gradient_reaches_every_layer():
  # From the zero last layer the hidden layers' gradient is 0 at first;
  # once the last layer has moved every weight matters.
  lo = _lo()
  mp = lo.init(jax.random.PRNGKey(3))
  mp = jax.tree.map(lambda x: x + 0.1, mp)
  g = jnp.array([0.3, -2e-2, 1e-4])

  def loss(mp):  # two updates: the GRUs' recurrent weights act on the 2nd
    opt = lo.opt_fn(mp)
    u, state = opt.update(g, opt.init(g))
    u, _ = opt.update(0.5 * g, state)
    return jnp.sum(u ** 2)

  grads = jax.grad(loss)(mp)
  for name, layer in grads.items():
    for leaf in jax.tree.leaves(layer):
      assert np.any(np.asarray(leaf) != 0), name


def test_fused_kernel_refuses_it():
  config = cells.CellConfig(adam_residual=True)
  assert not fused.supports(config)
  assert dispatch.resolve('auto', config) == 'haiku'
  with pytest.raises(ValueError, match="adam_residual: implementation 'fused'"):
    lopt.learned_optimizer(config=config, implementation='fused')


@pytest.mark.parametrize('fields,match', [
    (dict(adam_residual=1), r'adam_residual: must be a bool'),
    (dict(adam_residual='yes'), r'adam_residual: must be a bool'),
    (dict(cell='l2lgd2', adam_residual=True),
     r"adam_residual: only the optim4rl cell"),
])
def test_bad_values_fail_early_naming_the_field(fields, match):
  with pytest.raises(ValueError, match=match):
    cells.CellConfig(**fields)


def test_serialization_round_trip(tmp_path):
  lo = _lo()
  mp = jax.tree.map(lambda x: x + 0.05, lo.init(jax.random.PRNGKey(3)))
  path = lopt.save(str(tmp_path / 'residual.npz'), mp, lo)
  assert lopt.serialization.read_metadata(path)['config']['adam_residual']
  loaded, loaded_mp = lopt.load(path, expected=lo.config)
  grads = _grads(2)
  for a, b in zip(_updates(lo.opt_fn(mp), grads),
                  _updates(loaded.opt_fn(loaded_mp), grads)):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(x, y)
  with pytest.raises(ValueError, match='adam_residual'):
    lopt.load(path, expected=cells.CellConfig(
        **TINY, grad_ema=0.9, second_moment=0.999))


def test_adam_start_is_refused_with_it():
  from configs import meta_es  # pylint: disable=g-import-not-at-top
  from launchers.lib import meta_training  # pylint: disable=g-import-not-at-top
  cfg = meta_es.get_config('catch,residual')
  assert cfg.optimizer.adam_residual and not cfg.meta.adam_start
  cfg.meta.adam_start = True
  with pytest.raises(ValueError, match='meta.adam_start: optimizer.adam_'):
    meta_training.start_meta_params(cfg)


# Never meta-trained or chosen on (the standard suite's held-out tasks).
HELD_OUT = {'breakout_minatar', 'freeway_minatar', 'space_invaders_minatar',
            'cartpole', 'acrobot', 'hopper', 'walker2d', 'inverted_pendulum',
            'halfcheetah', 'humanoid'}


def test_horizon_preset():
  # configs/meta_horizon.py: K inner updates from exactly Adam, agents
  # reset after about the ES runs' 200 updates, no held-out task; a bad
  # argument is named before anything is built.
  from configs import meta_horizon  # pylint: disable=g-import-not-at-top
  from launchers.lib import meta_training  # pylint: disable=g-import-not-at-top
  for arg, k in (('16', 16), ('32,lifetime', 32)):
    cfg = meta_horizon.get_config(arg)
    assert cfg.meta.num_inner_steps == k and cfg.meta.remat
    assert abs(cfg.meta.reset_interval * k - 200) <= k / 2
    assert cfg.optimizer.adam_residual and not cfg.meta.adam_start
    assert cfg.optimizer.progress_input == ('lifetime' in arg)
    assert not set(cfg.tasks.env_names) & HELD_OUT
    meta_training.validate(cfg, check_devices=False)
    assert meta_training.start_meta_params(cfg) is None  # the init: Adam
  for bad in ('0', 'k', '16,fast'):
    with pytest.raises(ValueError, match='configs/meta_horizon.py'):
      meta_horizon.get_config(bad)
