"""Advantage actor-critic (A2C) from RLax losses, as pure functions.

One agent = `A2CState(params, opt_state, actor, key)` where `actor` holds its
batch of environments. Every function is pure and unbatched over agents, so a
population of independent agents is `jax.vmap(update)`. The optimizer is any
`optax.GradientTransformation` (Adam, or a frozen learned optimizer).

The same `A2C` object is the inner agent of meta-training (`lopt.meta`): that
code only calls `init_params`, `init_actor`, `rollout` and `loss`.
"""

import dataclasses
import functools
from typing import Any, Callable, Dict, NamedTuple, Tuple

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import optax
import rlax

from agents import environments
from agents import networks
from agents import wrappers

Array = jax.Array


class Trajectory(NamedTuple):
  """A rollout, time-major: `[T, B, ...]` (`obs` has T + 1 steps)."""
  obs: Array
  actions: Array
  rewards: Array
  discounts: Array


class ActorState(NamedTuple):
  """The environments an agent acts in (batched over its `num_envs`).

  `env_state` is a `wrappers.EpisodeState`: it carries each env's running
  episode return, so rollouts report completed-episode returns.
  """
  env_state: Any
  obs: Array


class A2CState(NamedTuple):
  """Everything one A2C agent needs to continue training (saved as is)."""
  params: Any
  opt_state: Any
  actor: ActorState
  key: Array


@dataclasses.dataclass(frozen=True)
class A2CConfig:
  """A2C hyperparameters (paper values as defaults).

  Attributes:
    num_envs: environments per agent, stepped in parallel.
    rollout_len: environment steps per update (T).
    discount: gamma.
    td_lambda: lambda of the TD(lambda) advantage.
    critic_weight: weight of the value loss.
    entropy_weight: weight of the entropy bonus.
    reward_scale: rewards are multiplied by this inside the loss.
  """
  num_envs: int = 1
  rollout_len: int = 20
  discount: float = 0.995
  td_lambda: float = 0.95
  critic_weight: float = 0.5
  entropy_weight: float = 0.01
  reward_scale: float = 1.0

  def validate(self) -> None:
    for f in ('num_envs', 'rollout_len'):
      if int(getattr(self, f)) < 1:
        raise ValueError(f'{f}: must be an int >= 1, got {getattr(self, f)}')
    for f in ('discount', 'td_lambda'):
      if not 0. <= float(getattr(self, f)) <= 1.:
        raise ValueError(f'{f}: must be in [0, 1], got {getattr(self, f)}')
    for f in ('critic_weight', 'entropy_weight'):
      if float(getattr(self, f)) < 0:
        raise ValueError(f'{f}: must be >= 0, got {getattr(self, f)}')
    if not float(self.reward_scale) > 0:
      raise ValueError(f'reward_scale: must be > 0, got {self.reward_scale}')


class A2C(NamedTuple):
  """A2C agent functions (all pure; built once by `make_a2c`)."""
  config: A2CConfig
  env: environments.Environment
  network: hk.Transformed
  init_params: Callable[[Array], Any]
  init_actor: Callable[[Array], ActorState]
  rollout: Callable[..., Tuple[Trajectory, ActorState, Dict[str, Array]]]
  loss: Callable[[Any, Trajectory], Tuple[Array, Dict[str, Array]]]


def make_init_actor(env: environments.Environment, num_envs: int
                    ) -> Callable[[Array], ActorState]:
  """`init_actor(key)`: `num_envs` fresh environments (shared with PPO).

  `env` is wrapped in `wrappers.EpisodeReturns` unless it already is.
  """
  batch_reset = jax.vmap(wrappers.track_returns(env).reset)

  def init_actor(key):
    obs, env_state = batch_reset(jax.random.split(key, num_envs))
    return ActorState(env_state, obs)

  return init_actor


