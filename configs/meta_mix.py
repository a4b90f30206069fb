r"""Meta-train one optimizer on a task mix of A2C and PPO agents.

What users train: the gridworlds and Catch with A2C, and PPO on a discrete
(gymnax MinAtar Asterix) and a continuous (Brax ant) problem, meta-trained together (one
meta-gradient, the mean over tasks of each task's meta-gradient at unit
norm; each task's agent is its own kind, from
`tasks.agents`). Sizes are CPU-scale; the argument picks the Brax task.
The discrete and Brax tasks are chosen outside the held-out suite
(configs/evaluate.py:heldout: CartPole, Acrobot, Breakout, SpaceInvaders,
hopper, halfcheetah, inverted_pendulum), which then measures generalisation
to unseen tasks.

    python -m launchers.meta_train --config=configs/meta_mix.py \
        --workdir=runs/meta_mix
    python -m launchers.meta_train --config=configs/meta_mix.py:walker2d \
        --workdir=runs/meta_mix_walker --config.optimizer.grad_ema=0.9
    # A2C only (Asterix with A2C too, no Brax task), from the default's
    # start (its momentum input, init key 0) at a smaller meta-rate:
    python -m launchers.meta_train --config=configs/meta_mix.py:a2c \
        --workdir=runs/meta_mix_a2c --config.optimizer.grad_ema=0.9 \
        --config.meta.learning_rate=3e-4
"""

from configs import meta_common
from configs import meta_gridworlds
from configs import ppo_brax

# name: (agent, learning rate, reward scale, reset interval). The A2C tasks
# use their configs' settings (configs/meta_catch.py, meta_gridworlds.py);
# the PPO ones Adam's usual 3e-4 and PPO's reward scale 1 in meta-training
# (configs/meta_ppo_brax.py says why).
A2C_TASKS = {
    'catch': ('a2c', 1e-3, 1., 64),
    **{n: ('a2c',) + s for n, s in meta_gridworlds.GRIDWORLD_SETTINGS.items()
       if n in ('small_dense_short', 'big_dense_short', 'small_dense_long')},
}


def get_config(brax_task: str = 'ant'):
  """brax_task: the Brax task of the mix, '' for none, or 'a2c' (no Brax
  task, and MinAtar Asterix with A2C at A2C's rate instead of PPO)."""
  tasks = dict(A2C_TASKS)
  if brax_task == 'a2c':
    tasks['asterix_minatar'] = ('a2c', 1e-3, 1., 64)
    brax_task = ''
  else:
    tasks['asterix_minatar'] = ('ppo', 3e-4, 1., 64)
  if brax_task:
    tasks[brax_task] = ('ppo', 3e-4, 1., 64)
  config = meta_common.base_config()
  config.tasks.env_names = tuple(tasks)
  config.tasks.agents = tuple(t[0] for t in tasks.values())
  config.tasks.learning_rates = tuple(t[1] for t in tasks.values())
  config.tasks.reward_scales = tuple(t[2] for t in tasks.values())
  config.tasks.reset_intervals = tuple(t[3] for t in tasks.values())
  config.tasks.num_agents = 8
  # The PPO tasks' agent (one full-batch step per inner update, as in
  # configs/meta_ppo_brax.py); Brax episodes of 1000 steps restart from
  # their first state; the other envs keep their own lengths.
  config.ppo = ppo_brax.get_config((brax_task or 'ant') + ',cpu').ppo
  config.ppo.num_envs = 16
  config.ppo.unroll_len = 10
  config.ppo.num_minibatches = 1
  config.ppo.num_epochs = 1
  config.reset_mode = 'first'
  # The tasks' meta-losses differ by up to 1e7 (small_dense_long's reward
  # scale is 1e3, Catch's returns are within [-1, 1]): each task's
  # meta-gradient is taken at unit norm before the mean over tasks.
  config.meta.task_weighting = 'unit_norm'
  config.num_meta_steps = 1000
  config.log_every = 10
  config.save_every = 50
  return config
