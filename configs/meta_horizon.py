r"""Meta-gradients through long horizons, from exactly Adam.

The paper's meta-gradient sees K = 4 inner updates, and over 4 updates a
larger step nearly always looks better (the short-horizon bias). This preset
takes K = 16 (`meta.num_inner_steps`, with rematerialisation), starts from
Adam itself (`optimizer.adam_residual`: the cell learns log-corrections of
Adam's moments from zero) and trains on the ES mix's tasks at Adam's tuned
rates for them (configs/meta_es.py:MIX), resetting each agent after about the
ES runs' 200 updates, so that both trainers see the same agents' lifetimes.

    python -m launchers.meta_train --config=configs/meta_horizon.py \
        --workdir=runs/meta_horizon
    # a longer horizon, or with the lifetime-aware inputs:
    python -m launchers.meta_train --config=configs/meta_horizon.py:32,lifetime \
        --workdir=runs/meta_horizon_32

The argument is K (default 16), optionally followed by ',lifetime'. Every
task is outside the standard suite's held-out list.
"""

from configs import meta_common
from configs import meta_es

# Inner updates of an agent's life (the ES runs' length).
LIFETIME_UPDATES = 200


def get_config(arg: str = '16'):
  horizon, *flags = (arg or '16').split(',')
  if not horizon.isdigit() or int(horizon) < 1 or set(flags) - {'lifetime'}:
    raise ValueError(f'configs/meta_horizon.py: bad argument {arg!r}; allowed: '
                     "K, a positive integer (e.g. '16'), optionally followed "
                     "by ',lifetime'")
  num_inner_steps = int(horizon)
  config = meta_common.base_config()
  config.tasks.env_names = tuple(t[0] for t in meta_es.MIX)
  config.tasks.learning_rates = tuple(t[1] for t in meta_es.MIX)
  config.tasks.reward_scales = tuple(t[2] for t in meta_es.MIX)
  config.tasks.num_agents = 8
  config.a2c.num_envs = 16
  config.meta.num_inner_steps = num_inner_steps
  config.meta.reset_interval = max(1, round(LIFETIME_UPDATES / num_inner_steps))
  config.meta.remat = True
  config.meta.task_weighting = 'unit_norm'
  config.meta.learning_rate = 1e-3
  config.optimizer.grad_ema = 0.9
  config.optimizer.second_moment = 0.999
  config.optimizer.adam_residual = True
  if 'lifetime' in flags:
    meta_es.set_lifetime_inputs(config.optimizer)
  config.num_meta_steps = 600
  config.log_every = 10
  config.save_every = 50
  config.keep_checkpoints = 3
  return config