def check_args(where: str, **args) -> None:
  """rlax-style checks at a function's door: `name=(array, rank, kind)`.

  Asserts each array's rank and dtype kind (`float`, `int`, a dtype, or None
  for any) with a message naming the function and the argument, e.g.
  `[a2c_loss: v_t]`. Static (shapes and dtypes only): free under jit, and
  under vmap it sees the unbatched shapes.
  """
  for name, (x, rank, kind) in args.items():
    chex.assert_rank(x, rank, custom_message=f'{where}: {name}')
    if kind is not None:
      chex.assert_type(x, kind, custom_message=f'{where}: {name}')


def a2c_loss(logits_t: Array, v_t: Array, a_t: Array, r_t: Array,
             discount_t: Array, *, td_lambda: float, critic_weight: float,
             entropy_weight: float) -> Tuple[Array, Dict[str, Array]]:
  """A2C loss of one sequence (unbatched; callers vmap over envs).

    adv_t = TD(lambda) error with targets from v (stopped),
    L = pg(logits, a, stop_grad(adv)) + c * 0.5 * mean(adv^2) + e * (-H)

  Args:
    logits_t: `[T + 1, A]` policy logits; the last step only bootstraps.
    v_t: `[T + 1]` values.
    a_t: `[T]` actions taken.
    r_t: `[T]` rewards.
    discount_t: `[T]` discounts (0 at termination).
    td_lambda: lambda of the advantage.
    critic_weight: weight of the value loss.
    entropy_weight: weight of the entropy regulariser.

  Returns:
    (scalar loss, metrics).
  """
  check_args('a2c_loss', logits_t=(logits_t, 2, float), v_t=(v_t, 1, float),
             a_t=(a_t, 1, int), r_t=(r_t, 1, float),
             discount_t=(discount_t, 1, float))
  chex.assert_equal_shape([a_t, r_t, discount_t], custom_message=(
      'a2c_loss: a_t, r_t, discount_t must all be [T]'))
  bootstrap = 'need T + 1 steps (one more than r_t [T])'
  chex.assert_axis_dimension(logits_t, 0, r_t.shape[0] + 1,
                             custom_message=f'a2c_loss: logits_t {bootstrap}')
  chex.assert_shape(v_t, (r_t.shape[0] + 1,),
                    custom_message=f'a2c_loss: v_t {bootstrap}')
  adv_t = rlax.td_lambda(v_t[:-1], r_t, discount_t, v_t[1:],
                         jnp.asarray(td_lambda, jnp.float32))
  w_t = jnp.ones_like(r_t)
  pg_loss = rlax.policy_gradient_loss(logits_t[:-1], a_t, adv_t, w_t)
  critic_loss = 0.5 * jnp.mean(jnp.square(adv_t))
  entropy_loss = rlax.entropy_loss(logits_t[:-1], w_t)
  loss = pg_loss + critic_weight * critic_loss + entropy_weight * entropy_loss
  return loss, {'pg_loss': pg_loss, 'critic_loss': critic_loss,
                'entropy': -entropy_loss}


