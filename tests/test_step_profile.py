"""launchers/studies/step_profile.py: how far an optimizer steps at rate 1, by the
gradient's signal-to-noise ratio."""

import functools

import jax

import numpy as np
import pytest

from launchers.studies import step_profile
from launchers.studies import variant
import lopt

CASES = ((1., 0.), (0., 1.))  # a clean signal, pure noise
SCALES = (1e-3,)


@functools.lru_cache(maxsize=None)
def _profiles(spec):
  return step_profile.profile(spec, steps=12, coords=300, cases=CASES,
                              scales=SCALES)


def _profile(spec, field='last'):
  return np.asarray(_profiles(spec)[field])


def test_adam_shrinks_on_noise_and_the_default_does_not(tmp_path):
  adam = _profile('adam')
  np.testing.assert_allclose(adam[0], 1., atol=0.02)  # m / sqrt(v) = 1
  assert 0.1 < adam[1] < 0.45
  default = _profile('optim4rl_untrained_ema')  # sign-like
  assert np.all((default > 0.6) & (default < 1.2)), default
  assert default[1] > 2 * adam[1]
  # Within one update, half signal and half noise: Adam's noise half steps
  # far less; the default's about as far.
  assert _profile('adam', 'noise_to_signal')[0] < 0.45
  assert _profile('optim4rl_untrained_ema', 'noise_to_signal')[0] > 0.7
  # A variant written with --scale steps that many times as far.
  out = str(tmp_path / 'twice.npz')
  variant.write_variant('untrained', out, 0.9, scale=2.)
  np.testing.assert_allclose(_profile(out), 2. * default, rtol=1e-4)


def test_unknown_optimizer_and_bad_sizes_are_refused():
  with pytest.raises(ValueError, match="optimizer.name: unknown optimizer"):
    step_profile.profile('adamm')
  with pytest.raises(ValueError, match='steps, coords: must be >= 1 and >= 2'):
    step_profile.profile('adam', steps=0)


def test_a_cell_with_the_progress_input_is_profiled_over_its_steps(tmp_path):
  # The untrained residual cell is Adam whatever its progress input says,
  # so its profile is Adam's (eps apart); it needs a run length, which the
  # profile gives it (its own number of steps).
  lo = lopt.learned_optimizer(hidden_size=2, mlp_dims=(4,), grad_ema=0.9,
                              second_moment=0.999, adam_residual=True,
                              progress_input=True)
  path = lopt.save(str(tmp_path / 'lifetime.npz'),
                   lo.init(jax.random.PRNGKey(0)), lo)
  np.testing.assert_allclose(_profile(path), _profile('adam'), rtol=2e-3)
