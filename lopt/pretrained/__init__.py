"""Pretrained learned optimizers shipped with the package, loaded by name.

    >>> import lopt
    >>> opt = lopt.pretrained(learning_rate=1e-3)   # the default, `DEFAULT`
    >>> opt = lopt.pretrained('optim4rl_gridworlds', learning_rate=1e-3)

Each `<name>.npz` here was written by `launchers/meta_train.py` (through
`lopt.save`), or by `launchers/studies/variant.py` (another one's meta-params, or an
untrained cell's, with a momentum input, or Adam's direction); `<name>.md` beside it records the
config, the exact command, its cost and its measured results. Loading uses
`np.load(allow_pickle=False)`, so no code from a file is ever executed.
"""

import os
from typing import Optional, Tuple

import optax

from lopt import optimizer as optimizer_lib
from lopt import serialization

_DIR = os.path.dirname(os.path.abspath(__file__))

# What `pretrained()` gives with no name: the Optim4RL cell with Adam's
# moments as inputs (`CellConfig.grad_ema`, `second_moment`), started at
# Adam's direction (`lopt.imitation.adam_start`) and meta-trained 60
# iterations on a mix of A2C and PPO tasks (configs/meta_mix.py: A2C on Catch
# and three dense gridworlds, PPO on MinAtar Asterix and Brax ant). Its card
# (optim4rl_from_adam_mix.md) has its budget and figures; the standard suite
# (docs/results/standard) is what to judge it by. tests/test_plain_loop.py
# checks it against Adam in a PPO loop written elsewhere.
DEFAULT = 'optim4rl_from_adam_mix'


def names() -> Tuple[str, ...]:
  """Names of the shipped optimizers."""
  return tuple(sorted(f[:-4] for f in os.listdir(_DIR) if f.endswith('.npz')))


def path(name: str) -> str:
  """The file of a shipped optimizer (raises ValueError for unknown names)."""
  if name not in names():
    raise ValueError(f'pretrained: unknown optimizer {name!r}; allowed: '
                     f'{list(names())}')
  return os.path.join(_DIR, name + '.npz')


def load(name: str) -> Tuple[optimizer_lib.LearnedOptimizer, dict]:
  """(learned optimizer, meta_params) of a shipped optimizer."""
  return serialization.load(path(name))


def pretrained(name: str = DEFAULT,
               learning_rate: Optional[optimizer_lib.LearningRate] = None
               ) -> optax.GradientTransformation:
  """A shipped learned optimizer as an `optax.GradientTransformation`.

  A drop-in for `optax.adam(learning_rate)`: the rate may be a float or an
  `optax.Schedule`, and `optax.inject_hyperparams(lopt.pretrained)(
  name=..., learning_rate=...)` lets a loop change it between steps.

  Args:
    name: one of `names()`; by default `DEFAULT` ('optim4rl_from_adam_mix').
    learning_rate: step size (float or schedule); None uses the one it was
      meta-trained with.
  """
  lo, meta_params = load(name)
  return lo.opt_fn(meta_params, learning_rate)  # checks the rate