def make_a2c(env: environments.Environment,
             network: networks.NetworkConfig,
             config: A2CConfig = A2CConfig()) -> A2C:
  """Builds the A2C functions for `env` with an actor-critic `network`."""
  config.validate()
  if getattr(env, 'continuous', False):
    raise ValueError(f'env_name: A2C needs discrete actions; {env.name} is '
                     'continuous (use agent=ppo)')
  net = networks.make_actor_critic(env.num_actions, env.observation_shape,
                                   network)
  env = wrappers.track_returns(env)  # rollouts report episode returns
  batch_step = jax.vmap(env.step_drawn)
  init_actor = make_init_actor(env, config.num_envs)

  def init_params(key):
    return net.init(key, jnp.zeros(env.observation_shape, jnp.float32))

  def rollout_draws(key):
    """Every random draw of a rollout, made before its loop (`draws[T]`).

    Step t's key is `split(key, T)[t]`, split into `key_act` (the action:
    `categorical(key_act, logits)` is `argmax(logits + gumbel(key_act))`)
    and `key_env`, split once per env for `env.step`. Drawn here in one
    call per kind, the loop body draws nothing: the same numbers, while on
    XLA:CPU each PRNG call inside a loop costs a loop of its own per step.
    """
    key_act, key_env = jnp.moveaxis(
        jax.vmap(jax.random.split)(jax.random.split(key, config.rollout_len)),
        1, 0)
    gumbel = jax.vmap(lambda k: jax.random.gumbel(
        k, (config.num_envs, env.num_actions)))(key_act)
    env_keys = jax.vmap(lambda k: jax.random.split(k, config.num_envs))(
        key_env)
    return gumbel, jax.vmap(jax.vmap(env.draw))(env_keys)

  def rollout(params, actor: ActorState, key):
    """`rollout_len` steps of all envs; returns (traj, actor, metrics)."""

    def step(carry, draws):
      actor, episodes = carry
      gumbel, env_draws = draws
      logits, _ = net.apply(params, actor.obs)
      action = jnp.argmax(logits + gumbel, axis=-1)
      obs, env_state, reward, term, trunc, info = batch_step(
          env_draws, actor.env_state, action)
      done = jnp.logical_or(term, trunc)
      new_actor = ActorState(env_state, obs)
      out = (actor.obs, action, reward,
             1. - done.astype(jnp.float32))
      return (new_actor, episodes.add(info)), out

    params = jax.lax.stop_gradient(params)
    init = (actor, wrappers.no_episodes())
    (actor, episodes), (obs, actions, rewards, discounts) = (
        jax.lax.scan(step, init, rollout_draws(key)))
    obs = jnp.concatenate([obs, actor.obs[None]], axis=0)
    traj = Trajectory(obs, actions, rewards, discounts)
    # return_sum, episodes: the episodes that ended (raw env rewards).
    metrics = {**episodes._asdict(), 'reward_sum': jnp.sum(rewards)}
    return traj, actor, metrics

  def loss(params, traj: Trajectory):
    logits, values = net.apply(params, traj.obs)
    seq_loss = jax.vmap(
        functools.partial(a2c_loss, td_lambda=config.td_lambda,
                          critic_weight=config.critic_weight,
                          entropy_weight=config.entropy_weight),
        in_axes=1)
    losses, metrics = seq_loss(
        logits, values, traj.actions, traj.rewards * config.reward_scale,
        config.discount * traj.discounts)
    return jnp.mean(losses), jax.tree.map(jnp.mean, metrics)

  return A2C(config, env, net, init_params, init_actor, rollout, loss)


def init_state(agent: A2C, optimizer: optax.GradientTransformation,
               key: Array) -> A2CState:
  key_params, key_actor, key = jax.random.split(key, 3)
  params = agent.init_params(key_params)
  return A2CState(params, optimizer.init(params), agent.init_actor(key_actor),
                  key)


def update(agent: A2C, optimizer: optax.GradientTransformation,
           state: A2CState) -> Tuple[A2CState, Dict[str, Array]]:
  """One A2C update: roll out, take the loss gradient, apply `optimizer`."""
  key, key_rollout = jax.random.split(state.key)
  traj, actor, metrics = agent.rollout(state.params, state.actor, key_rollout)
  grads, loss_metrics = jax.grad(agent.loss, has_aux=True)(state.params, traj)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics.update(loss_metrics)
  return A2CState(params, opt_state, actor, key), metrics


def make_train(agent: A2C, optimizer: optax.GradientTransformation,
               num_updates: int) -> Callable[[A2CState], Any]:
  """`train(state) -> (state, metrics[num_updates])`: many updates, one call.

  Not jitted here, so that callers can vmap it (many seeds) before jitting.
  """

  def train(state: A2CState):
    return jax.lax.scan(lambda s, _: update(agent, optimizer, s), state,
                        None, length=num_updates)

  return train
