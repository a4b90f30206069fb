"""lopt: learned optimizers for reinforcement learning (Optim4RL) in JAX.

Usable on its own in any optax loop; knows nothing about RL agents.

    >>> import lopt, optax
    >>> opt = lopt.pretrained('optim4rl_gridworlds',
    ...                       learning_rate=optax.linear_schedule(3e-4, 0., 1000))

`lopt.step_adaptation.step_adapted(direction)` gives any direction (Adam's,
a learned one) a step size that adapts itself over the run.

`import lopt` is light (jax, haiku, optax): `lopt.checkpointing` (Orbax) and
`lopt.testing` (chex assertions for new cells), `lopt.imitation` (a
cell fit to Adam) and `lopt.es` (evolution strategies, evosax) load on
first use.
"""

import importlib

from lopt import cells
from lopt import meta
from lopt import meta_losses
from lopt import optimizer
from lopt import preprocessing
from lopt import pretrained as pretrained_lib
from lopt import serialization
from lopt import step_adaptation
from lopt.cells import CellConfig
from lopt.optimizer import direction_state
from lopt.optimizer import LearnedOptimizer
from lopt.optimizer import learned_optimizer
from lopt.optimizer import scale_by_learned_optimizer
from lopt.optimizer import ScaleByLearnedOptimizerState
from lopt.pretrained import pretrained
from lopt.serialization import load
from lopt.serialization import save

# Submodules with heavy dependencies, imported when first used.
_LAZY_MODULES = ('checkpointing', 'es', 'imitation', 'testing')


def __getattr__(name):
  if name in _LAZY_MODULES:
    module = importlib.import_module(f'lopt.{name}')
    globals()[name] = module
    return module
  raise AttributeError(f'module lopt has no attribute {name!r}')


__all__ = [
    'CellConfig',
    'LearnedOptimizer',
    'ScaleByLearnedOptimizerState',
    'cells',
    'checkpointing',
    'direction_state',
    'es',
    'imitation',
    'learned_optimizer',
    'load',
    'meta',
    'meta_losses',
    'optimizer',
    'preprocessing',
    'pretrained',
    'pretrained_lib',
    'save',
    'scale_by_learned_optimizer',
    'serialization',
    'step_adaptation',
    'testing',
]
