"""A small PPO on CartPole written with jax, optax and haiku only.

It stands for a codebase written elsewhere: nothing here comes from agents/,
launchers/ or lopt/. The optimizer is any `optax.GradientTransformation`
built from the run's number of optimizer steps, so a test can swap
`optax.adam(schedule)` for `lopt.pretrained(learning_rate=schedule)`.

CartPole follows gym's CartPole-v1 (Euler integration, 12 degree / 2.4 m
limits, 500 steps); PPO follows the usual single-file recipe (GAE, clipped
surrogate, value loss, entropy bonus, global-norm clipping, minibatch epochs).

    python -m tests.plain_ppo --names=adam,optim4rl_ant_ppo   # final returns
"""

import dataclasses
import math
from typing import Callable, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import optax

# CartPole-v1.
_GRAVITY, _CART, _POLE, _HALF_LEN, _FORCE, _TAU = 9.8, 1.0, 0.1, 0.5, 10., .02
_THETA_MAX, _X_MAX, _MAX_STEPS = 12 * 2 * math.pi / 360, 2.4, 500


class CartPole(NamedTuple):
  s: jax.Array  # [4] x, x_dot, theta, theta_dot
  t: jax.Array  # [] steps in this episode
  ret: jax.Array  # [] return so far


def cartpole_reset(key) -> CartPole:
  return CartPole(jax.random.uniform(key, (4,), minval=-.05, maxval=.05),
                  jnp.zeros((), jnp.int32), jnp.zeros(()))


def cartpole_step(key, env: CartPole, action):
  """One step with auto-reset: (env, obs, reward, done, finished_return)."""
  x, x_dot, th, th_dot = env.s
  force = jnp.where(action == 1, _FORCE, -_FORCE)
  cos, sin = jnp.cos(th), jnp.sin(th)
  total = _CART + _POLE
  temp = (force + _POLE * _HALF_LEN * th_dot**2 * sin) / total
  th_acc = (_GRAVITY * sin - cos * temp) / (
      _HALF_LEN * (4. / 3. - _POLE * cos**2 / total))
  x_acc = temp - _POLE * _HALF_LEN * th_acc * cos / total
  s = jnp.stack([x + _TAU * x_dot, x_dot + _TAU * x_acc,
                 th + _TAU * th_dot, th_dot + _TAU * th_acc])
  t = env.t + 1
  done = ((jnp.abs(s[0]) > _X_MAX) | (jnp.abs(s[2]) > _THETA_MAX)
          | (t >= _MAX_STEPS))
  ret = env.ret + 1.
  fresh = cartpole_reset(key)
  nxt = jax.tree.map(lambda a, b: jnp.where(done, a, b), fresh,
                     CartPole(s, t, ret))
  return nxt, nxt.s, jnp.ones(()), done, jnp.where(done, ret, jnp.nan)


@dataclasses.dataclass(frozen=True)
class Config:
  """The usual single-file recipe; 976 updates = 499,712 env steps."""
  num_envs: int = 4
  rollout: int = 128
  num_updates: int = 976
  epochs: int = 4
  minibatches: int = 4
  discount: float = 0.99
  gae_lambda: float = 0.95
  clip: float = 0.2
  value_coef: float = 0.5
  entropy_coef: float = 0.01
  max_grad_norm: float = 0.5
  hidden: int = 64

  @property
  def optimizer_steps(self) -> int:
    return self.num_updates * self.epochs * self.minibatches


def make_net(hidden: int) -> hk.Transformed:
  """Separate policy and value MLPs (tanh, two layers of `hidden`)."""

  def nets(obs):
    init = hk.initializers.Orthogonal(math.sqrt(2))
    torso = lambda: hk.nets.MLP([hidden, hidden], activation=jnp.tanh,
                                w_init=init, activate_final=True)
    logits = hk.Linear(2, w_init=hk.initializers.Orthogonal(0.01))(
        torso()(obs))
    value = hk.Linear(1, w_init=hk.initializers.Orthogonal(1.))(torso()(obs))
    return logits, value[..., 0]

  return hk.without_apply_rng(hk.transform(nets))


