r"""Peer check: our PPO + Adam vs Brax's PPO trainer, same settings and budget.

The argument is the Brax task (default ant), optionally followed by ',paper'
for the paper's scale instead of the CPU one:

    python -m launchers.peer_check --config=configs/peer_check.py:ant \
        --workdir=runs/peer_check_ant

The PPO, network, optimizer and budget fields are configs/ppo_brax.py's; they
are mapped onto `brax.training.agents.ppo.train` one to one (see
launchers/peer_check.py).
"""

import ml_collections

from configs import ppo_brax


def get_config(arg: str = 'ant'):
  env_name, *flags = (arg or 'ant').split(',')
  config = ppo_brax.get_config(env_name + ('' if 'paper' in flags else ',cpu'))
  config.optimizer.name = 'adam'  # Brax's trainer uses Adam
  # Budget per run: 160 updates x 64 envs x 20 steps = 204,800 env steps.
  if 'paper' not in flags:
    config.num_updates = 160
  config.peer = ml_collections.ConfigDict()
  # Seeds per implementation (each trained as its own run, one after another).
  config.peer.num_seeds = 3
  # Equal chunks per run (Brax: epochs); the policy is evaluated after each,
  # outside the timing. 160 updates / 5 = 32 updates per chunk.
  config.peer.num_chunks = 5
  # Throughput counts the chunks after these (compilation happens in them:
  # Brax's trainer compiles its epoch on its first and its second call).
  config.peer.num_warmup_chunks = 2
  # Evaluation: this many envs, one full episode each, the sampled policy.
  config.peer.num_eval_envs = 16
  return config
