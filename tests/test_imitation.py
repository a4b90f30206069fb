"""lopt.imitation: Optim4RL's cell set in closed form to Adam's direction."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
from lopt import cells
from lopt import imitation

ADAM_CELL = dict(grad_ema=0.9, second_moment=0.999)


def test_adam_start_is_adam_in_an_optax_loop():
  # The default cell with Adam's moments as inputs, set by adam_start, gives
  # optax's Adam updates (eps 0) on gradients over six decades, over steps;
  # the untrained cell does not. (Below ~1e-8, v meets the cell's
  # update_eps of 1e-18, as Adam's v meets its eps.)
  lo = lopt.learned_optimizer(learning_rate=1e-2, **ADAM_CELL)
  init = lo.init(jax.random.PRNGKey(0))
  start = imitation.adam_start(lo.config, init)
  params = {'w': jnp.zeros((4, 6)), 'b': jnp.zeros(6)}
  scales = {'w': jnp.logspace(-7, -1, 24).reshape(4, 6),
            'b': jnp.logspace(-6, 0, 6)}
  adam = optax.adam(1e-2, b1=0.9, b2=0.999, eps=0.)
  mine, untrained = lo.opt_fn(start), lo.opt_fn(init)
  states = [o.init(params) for o in (adam, mine, untrained)]

  @jax.jit
  def step(states, key):
    g = jax.tree.map(lambda s: s * (0.3 + jax.random.normal(key, s.shape)),
                     scales)
    out = [o.update(g, st) for o, st in zip((adam, mine, untrained), states)]
    return [st for _, st in out], [u for u, _ in out]

  errors = []
  for t in range(60):
    states, (u_adam, u_mine, u_init) = step(states, jax.random.PRNGKey(t))
    ratio = lambda u: np.concatenate([np.ravel(a / b) for a, b in zip(
        jax.tree.leaves(u), jax.tree.leaves(u_adam))])
    errors.append((np.abs(np.log(ratio(u_mine))).max(),
                   np.median(np.abs(np.log(np.abs(ratio(u_init)))))))
    assert np.all(ratio(u_mine) > 0), t  # the same sign everywhere
  errors = np.asarray(errors)
  assert errors[:, 0].max() < 0.05, errors[:, 0].max()  # within 5%
  assert errors[:, 1].mean() > 0.3, errors[:, 1].mean()


def test_adam_start_on_synthetic_streams_and_its_shapes():
  # On fresh streams (longer than any fit, noise to clean signal, a change
  # of scale and sign) nearly every step is within 10% of Adam's; for a
  # smaller cell too; the untrained cell is far off.
  for kwargs, median in ((dict(), 0.01), (dict(hidden_size=4, mlp_dims=(8,)),
                                          0.03)):
    config = cells.CellConfig(**ADAM_CELL, **kwargs)
    init = lopt.learned_optimizer(config=config).init(jax.random.PRNGKey(1))
    got = imitation.evaluate(config, imitation.adam_start(config, init),
                             jax.random.PRNGKey(2), num_coords=1024,
                             length=128)
    assert got['median_log_error'] < median, (kwargs, got)
    assert got['within_10_percent'] > 0.99, (kwargs, got)
    if not kwargs:
      far = imitation.evaluate(config, init, jax.random.PRNGKey(2),
                               num_coords=1024, length=128)
      assert far['median_log_error'] > 0.3 and far[
          'within_10_percent'] < 0.3, far
  g = imitation.synthetic_streams(jax.random.PRNGKey(3), 2000, 50)
  assert g.shape == (50, 2000) and bool(jnp.all(jnp.isfinite(g)))
  decades = np.log10(np.abs(np.asarray(g)) + 1e-30)
  assert decades.min() < -8.5 and decades.max() > -1.5


@pytest.mark.parametrize('kwargs,match', [
    (dict(cell='l2lgd2'), 'cell: only optim4rl'),
    (dict(preprocessor='identity'), "preprocessor: adam_start needs 'log_sign'"),
    (dict(activation='tanh'), "activation: adam_start needs a 'relu' MLP"),
])
def test_adam_start_refuses_cells_it_cannot_set(kwargs, match):
  config = cells.CellConfig(**kwargs)
  init = lopt.learned_optimizer(config=config).init(jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match=match):
    imitation.adam_start(config, init)
