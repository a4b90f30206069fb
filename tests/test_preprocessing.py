"""Gradient preprocessors: hand-computed values, edge cases, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt import preprocessing

EDGE = np.array([0., 1e-30, -1e-30, 1e3, -1e3, 0.5, -2., 1e-5], np.float32)


def test_log_sign_hand_values():
  g = jnp.array([1., -1., 0., 2.], jnp.float32)
  out = preprocessing.log_sign(g, eps=1e-8)
  np.testing.assert_allclose(
      out[:, 0], np.log(np.array([1., 1., 0., 2.]) + 1e-8), rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(out[:, 1], [1., -1., 0., 1.])


def test_log_sign_edge_values():
  out = np.asarray(preprocessing.log_sign(jnp.asarray(EDGE), eps=1e-18))
  # g = 0: log(eps); |g| = 1e-30 is below eps, so log(1e-18 + 1e-30).
  np.testing.assert_allclose(out[0, 0], np.log(1e-18), rtol=1e-6)
  np.testing.assert_allclose(out[1, 0], np.log(1e-18), rtol=1e-6)
  np.testing.assert_allclose(out[3, 0], np.log(1e3), rtol=1e-6)
  np.testing.assert_allclose(out[4, 0], np.log(1e3), rtol=1e-6)
  np.testing.assert_allclose(out[7, 0], np.log(1e-5), rtol=1e-5)
  np.testing.assert_array_equal(out[:, 1], [0, 1, -1, 1, -1, 1, -1, 1])


def test_andrychowicz_hand_values():
  p = 10.
  out = np.asarray(preprocessing.andrychowicz(jnp.asarray(EDGE), p=p))
  # |g| >= e^-10 (~4.54e-5): (log|g| / p, sign g).
  np.testing.assert_allclose(out[3], [np.log(1e3) / p, 1.], rtol=1e-6)
  np.testing.assert_allclose(out[4], [np.log(1e3) / p, -1.], rtol=1e-6)
  np.testing.assert_allclose(out[5], [np.log(0.5) / p, 1.], rtol=1e-6)
  np.testing.assert_allclose(out[6], [np.log(2.) / p, -1.], rtol=1e-6)
  # Small: (-1, e^p * g).
  np.testing.assert_allclose(out[0], [-1., 0.])
  np.testing.assert_allclose(out[1], [-1., np.exp(p) * 1e-30], rtol=1e-5)
  np.testing.assert_allclose(out[7], [-1., np.exp(p) * 1e-5], rtol=1e-5)


def test_identity():
  out = preprocessing.identity(jnp.asarray(EDGE))
  assert out.shape == (EDGE.size, 1)
  np.testing.assert_array_equal(out[:, 0], EDGE)


@pytest.mark.parametrize('name', sorted(preprocessing.PREPROCESSORS))
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_finite_for_finite_inputs_and_gradients(name, dtype):
  fn = preprocessing.get_preprocessor(name)
  rng = np.random.default_rng(0)
  g = np.concatenate([EDGE, rng.standard_normal(64) *
                      10. ** rng.uniform(-30, 3, 64)]).astype(np.float32)
  g = jnp.asarray(g, dtype)
  out = fn(g)
  assert out.dtype == jnp.float32
  assert out.shape == g.shape + (preprocessing.NUM_FEATURES[name],)
  assert bool(jnp.all(jnp.isfinite(out)))
  # Differentiable without NaN (the unused branches are guarded).
  grads = jax.grad(lambda x: jnp.sum(fn(x)))(jnp.asarray(g, jnp.float32))
  assert bool(jnp.all(jnp.isfinite(grads)))


def test_shapes_kept_and_jit():
  g = jnp.ones((3, 4, 5))
  out = jax.jit(preprocessing.log_sign)(g)
  assert out.shape == (3, 4, 5, 2)


def test_unknown_name():
  with pytest.raises(ValueError, match="preprocessor: unknown.*'log_sign'"):
    preprocessing.get_preprocessor('nope')
