r"""The main job (./run.sh): meta-train an Optim4RL cell on Catch on this CPU,
then train fresh A2C agents on Catch with it, with the cell it started from
and with Adam, and compare. Sized to finish within about 10 minutes on 2 CPU
cores.

The recipe is configs/meta_es.py's 'catch': evolution strategies on whole
training runs, from Adam's direction, scored against Adam tuned over
{0.3, 1, 3} x its rate. The paper's meta-gradient recipe is one flag away:

    python -m launchers.quickstart --config=configs/quickstart.py \
        --workdir=runs/quickstart
    python -m launchers.quickstart --config=configs/quickstart.py \
        --workdir=runs/quickstart_mg --config.meta.meta.algorithm=meta_gradient
"""

import ml_collections

from configs import a2c_catch
from configs import meta_es


def get_config():
  config = ml_collections.ConfigDict()
  # Meta-training run (fields documented in configs/meta_common.py). The
  # paper uses 64 agents; 16 keep the job within minutes on 2 cores.
  config.meta = meta_es.get_config('catch')
  # A small budget: generations of 16 members, each scored by one
  # 300-update A2C run on Catch.
  config.meta.meta.es.population_size = 16
  config.meta.meta.es.run_updates = 300
  # The rate of the check below (Adam's, 1e-3), so that the comparison is at
  # the rate you give Adam.
  config.meta.tasks.learning_rates = (1e-3,)
  config.meta.num_meta_steps = 30
  config.meta.log_every = 5
  config.meta.save_every = 10
  # With meta.algorithm=meta_gradient: the paper's population and resets.
  config.meta.tasks.num_agents = 16
  config.meta.meta.reset_interval = 64
  # Evaluation: fresh A2C agents on Catch (fields in configs/a2c_common.py).
  config.eval = a2c_catch.get_config()
  config.eval.num_seeds = 5
  config.eval.num_updates = 1000
  config.eval.log_every = 50
  # Optimizers compared with the meta-learned one: name -> learning rate.
  config.baselines = ml_collections.ConfigDict({'adam': 1e-3})
  # Also evaluate the cell with the meta-params meta-training started at.
  config.include_untrained = True
  return config