def make_train(cfg: Config, make_opt: Callable[[], optax.GradientTransformation]):
  """`train(key) -> [num_updates] mean finished-episode return per update`."""
  opt = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), make_opt())
  batch = cfg.num_envs * cfg.rollout
  net = make_net(cfg.hidden)

  def loss_fn(params, obs, act, logp_old, adv, target):
    logits, value = net.apply(params, obs)
    logp_all = jax.nn.log_softmax(logits)
    logp = jnp.take_along_axis(logp_all, act[:, None], -1)[:, 0]
    ratio = jnp.exp(logp - logp_old)
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    pg = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - cfg.clip,
                                            1 + cfg.clip) * adv).mean()
    entropy = -(jnp.exp(logp_all) * logp_all).sum(-1).mean()
    return (pg + cfg.value_coef * ((value - target)**2).mean()
            - cfg.entropy_coef * entropy)

  def env_step(carry, key):
    params, envs, obs = carry
    k_act, k_env = jax.random.split(key)
    logits, value = net.apply(params, obs)
    act = jax.random.categorical(k_act, logits)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits), act[:, None],
                               -1)[:, 0]
    envs, obs2, rew, done, fin = jax.vmap(cartpole_step)(
        jax.random.split(k_env, cfg.num_envs), envs, act)
    return (params, envs, obs2), (obs, act, logp, value, rew, done, fin)

  def update(carry, key):
    params, opt_state, envs, obs = carry
    k_roll, k_perm = jax.random.split(key)
    (_, envs, obs), (o, a, lp, v, r, d, fin) = jax.lax.scan(
        env_step, (params, envs, obs), jax.random.split(k_roll, cfg.rollout))
    _, last_v = net.apply(params, obs)

    def gae(next_adv_v, x):
      next_adv, next_v = next_adv_v
      rew, done, value = x
      nonterm = 1. - done
      delta = rew + cfg.discount * next_v * nonterm - value
      adv = delta + cfg.discount * cfg.gae_lambda * nonterm * next_adv
      return (adv, value), adv

    _, adv = jax.lax.scan(gae, (jnp.zeros_like(last_v), last_v),
                          (r, d.astype(jnp.float32), v), reverse=True)
    flat = jax.tree.map(lambda x: x.reshape((batch,) + x.shape[2:]),
                        (o, a, lp, adv, adv + v))

    def epoch(carry, key):
      perm = jax.random.permutation(key, batch).reshape(cfg.minibatches, -1)

      def minibatch(carry, idx):
        params, opt_state = carry
        grads = jax.grad(loss_fn)(params, *jax.tree.map(lambda x: x[idx],
                                                          flat))
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

      return jax.lax.scan(minibatch, carry, perm)[0], None

    (params, opt_state), _ = jax.lax.scan(
        epoch, (params, opt_state), jax.random.split(k_perm, cfg.epochs))
    return (params, opt_state, envs, obs), jnp.nanmean(fin)

  def train(key):
    k_net, k_env, k_run = jax.random.split(key, 3)
    envs = jax.vmap(cartpole_reset)(jax.random.split(k_env, cfg.num_envs))
    params = net.init(k_net, envs.s)
    carry = (params, opt.init(params), envs, envs.s)
    _, returns = jax.lax.scan(update, carry,
                              jax.random.split(k_run, cfg.num_updates))
    return returns

  return train


def final_return(returns, fraction: float = 0.1):
  """Mean over the last `fraction` of updates, per seed: `[seeds]`. An
  update in which no episode ended reports NaN and is left out (nanmean)."""
  n = max(1, int(returns.shape[-1] * fraction))
  return jnp.nanmean(returns[..., -n:], axis=-1)


def run(cfg: Config, make_opt, seeds: int = 4, seed: int = 0):
  train = jax.jit(jax.vmap(make_train(cfg, make_opt)))
  return train(jax.random.split(jax.random.PRNGKey(seed), seeds))


if __name__ == '__main__':
  import argparse  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  import lopt  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser()
  p.add_argument('--updates', type=int, default=976)
  p.add_argument('--lr', type=float, default=2.5e-4)
  p.add_argument('--seeds', type=int, default=4)
  p.add_argument('--names', default='adam,optim4rl_gridworlds,optim4rl_ant_ppo')
  p.add_argument('--envs', type=int, default=4)
  p.add_argument('--hidden', type=int, default=64)
  args = p.parse_args()
  cfg = Config(num_updates=args.updates, num_envs=args.envs,
               hidden=args.hidden)
  sched = optax.linear_schedule(args.lr, 0., cfg.optimizer_steps)
  for name in args.names.split(','):
    ema = name.startswith('ema:')
    name = name[4:] if ema else name
    if name == 'adam':
      make = lambda: optax.adam(sched, eps=1e-5)
    elif name.endswith('.npz'):  # a meta_train.py output
      lo_mp = lopt.load(name)
      make = lambda lo_mp=lo_mp: lo_mp[0].opt_fn(lo_mp[1], sched)
    elif name == 'untrained':
      lo = lopt.learned_optimizer()
      make = lambda: lo.opt_fn(lo.init(jax.random.PRNGKey(0)), sched)
    else:
      make = lambda name=name: lopt.pretrained(name, learning_rate=sched)
    if ema:  # the cell sees a debiased EMA of the gradient (momentum)
      make = lambda make=make: optax.chain(optax.ema(0.9), make())
      name = 'ema:' + name
    t = time.time()
    ret = run(cfg, make, args.seeds)
    print(f'{name:24s} final {final_return(ret)} '
          f'mean {float(final_return(ret).mean()):.1f} ({time.time() - t:.0f}s)',
          flush=True)
