r"""Writes a learned-optimizer file that reuses another one's meta-params
with a momentum input (`CellConfig.grad_ema`), or an untrained cell's, and
optionally a fixed step scale (`lopt.cells.rescale`: the direction times
--scale, kept in the meta-params, so a user still passes Adam's rate).

`grad_ema` is applied before the cell (`optax.ema`, debiased), so the cell's
maths and meta-params are those of the source: only the file's config
differs. The file loads anywhere a meta_train.py output does
(`lopt.load`, `--config.optimizer.meta_params_path=`, evaluate's
`path.npz:LR` specs).

    python -m launchers.studies.variant --source=untrained --grad_ema=0.9 \
        --out=lopt/pretrained/optim4rl_untrained_ema.npz
    python -m launchers.studies.variant --source=optim4rl_ant_ppo --grad_ema=0.9 \
        --out=runs/variants/optim4rl_ant_ppo_ema.npz

--source: a shipped name (`lopt.pretrained_lib.names()`), a .npz path, or
'untrained' (the default Optim4RL cell's initial meta-params, init key
--seed, default rate --learning_rate).

--second_moment gives the magnitude path Adam's second moment as its input
(`CellConfig.second_moment`); --adam_start then sets the meta-params so
that the cell's direction is Adam's (`lopt.imitation.adam_start`, closed
form), a start for meta-training:

    python -m launchers.studies.variant --source=untrained --grad_ema=0.9 \
        --second_moment=0.999 --adam_start --out=runs/variants/adam_start.npz
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
_SECOND_MOMENT = flags.DEFINE_float(
    'second_moment', None, "Decay of the magnitude path's second-moment "
    "input (CellConfig.second_moment; 0 = the square of the cell's input); "
    "unset: the source's.")
_ADAM_START = flags.DEFINE_bool(
    'adam_start', False, "Set the meta-params so the cell's direction is "
    "Adam's (lopt.imitation.adam_start; needs --second_moment > 0).")
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
                  scale: float = 1., unit_rms: Optional[bool] = None,
                  second_moment: Optional[float] = None,
                  adam_start: bool = False) -> str:
  """Writes `source`'s meta-params with momentum input `grad_ema` (and the
  direction times `scale`; `unit_rms` and `second_moment` if given, else
  the source's; set to Adam's direction first if `adam_start`) to `out`.

  Raises ValueError (naming the field) for a bad source, decay, rate, scale
  or output name, or an Adam start without a second moment, before anything
  is written.
  """
  if not out or not out.endswith('.npz'):
    raise ValueError(f'out: must be a path ending in .npz, got {out!r}')
  lo, meta_params, described = load_source(source, seed)
  config = dataclasses.replace(
      lo.config, grad_ema=float(grad_ema),
      unit_rms=lo.config.unit_rms if unit_rms is None else bool(unit_rms),
      second_moment=(lo.config.second_moment if second_moment is None
                     else float(second_moment)))
  rate = lo.learning_rate if learning_rate is None else learning_rate
  lopt.optimizer.check_learning_rate(rate, 'learning_rate')
  if not float(scale) > 0:
    raise ValueError(f'scale: must be > 0, got {scale}')
  extra = {}
  if adam_start:
    if not config.second_moment:
      raise ValueError('adam_start: needs second_moment > 0 (the magnitude '
                       "path must see Adam's second moment)")
    meta_params = lopt.imitation.adam_start(config, meta_params)
    extra['adam_start'] = lopt.imitation.evaluate(
        config, meta_params, jax.random.PRNGKey(seed), num_coords=1024,
        length=128)
    described = (f"Adam's direction in closed form (the {config.cell} "
                 'cell, lopt.imitation.adam_start)')
  if scale != 1:
    meta_params = lopt.cells.rescale(config, meta_params, scale)
    described += f', its direction times {scale:g}'
  if config.second_moment:
    described += (f', Adam\'s second moment (EMA {config.second_moment:g} '
                  'of g^2) as the magnitude path\'s input')
  variant = lopt.learned_optimizer(learning_rate=rate, config=config)
  return lopt.save(out, meta_params, variant, extra={
      'variant_of': source, 'grad_ema': float(grad_ema), 'seed': seed,
      'scale': float(scale), 'unit_rms': config.unit_rms,
      'second_moment': config.second_moment, **extra,
      'description': f'{described}, with a debiased EMA({grad_ema:g}) of '
                     'the gradient as the cell input'})


def main(argv):
  del argv
  path = write_variant(_SOURCE.value, _OUT.value, _GRAD_EMA.value,
                       _SEED.value, _LR.value, _SCALE.value,
                       _UNIT_RMS.value, _SECOND_MOMENT.value,
                       _ADAM_START.value)
  print(f'wrote {path}', flush=True)


if __name__ == '__main__':
  flags.mark_flags_as_required(['source', 'out'])
  app.run(main)
