r"""The main job (./run.sh): meta-train Optim4RL on Catch on this CPU, then
train fresh A2C agents on Catch with it, with the untrained optimizer and with
Adam, and compare. Sized to finish within about 10 minutes on 2 CPU cores.

    python -m launchers.quickstart --config=configs/quickstart.py \
        --workdir=runs/quickstart --config.meta.num_meta_steps=400
"""

import ml_collections

from configs import a2c_catch
from configs import meta_catch


def get_config():
  config = ml_collections.ConfigDict()
  # Meta-training run (fields documented in configs/meta_common.py). The
  # paper uses 64 agents; 16 keep the job within minutes on 2 cores.
  config.meta = meta_catch.get_config()
  config.meta.tasks.num_agents = 16
  config.meta.meta.reset_interval = 64
  config.meta.num_meta_steps = 240
  config.meta.log_every = 10
  config.meta.save_every = 40

  # Evaluation: fresh A2C agents on Catch (fields in configs/a2c_common.py).
  config.eval = a2c_catch.get_config()
  config.eval.num_seeds = 5
  config.eval.num_updates = 1000
  config.eval.log_every = 50
  # Optimizers compared with the meta-learned one: name -> learning rate.
  config.baselines = ml_collections.ConfigDict({'adam': 1e-3})
  # Also evaluate the same cell with untrained (initial) meta-params.
  config.include_untrained = True
  return config
