r"""Writes a learned-optimizer file that reuses another one's meta-params
with a momentum input (`CellConfig.grad_ema`), or an untrained cell's, and
optionally a fixed step scale (`lopt.cells.rescale`: the direction times
--scale, kept in the meta-params, so a user still passes Adam's rate).

`grad_ema` is applied before the cell (`optax.ema`, debiased), so the cell's
maths and meta-params are those of the source: only the file's config
differs. The file loads anywhere a meta_train.py output does
(`lopt.load`, `--config.optimizer.meta_params_path=`, evaluate's
`path.npz:LR` specs).

    python -m launchers.variant --source=untrained --grad_ema=0.9 \
        --out=lopt/pretrained/optim4rl_untrained_ema.npz
    python -m launchers.variant --source=optim4rl_ant_ppo --grad_ema=0.9 \
        --out=runs/variants/optim4rl_ant_ppo_ema.npz

--source: a shipped name (`lopt.pretrained_lib.names()`), a .npz path, or
'untrained' (the default Optim4RL cell's initial meta-params, init key
--seed, default rate --learning_rate).
"""

import dataclasses
from typing import Optional

from absl import app
from absl import flags
import jax

import lopt

UNTRAINED = 'untrained'

_SOURCE = flags.DEFINE_string('source', None, "A shipped optimizer's name, a "
                              ".npz path, or 'untrained'.")
_OUT = flags.DEFINE_string('out', None, 'The .npz file to write.')
_GRAD_EMA = flags.DEFINE_float('grad_ema', 0.9, 'Decay of the momentum input '
                               '(0 = the gradient itself).')
_SCALE = flags.DEFINE_float('scale', 1., "The direction's factor (kept in "
                            'the meta-params: lopt.cells.rescale).')
_UNIT_RMS = flags.DEFINE_bool('unit_rms', None, "Each update's direction at "
                              'unit RMS (CellConfig.unit_rms); unset: the '
                              "source's.")
_SEED = flags.DEFINE_integer('seed', 0, "Init key of 'untrained'.")
_LR = flags.DEFINE_float('learning_rate', None, "The file's default rate; "
                         "unset: the source's ('untrained': 1e-3).")


def load_source(source: str, seed: int = 0):
  """(learned optimizer, meta_params, description) of `source`."""
  if source == UNTRAINED:
    lo = lopt.learned_optimizer(learning_rate=1e-3)
    return lo, lo.init(jax.random.PRNGKey(seed)), (
        f'the default Optim4RL cell at its initial meta-params (key {seed})')
  if source.endswith('.npz'):
    lo, meta_params = lopt.load(source)
    return lo, meta_params, source
  if source not in lopt.pretrained_lib.names():
    raise ValueError(f"source: unknown optimizer {source!r}; allowed: "
                     f"{list(lopt.pretrained_lib.names())}, a .npz path or "
                     f"{UNTRAINED!r}")
  lo, meta_params = lopt.pretrained_lib.load(source)
  return lo, meta_params, f'the shipped {source}'


def write_variant(source: str, out: str, grad_ema: float, seed: int = 0,
                  learning_rate: Optional[float] = None,
                  scale: float = 1., unit_rms: Optional[bool] = None) -> str:
  """Writes `source`'s meta-params with momentum input `grad_ema` (and the
  direction times `scale`; `unit_rms` if given, else the source's) to `out`.

  Raises ValueError (naming the field) for a bad source, decay, rate, scale
  or output name, before anything is written.
  """
  if not out or not out.endswith('.npz'):
    raise ValueError(f'out: must be a path ending in .npz, got {out!r}')
  lo, meta_params, described = load_source(source, seed)
  config = dataclasses.replace(
      lo.config, grad_ema=float(grad_ema),
      unit_rms=lo.config.unit_rms if unit_rms is None else bool(unit_rms))
  rate = lo.learning_rate if learning_rate is None else learning_rate
  lopt.optimizer.check_learning_rate(rate, 'learning_rate')
  if scale != 1:
    meta_params = lopt.cells.rescale(config, meta_params, scale)
    described += f', its direction times {scale:g}'
  variant = lopt.learned_optimizer(learning_rate=rate, config=config)
  return lopt.save(out, meta_params, variant, extra={
      'variant_of': source, 'grad_ema': float(grad_ema), 'seed': seed,
      'scale': float(scale), 'unit_rms': config.unit_rms,
      'description': f'{described}, with a debiased EMA({grad_ema:g}) of '
                     'the gradient as the cell input'})


def main(argv):
  del argv
  path = write_variant(_SOURCE.value, _OUT.value, _GRAD_EMA.value,
                       _SEED.value, _LR.value, _SCALE.value,
                       _UNIT_RMS.value)
  print(f'wrote {path}', flush=True)


if __name__ == '__main__':
  flags.mark_flags_as_required(['source', 'out'])
  app.run(main)
