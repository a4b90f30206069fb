"""The shipped default optimizer in a PPO loop written elsewhere.

`plain_ppo` is a single-file PPO on CartPole-v1 with only jax, optax and
haiku (nothing from agents/, launchers/ or lopt/), at the usual single-file
settings: 4 envs x 128 steps, 4 minibatches x 4 epochs, 976 updates
(499,712 env steps), lr 2.5e-4 annealed linearly to 0, global-norm clip
0.5. A user swaps `optax.adam(schedule, eps=1e-5)` for
`lopt.pretrained(learning_rate=schedule)`, same schedule, nothing retuned.
"""

import jax
import numpy as np
import optax
import pytest

import lopt
import plain_ppo

CFG = plain_ppo.Config(num_envs=4, rollout=128, num_updates=976)
SEEDS = 4
LR = optax.linear_schedule(2.5e-4, 0., CFG.optimizer_steps)


@pytest.fixture(scope='module')
def adam_returns():
  return plain_ppo.run(CFG, lambda: optax.adam(LR, eps=1e-5), SEEDS)


def test_cartpole_dynamics_and_auto_reset():
  key = jax.random.PRNGKey(0)
  env = plain_ppo.cartpole_reset(key)
  assert env.s.shape == (4,) and float(abs(env.s).max()) <= 0.05
  # Pushing right only: the pole falls within a few dozen steps, the episode
  # ends with its length as return and the env starts afresh.
  lengths, t = [], 0
  for i in range(200):
    env, obs, rew, done, fin = plain_ppo.cartpole_step(
        jax.random.fold_in(key, i), env, 1)
    t += 1
    assert float(rew) == 1.
    if bool(done):
      lengths.append(t)
      assert float(fin) == t and int(env.t) == 0 and float(env.ret) == 0.
      assert float(abs(obs).max()) <= 0.05
      t = 0
    else:
      assert np.isnan(float(fin))
  assert lengths and all(5 < n < 60 for n in lengths), lengths


def test_adam_learns_cartpole(adam_returns):
  final = plain_ppo.final_return(adam_returns)
  first = np.nanmean(np.asarray(adam_returns)[:, :10])
  assert first < 40. and float(final.mean()) > 400., (first, final)


def test_default_shipped_optimizer_reaches_90_percent_of_adam(adam_returns):
  ours = plain_ppo.run(CFG, lambda: lopt.pretrained(learning_rate=LR), SEEDS)
  assert np.all(np.isfinite(np.asarray(ours)[:, -10:]))
  adam = float(plain_ppo.final_return(adam_returns).mean())
  mine = float(plain_ppo.final_return(ours).mean())
  assert mine >= 0.9 * adam, (mine, adam, mine / adam)
