r"""Our PPO (agents/ppo.py) vs a purejaxrl-style single file, env-steps/s.

    python -m launchers.ppo_benchmark --env=breakout_minatar --seeds=4 \
        --updates_per_call=4 --rounds=3

Both run the same settings (configs/ppo_gymnax.py: 64 envs x 128 steps,
4 epochs x 8 minibatches on MinAtar), `--seeds` agents vmapped, in one
process, alternated call by call after one compile call each; prints each
round's env-steps/s (all seeds) and their ratio (ours / reference), then
one JSON line with the medians.
"""

import json
import time

from absl import app
from absl import flags
import jax
import numpy as np

from agents import environments
from configs import ppo_gymnax
from launchers.lib import common
from launchers.lib import reference_ppo
from launchers.lib import runtime

_ENV = flags.DEFINE_enum('env', 'breakout_minatar',
                         list(ppo_gymnax.MINATAR + ppo_gymnax.CLASSIC),
                         'Task (configs/ppo_gymnax.py).')
_SEEDS = flags.DEFINE_integer('seeds', 4, 'Agents vmapped.')
_UPDATES = flags.DEFINE_integer('updates_per_call', 4,
                                'PPO updates per timed call.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Timed calls of each.')


def ours(cfg, seeds: int, updates: int):
  """(run, state): our PPO from the config, `seeds` agents vmapped."""
  agent, algo, _ = common.make_agent(cfg)
  per_step = common.optimizer_steps_per_update(cfg)
  opt = common.make_optimizer(cfg.optimizer,
                              total_steps=cfg.num_updates * per_step,
                              steps_per_update=per_step)
  state = jax.jit(jax.vmap(lambda k: algo.init_state(agent, opt, k)))(
      jax.random.split(jax.random.PRNGKey(0), seeds))
  run = jax.jit(jax.vmap(algo.make_train(agent, opt, updates)))
  return run, state


def reference(cfg, seeds: int, updates: int):
  """(run, state): the single-file PPO with the same settings."""
  conf = reference_ppo.Config(
      env_id=environments.make(cfg.env_name).name,
      num_envs=cfg.ppo.num_envs, num_steps=cfg.ppo.unroll_len,
      update_epochs=cfg.ppo.num_epochs,
      num_minibatches=cfg.ppo.num_minibatches,
      lr=cfg.optimizer.learning_rate, total_updates=cfg.num_updates,
      activation=cfg.ppo.activation)
  init, train = reference_ppo.make_train(conf)
  state = jax.jit(jax.vmap(init))(jax.random.split(jax.random.PRNGKey(0),
                                                   seeds))
  run = jax.jit(jax.vmap(lambda s: train(s, updates)))
  return run, state


def main(argv):
  del argv
  runtime.setup()
  cfg = ppo_gymnax.get_config(_ENV.value)
  steps = (_SEEDS.value * _UPDATES.value * cfg.ppo.num_envs *
           cfg.ppo.unroll_len)
  impls = {'ours': ours(cfg, _SEEDS.value, _UPDATES.value),
           'reference': reference(cfg, _SEEDS.value, _UPDATES.value)}
  states = {}
  for name, (run, state) in impls.items():  # compile + first call
    t = time.time()
    states[name] = jax.block_until_ready(run(state))[0]
    print(f'{name}: compile + first call {time.time() - t:.1f}s', flush=True)
  rates = {name: [] for name in impls}
  for i in range(_ROUNDS.value):
    for name, (run, _) in impls.items():
      t = time.time()
      states[name] = jax.block_until_ready(run(states[name]))[0]
      rates[name].append(steps / (time.time() - t))
    print(f'round {i}: ours {rates["ours"][-1]:,.0f} env-steps/s, '
          f'reference {rates["reference"][-1]:,.0f}, ratio '
          f'{rates["ours"][-1] / rates["reference"][-1]:.3f}', flush=True)
  out = {'env': _ENV.value, 'seeds': _SEEDS.value,
         'env_steps_per_call': steps,
         **{f'{k}_env_steps_per_s': float(np.median(v))
            for k, v in rates.items()},
         'ratio_ours_over_reference': float(np.median(
             np.array(rates['ours']) / np.array(rates['reference'])))}
  print(json.dumps(out), flush=True)


if __name__ == '__main__':
  app.run(main)
