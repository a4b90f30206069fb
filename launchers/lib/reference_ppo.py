"""A single-file PPO in purejaxrl's style, on gymnax, as a speed reference.

It stands for the community's implementation: nothing here comes from
agents/ or lopt/. `make_train(config)` returns a pure `train(key, num_updates)`
(many seeds: `jax.jit(jax.vmap(...))`): env steps, GAE, epochs and
minibatches are nested `lax.scan`s over a `Transition`, the network is
purejaxrl's ActorCritic (separate 64-64 actor and critic, orthogonal init),
the loss has its clipped value term, and Adam has eps 1e-5 after a global
norm clip. launchers/ppo_benchmark.py times it beside agents/ppo.py.
"""

import dataclasses
import math
from typing import NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class Config:
  """purejaxrl's MinAtar settings."""
  env_id: str = 'Breakout-MinAtar'
  num_envs: int = 64
  num_steps: int = 128
  update_epochs: int = 4
  num_minibatches: int = 8
  lr: float = 1e-3
  total_updates: int = 1220   # 1e7 env steps / (64 x 128): the lr anneal
  gamma: float = 0.99
  gae_lambda: float = 0.95
  clip_eps: float = 0.2
  ent_coef: float = 0.01
  vf_coef: float = 0.5
  max_grad_norm: float = 0.5
  activation: str = 'relu'


class Transition(NamedTuple):
  done: jax.Array
  action: jax.Array
  value: jax.Array
  reward: jax.Array
  log_prob: jax.Array
  obs: jax.Array


def make_network(num_actions: int, activation: str) -> hk.Transformed:
  act = jax.nn.relu if activation == 'relu' else jnp.tanh
  orth = hk.initializers.Orthogonal

  def mlp(x, out, gain):
    for _ in range(2):
      x = act(hk.Linear(64, w_init=orth(math.sqrt(2)))(x))
    return hk.Linear(out, w_init=orth(gain))(x)

  def forward(obs):
    x = obs.reshape(obs.shape[:-3] + (-1,)) if obs.ndim >= 3 else obs
    return mlp(x, num_actions, 0.01), mlp(x, 1, 1.)[..., 0]

  return hk.without_apply_rng(hk.transform(forward))


def make_train(config: Config):
  """`train(key, num_updates) -> (runner state, mean return per update)`."""
  import gymnax  # pylint: disable=g-import-not-at-top
  env, params = gymnax.make(config.env_id)
  net = make_network(env.action_space(params).n, config.activation)
  batch = config.num_envs * config.num_steps
  schedule = optax.linear_schedule(
      config.lr, 0., config.total_updates * config.update_epochs *
      config.num_minibatches)
  tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                   optax.adam(schedule, eps=1e-5))

  def loss_fn(p, tr, adv, targets):
    logits, value = net.apply(p, tr.obs)
    logp_all = jax.nn.log_softmax(logits)
    logp = jnp.take_along_axis(logp_all, tr.action[:, None], -1)[:, 0]
    v_clip = tr.value + jnp.clip(value - tr.value, -config.clip_eps,
                                 config.clip_eps)
    v_loss = 0.5 * jnp.maximum(jnp.square(value - targets),
                               jnp.square(v_clip - targets)).mean()
    ratio = jnp.exp(logp - tr.log_prob)
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    pg = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - config.clip_eps,
                                            1 + config.clip_eps) * adv).mean()
    ent = -(jnp.exp(logp_all) * logp_all).sum(-1).mean()
    return pg + config.vf_coef * v_loss - config.ent_coef * ent

  def env_step(carry, _):
    p, env_state, obs, ep_ret, key = carry
    key, k_act, k_env = jax.random.split(key, 3)
    logits, value = net.apply(p, obs)
    action = jax.random.categorical(k_act, logits)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None],
                               -1)[:, 0]
    # gymnax 1.x: (obs, state, reward, terminated, truncated, info), with
    # auto-reset; purejaxrl treats both ends alike.
    obs2, env_state, reward, term, trunc, _ = jax.vmap(
        env.step, in_axes=(0, 0, 0, None))(
            jax.random.split(k_env, config.num_envs), env_state, action,
            params)
    done = jnp.logical_or(term, trunc).astype(jnp.float32)
    ep_ret = ep_ret + reward
    finished = jnp.where(done, ep_ret, jnp.nan)
    ep_ret = jnp.where(done, 0., ep_ret)
    tr = Transition(done, action, value, reward, logp, obs)
    return (p, env_state, obs2, ep_ret, key), (tr, finished)

  def update(runner, _):
    p, opt_state, env_state, obs, ep_ret, key = runner
    (_, env_state, obs, ep_ret, key), (traj, finished) = jax.lax.scan(
        env_step, (p, env_state, obs, ep_ret, key), None, config.num_steps)
    _, last_value = net.apply(p, obs)

    def gae(carry, tr):
      adv, next_value = carry
      delta = tr.reward + config.gamma * next_value * (1 - tr.done) - tr.value
      adv = delta + config.gamma * config.gae_lambda * (1 - tr.done) * adv
      return (adv, tr.value), adv

    _, adv = jax.lax.scan(gae, (jnp.zeros_like(last_value), last_value),
                          traj, reverse=True)
    flat = jax.tree.map(lambda x: x.reshape((batch,) + x.shape[2:]),
                        (traj, adv, adv + traj.value))

    def epoch(carry, _):
      p, opt_state, key = carry
      key, k_perm = jax.random.split(key)
      perm = jax.random.permutation(k_perm, batch)
      mbs = jax.tree.map(lambda x: x[perm].reshape(
          (config.num_minibatches, -1) + x.shape[1:]), flat)

      def minibatch(carry, mb):
        p, opt_state = carry
        grads = jax.grad(loss_fn)(p, *mb)
        updates, opt_state = tx.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), None

      (p, opt_state), _ = jax.lax.scan(minibatch, (p, opt_state), mbs)
      return (p, opt_state, key), None

    (p, opt_state, key), _ = jax.lax.scan(
        epoch, (p, opt_state, key), None, config.update_epochs)
    return (p, opt_state, env_state, obs, ep_ret, key), jnp.nanmean(finished)

  def init(key):
    k_net, k_env, key = jax.random.split(key, 3)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(k_env, config.num_envs), params)
    p = net.init(k_net, obs)
    return (p, tx.init(p), env_state, obs, jnp.zeros(config.num_envs), key)

  def train(runner, num_updates: int):
    return jax.lax.scan(update, runner, None, num_updates)

  return init, train
