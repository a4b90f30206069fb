"""lopt: learned optimizers for reinforcement learning (Optim4RL) in JAX.

Usable on its own in any optax loop; knows nothing about RL agents.
"""

from lopt import cells
from lopt import checkpointing
from lopt import meta
from lopt import meta_losses
from lopt import preprocessing
from lopt import pretrained as pretrained_lib
from lopt import serialization
from lopt.cells import CellConfig
from lopt.optimizer import LearnedOptimizer
from lopt.optimizer import LearnedOptimizerState
from lopt.optimizer import learned_optimizer
from lopt.serialization import load
from lopt.pretrained import pretrained
from lopt.serialization import save

__all__ = [
    'CellConfig',
    'LearnedOptimizer',
    'LearnedOptimizerState',
    'cells',
    'checkpointing',
    'learned_optimizer',
    'load',
    'meta',
    'meta_losses',
    'preprocessing',
    'pretrained',
    'pretrained_lib',
    'save',
    'serialization',
]
