r"""How far an optimizer steps, by the gradient's signal-to-noise ratio.

At rate 1, each optimizer is fed `steps` gradients `scale * (mean + std * z)`
(z standard normal, fresh each step, `coords` coordinates) and the mean
|update| per coordinate is printed at step 10 and at the last step, for each
(mean, std) case and scale. Adam steps about 1 per coordinate on a clean
signal and about 0.2 on pure noise (its `m / sqrt(v)`); a sign-like step
stays near one size whatever the noise. So this says how an optimizer's
step compares with Adam's at the same rate, and whether it shrinks where the
gradient is noise (also within one update: half of its coordinates clean
signal, half pure noise, the noise half's step over the signal half's).

    python -m launchers.studies.step_profile \
        --optimizers=adam,optim4rl_untrained_ema,optim4rl_ant_ppo,runs/variants/x.npz

--optimizers: optax names (launchers.lib.common.OPTAX_OPTIMIZERS), shipped
learned optimizers, untrained cells (optim4rl, l2lgd2, linear; init key 0)
or .npz files. One JSON line per optimizer goes to --json_out if given.
"""

import json
import os
from typing import Dict, List, Sequence, Tuple

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from launchers.lib import common

# (mean, std) of the gradient before `scale`: a clean signal to pure noise.
CASES = ((1., 0.), (1., 0.3), (1., 1.), (0.3, 1.), (0.1, 1.), (0., 1.))
SCALES = (1e-6, 1e-3, 1.)

_OPTIMIZERS = flags.DEFINE_list(
    'optimizers', ['adam', 'optim4rl_untrained_ema'],
    'Optimizer names or .npz files.')
_STEPS = flags.DEFINE_integer('num_steps', 40,
                              'Gradients fed to each optimizer.')
_COORDS = flags.DEFINE_integer('num_coords', 2000,
                               'Coordinates per gradient.')
_OUT = flags.DEFINE_string('json_out', '',
                           'Append one JSON line per optimizer to this file.')


def optimizer_config(spec: str) -> ml_collections.ConfigDict:
  """`config.optimizer` for a name or .npz file, at rate 1 (validated)."""
  cfg = ml_collections.ConfigDict({
      'name': spec, 'learning_rate': 1., 'lr_schedule': 'constant',
      'lr_end': 0., 'max_grad_norm': 0., 'meta_params_path': ''})
  if spec.endswith('.npz'):
    cfg.name, cfg.meta_params_path = 'learned', spec
  common.check_optimizer_config(cfg)
  return cfg


def check_sizes(steps: int, coords: int) -> None:
  if steps < 1 or coords < 2:
    raise ValueError(f'steps, coords: must be >= 1 and >= 2, got {steps}, '
                     f'{coords}')


def profile(spec: str, steps: int = 40, coords: int = 2000,
            cases: Sequence[Tuple[float, float]] = CASES,
            scales: Sequence[float] = SCALES) -> Dict[str, List[float]]:
  """Mean |update| per coordinate at rate 1.

  Returns {'step10': [...], 'last': [...]} for each (scale, case), scales
  outer, at step min(10, steps) and at the last; and 'noise_to_signal': per
  scale, in one update whose first half of coordinates is a clean signal
  (mean 1, std 0) and second half pure noise (mean 0, std 1), the noise
  half's mean |update| over the signal half's, at the last step (Adam about
  0.2; a sign-like step about 1). A step normalised over all coordinates
  (`CellConfig.unit_rms`) shows its spread only there.
  """
  check_sizes(steps, coords)
  # A cell that sees the training progress runs a lifetime of `steps`, one
  # step an update.
  opt = common.make_optimizer(optimizer_config(spec), total_steps=steps,
                              steps_per_update=1)
  half = coords // 2
  mixed_mean = jnp.concatenate([jnp.ones(half), jnp.zeros(coords - half)])
  rows = [(s * m * jnp.ones(coords), s * d * jnp.ones(coords))
          for s in scales for m, d in cases]
  rows += [(s * mixed_mean, s * (1. - mixed_mean)) for s in scales]
  means, stds = (jnp.stack(x).astype(jnp.float32) for x in zip(*rows))

  @jax.jit
  def run(key):
    def one(mean, std, key):
      params = jnp.zeros((coords,), jnp.float32)

      def step(state, key):
        g = mean + std * jax.random.normal(key, (coords,))
        u, state = opt.update(g, state, params)
        return state, (jnp.mean(jnp.abs(u)),
                       jnp.mean(jnp.abs(u[half:])) / jnp.mean(
                           jnp.abs(u[:half])))

      return jax.lax.scan(step, opt.init(params),
                          jax.random.split(key, steps))[1]
    return jax.vmap(one)(means, stds, jax.random.split(key, len(rows)))

  sizes, ratios = (np.asarray(x) for x in run(jax.random.PRNGKey(0)))
  n = len(scales) * len(cases)
  return {'step10': sizes[:n, min(10, steps) - 1].tolist(),
          'last': sizes[:n, -1].tolist(),
          'noise_to_signal': ratios[n:, -1].tolist()}


def main(argv):
  del argv
  for spec in _OPTIMIZERS.value:  # every name and file, before compiling
    optimizer_config(spec)
  check_sizes(_STEPS.value, _COORDS.value)
  header = ' '.join(f'{m:g}/{d:g}' for m, d in CASES)
  print(f'mean |update| per coordinate at rate 1, at step '
        f'{min(10, _STEPS.value)} / step {_STEPS.value}; columns: gradient '
        f'mean/std ({header}), times each scale; noise/signal: in one '
        'update, half clean signal and half pure noise, the noise half\'s '
        'mean |update| over the signal half\'s')
  for spec in _OPTIMIZERS.value:
    sizes = profile(spec, _STEPS.value, _COORDS.value)
    for i, scale in enumerate(SCALES):
      cols = range(i * len(CASES), (i + 1) * len(CASES))
      name = os.path.basename(spec)
      print(f'{name:>32s} x{scale:<6g} ' + ' '.join(
          f"{sizes['step10'][c]:.2f}/{sizes['last'][c]:.2f}" for c in cols)
            + f"   noise/signal {sizes['noise_to_signal'][i]:.2f}",
            flush=True)
    if _OUT.value:
      with open(_OUT.value, 'a') as f:
        f.write(json.dumps({'optimizer': spec, 'steps': _STEPS.value,
                            'cases': CASES, 'scales': SCALES, **sizes}) + '\n')


if __name__ == '__main__':
  app.run(main)
