"""Proximal policy optimization (PPO) from RLax losses, as pure functions.

One agent = `PPOState(params, opt_state, actor, obs_stats, key)`. An update
rolls out `unroll_len` steps of `num_envs` environments, updates the running
observation statistics, computes truncated GAE advantages, then runs
`num_epochs` x `num_minibatches` optimizer steps on the clipped surrogate
loss (nested `lax.scan`s). The optimizer is any `optax.GradientTransformation`,
including a frozen learned optimizer.

Policies: a Gaussian with tanh squashing for continuous actions (Brax), a
categorical for discrete ones (gymnax), chosen once by `make_policy`. The
trajectory stores the pre-tanh sample, so log-probabilities need no atanh.
"""

import dataclasses
from typing import Any, Callable, Dict, NamedTuple, Tuple

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
import rlax

from agents import a2c
from agents import environments
from agents import wrappers

Array = jax.Array
_LOG_2PI = float(np.log(2. * np.pi))
# Hidden-layer nonlinearities a PPOConfig may name.
ACTIVATIONS = {'swish': jax.nn.swish, 'relu': jax.nn.relu, 'tanh': jnp.tanh}


@dataclasses.dataclass(frozen=True)
class PPOConfig:
  """PPO hyperparameters (defaults: the paper's Brax settings).

  Attributes:
    num_envs: environments stepped in parallel.
    unroll_len: environment steps per update (T).
    num_minibatches: minibatches per epoch (num_envs * T must divide).
    num_epochs: passes over each batch.
    clip_eps: PPO ratio clipping.
    entropy_weight: weight of the entropy bonus.
    value_weight: weight of the value loss.
    discount: gamma.
    gae_lambda: lambda of GAE.
    reward_scale: rewards are multiplied by this inside the loss.
    normalize_obs: normalize observations with running statistics.
    policy_hidden: policy MLP widths.
    value_hidden: value MLP widths.
    activation: hidden-layer nonlinearity, one of `ACTIVATIONS`.
    orthogonal_init: orthogonal weights (gain sqrt(2) on hidden layers, 0.01
      on the policy head, 1 on the value head) and zero biases, as
      purejaxrl's and CleanRL's PPO; False keeps Haiku's default init.
  """
  num_envs: int = 4096
  unroll_len: int = 5
  num_minibatches: int = 32
  num_epochs: int = 4
  clip_eps: float = 0.3
  entropy_weight: float = 1e-2
  value_weight: float = 0.5
  discount: float = 0.97
  gae_lambda: float = 0.95
  reward_scale: float = 10.
  normalize_obs: bool = True
  policy_hidden: Tuple[int, ...] = (32, 32, 32, 32)
  value_hidden: Tuple[int, ...] = (256, 256, 256, 256, 256)
  activation: str = 'swish'
  orthogonal_init: bool = False

  def validate(self) -> None:
    if self.activation not in ACTIVATIONS:
      raise ValueError(f'activation: unknown {self.activation!r}; allowed: '
                       f'{sorted(ACTIVATIONS)}')
    for f in ('num_envs', 'unroll_len', 'num_minibatches', 'num_epochs'):
      if int(getattr(self, f)) < 1:
        raise ValueError(f'{f}: must be an int >= 1, got {getattr(self, f)}')
    if (self.num_envs * self.unroll_len) % self.num_minibatches:
      raise ValueError(
          f'num_minibatches: {self.num_minibatches} does not divide the '
          f'batch num_envs * unroll_len = {self.num_envs * self.unroll_len}')
    for f in ('discount', 'gae_lambda'):
      if not 0. <= float(getattr(self, f)) <= 1.:
        raise ValueError(f'{f}: must be in [0, 1], got {getattr(self, f)}')
    if not float(self.clip_eps) > 0:
      raise ValueError(f'clip_eps: must be > 0, got {self.clip_eps}')
    if not float(self.reward_scale) > 0:
      raise ValueError(f'reward_scale: must be > 0, got {self.reward_scale}')


class ObsStats(NamedTuple):
  """Running mean and variance (Welford / Chan parallel update)."""
  count: Array
  mean: Array
  m2: Array


class Transition(NamedTuple):
  """A rollout, time-major `[T, B, ...]`."""
  obs: Array          # raw observations at t
  action: Array       # pre-tanh sample (continuous) or action index
  log_prob: Array     # log-prob under the behaviour policy
  value: Array
  reward: Array
  discount: Array     # 0 where the episode terminated at t + 1
  truncated: Array


class PPOState(NamedTuple):
  params: Any
  opt_state: Any
  actor: a2c.ActorState
  obs_stats: ObsStats
  key: Array


class PPO(NamedTuple):
  """PPO agent functions (all pure; built once by `make_ppo`)."""
  config: PPOConfig
  env: environments.Environment
  network: hk.Transformed
  init_params: Callable[[Array], Any]
  init_actor: Callable[[Array], a2c.ActorState]
  rollout: Callable[..., Tuple[Transition, a2c.ActorState, Dict[str, Array]]]
  advantages: Callable[[Transition, Array], Tuple[Array, Array]]
  loss: Callable[..., Tuple[Array, Dict[str, Array]]]
  observe: Callable[[ObsStats, Array], Array]
  # act(params, stats, obs, key, deterministic=False) -> env actions: the
  # policy for evaluation or deployment (tanh(mean) when deterministic).
  act: Callable[..., Array]


def update_stats(stats: ObsStats, obs: Array) -> ObsStats:
  """Merges a batch `[..., *obs_shape]` into the running statistics."""
  x = obs.reshape((-1,) + stats.mean.shape)
  n = x.shape[0]
  batch_mean = jnp.mean(x, axis=0)
  batch_m2 = jnp.sum(jnp.square(x - batch_mean), axis=0)
  count = stats.count + n
  delta = batch_mean - stats.mean
  mean = stats.mean + delta * n / count
  m2 = stats.m2 + batch_m2 + jnp.square(delta) * stats.count * n / count
  return ObsStats(count, mean, m2)


def normalize(stats: ObsStats, obs: Array) -> Array:
  var = stats.m2 / jnp.maximum(stats.count, 1.)
  return jnp.clip((obs - stats.mean) / jnp.sqrt(var + 1e-8), -5., 5.)


def _gaussian_log_prob(u, mean, log_std):
  return jnp.sum(-0.5 * jnp.square((u - mean) / jnp.exp(log_std)) - log_std
                 - 0.5 * _LOG_2PI, axis=-1)


def _tanh_correction(u):
  # log |d tanh(u) / du| = log(1 - tanh(u)^2), in a stable form.
  return jnp.sum(2. * (jnp.log(2.) - u - jax.nn.softplus(-2. * u)), axis=-1)


class Policy(NamedTuple):
  """An action distribution on the policy head's outputs `out[..., D]`.

  Chosen once per agent (as acme's `make_tanh_normal_ppo_networks` and
  `make_categorical_ppo_networks`); the PPO functions never branch on it.

  Attributes:
    num_outputs: D, the policy head's width.
    action_shape: shape of one stored action.
    action_kind: dtype kind of a stored action (`float` or `int`).
    log_prob: `(out, stored action) -> log-prob`.
    entropy: `out -> entropy`.
    sample: `(key, out) -> (stored action, env action, log-prob)`.
    mode: `out -> env action` of the deterministic policy.
  """
  num_outputs: int
  action_shape: Tuple[int, ...]
  action_kind: type
  log_prob: Callable[[Array, Array], Array]
  entropy: Callable[[Array], Array]
  sample: Callable[[Array, Array], Tuple[Array, Array, Array]]
  mode: Callable[[Array], Array]


def tanh_normal_policy(action_size: int) -> Policy:
  """Gaussian squashed by tanh, for continuous actions in [-1, 1].

    u ~ N(mean, std), std = softplus(raw) + 1e-3, env action = tanh(u),
    log pi(tanh(u)) = log N(u; mean, std) - sum log(1 - tanh(u)^2).

  The stored action is the pre-tanh sample u (no atanh needed); the entropy
  is the Gaussian's, before squashing.
  """

  def dist_params(out):
    mean, raw_std = jnp.split(out, 2, axis=-1)
    return mean, jnp.log(jax.nn.softplus(raw_std) + 1e-3)

  def log_prob(out, u):
    mean, log_std = dist_params(out)
    return _gaussian_log_prob(u, mean, log_std) - _tanh_correction(u)

  def entropy(out):
    _, log_std = dist_params(out)
    return jnp.sum(log_std + 0.5 * (1. + _LOG_2PI), axis=-1)

  def sample(key, out):
    mean, log_std = dist_params(out)
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    return u, jnp.tanh(u), log_prob(out, u)

  def mode(out):
    return jnp.tanh(dist_params(out)[0])

  return Policy(2 * action_size, (action_size,), float, log_prob, entropy,
                sample, mode)


def categorical_policy(num_actions: int) -> Policy:
  """Softmax over `num_actions` logits, for discrete actions."""

  def log_prob(out, a):
    return jnp.take_along_axis(jax.nn.log_softmax(out), a[..., None],
                               axis=-1)[..., 0]

  def entropy(out):
    return -jnp.sum(jax.nn.softmax(out) * jax.nn.log_softmax(out), axis=-1)

  def sample(key, out):
    a = jax.random.categorical(key, out)
    return a, a, log_prob(out, a)

  def mode(out):
    return jnp.argmax(out, axis=-1)

  return Policy(num_actions, (), int, log_prob, entropy, sample, mode)


def make_policy(env: environments.Environment) -> Policy:
  """Tanh-Gaussian for a continuous `env`, categorical for a discrete one."""
  if getattr(env, 'continuous', False):
    return tanh_normal_policy(env.action_size)
  return categorical_policy(env.num_actions)


def make_ppo(env: environments.Environment,
             config: PPOConfig = PPOConfig()) -> PPO:
  """Builds the PPO functions for `env` (continuous or discrete actions)."""
  config.validate()
  policy = make_policy(env)
  sample = policy.sample

  activation = ACTIVATIONS[config.activation]

  def mlp(hidden, outputs, head_gain, name):
    if not config.orthogonal_init:
      return hk.nets.MLP(tuple(hidden) + (outputs,), activation=activation,
                         name=name)
    # Hidden layers keep the activations' scale (gain sqrt 2); a small
    # policy head starts near the uniform policy.
    orth = hk.initializers.Orthogonal

    def apply(x):
      with hk.name_scope(name):
        for width in hidden:
          x = activation(hk.Linear(width, w_init=orth(np.sqrt(2.)))(x))
        return hk.Linear(outputs, w_init=orth(head_gain))(x)

    return apply

  def forward(obs):
    x = obs.reshape(obs.shape[:obs.ndim - len(env.observation_shape)] +
                    (-1,))
    out = mlp(config.policy_hidden, policy.num_outputs, 0.01, 'policy')(x)
    value = mlp(config.value_hidden, 1, 1., 'value')(x)[..., 0]
    return out, value

  net = hk.without_apply_rng(hk.transform(forward))

  def observe(stats, obs):
    return normalize(stats, obs) if config.normalize_obs else obs

  def act(params, stats, obs, key, deterministic=False):
    out, _ = net.apply(params, observe(stats, obs))
    if deterministic:
      return policy.mode(out)
    return sample(key, out)[1]

  env = wrappers.track_returns(env)  # rollouts report episode returns
  batch_step = jax.vmap(env.step)
  init_actor = a2c.make_init_actor(env, config.num_envs)

  def init_params(key):
    return net.init(key, jnp.zeros(env.observation_shape, jnp.float32))

  def rollout(params, actor, stats, key):
    """`unroll_len` steps of all envs: (traj, actor, metrics)."""
    params = jax.lax.stop_gradient(params)

    def step(carry, key):
      actor, episodes = carry
      k_act, k_env = jax.random.split(key)
      out, value = net.apply(params, observe(stats, actor.obs))
      stored, env_action, logp = sample(k_act, out)
      obs, env_state, reward, term, trunc, info = batch_step(
          jax.random.split(k_env, config.num_envs), actor.env_state,
          env_action)
      tr = Transition(actor.obs, stored, logp, value,
                      jnp.asarray(reward, jnp.float32),
                      1. - term.astype(jnp.float32),
                      trunc.astype(jnp.float32))
      return (a2c.ActorState(env_state, obs), episodes.add(info)), tr

    (actor, episodes), traj = jax.lax.scan(
        step, (actor, wrappers.no_episodes()),
        jax.random.split(key, config.unroll_len))
    # return_sum, episodes: the episodes that ended (raw env rewards).
    return traj, actor, episodes._asdict()

  def advantages(traj: Transition, last_value: Array):
    """Truncated GAE per env, `[T, B]` advantages and value targets.

    Termination zeroes the bootstrap. A truncated step (auto-reset, so the
    observation it led to is lost) cannot be bootstrapped: its advantage is
    0 and its target its own value, and the trace is cut there. rlax does
    this with reward := value and discount := 0 at that step.

    Args:
      traj: a rollout; `value`, `reward`, `discount`, `truncated` are float
        `[T, B]`.
      last_value: `[B]` values of the observations after the rollout.
    """
    a2c.check_args(
        'ppo.advantages', last_value=(last_value, 1, float),
        **{f'traj.{f}': (getattr(traj, f), 2, float)
           for f in ('value', 'reward', 'discount', 'truncated')})
    chex.assert_equal_shape(
        [traj.value, traj.reward, traj.discount, traj.truncated],
        custom_message='ppo.advantages: traj.value, traj.reward, '
        'traj.discount, traj.truncated must all be [T, B]')
    chex.assert_shape(last_value, traj.value.shape[1:],
                      custom_message='ppo.advantages: last_value must be [B]')
    values = jnp.concatenate([traj.value, last_value[None]], axis=0)
    truncated = traj.truncated > 0
    discount = jnp.where(truncated, 0., config.discount * traj.discount)
    reward = jnp.where(truncated, traj.value,
                       traj.reward * config.reward_scale)
    gae = jax.vmap(rlax.truncated_generalized_advantage_estimation,
                   in_axes=(1, 1, None, 1), out_axes=1)
    adv = gae(reward, discount, config.gae_lambda, values)
    return adv, adv + traj.value

  def loss(params, stats, batch):
    """Clipped surrogate + value + entropy loss of a flat minibatch.

    Args:
      params: network parameters.
      stats: observation statistics.
      batch: `(traj, adv, target)` flattened to N samples: `traj.obs`
        `[N, *obs_shape]`, `traj.action` `[N, *action_shape]`,
        `traj.log_prob`, `adv`, `target` float `[N]`.
    """
    traj, adv, target = batch
    a2c.check_args('ppo.loss', adv=(adv, 1, float), target=(target, 1, float),
                   **{'traj.log_prob': (traj.log_prob, 1, float),
                      'traj.action': (traj.action,
                                      1 + len(policy.action_shape),
                                      policy.action_kind)})
    chex.assert_equal_shape([adv, target, traj.log_prob], custom_message=(
        'ppo.loss: adv, target, traj.log_prob must all be [N]'))
    chex.assert_shape(traj.action, adv.shape + policy.action_shape,
                      custom_message='ppo.loss: traj.action must be '
                      f'[N, *{policy.action_shape}]')
    chex.assert_shape(traj.obs, adv.shape + tuple(env.observation_shape),
                      custom_message='ppo.loss: traj.obs must be '
                      f'[N, *{tuple(env.observation_shape)}]')
    out, value = net.apply(params, observe(stats, traj.obs))
    ratio = jnp.exp(policy.log_prob(out, traj.action) - traj.log_prob)
    adv = (adv - jnp.mean(adv)) / (jnp.std(adv) + 1e-8)
    pg = rlax.clipped_surrogate_pg_loss(ratio, adv, config.clip_eps)
    value_loss = 0.5 * jnp.mean(jnp.square(value - target))
    ent = jnp.mean(policy.entropy(out))
    total = pg + config.value_weight * value_loss - config.entropy_weight * ent
    return total, {'pg_loss': pg, 'value_loss': value_loss, 'entropy': ent}

  return PPO(config, env, net, init_params, init_actor, rollout, advantages,
             loss, observe, act)


def init_state(agent: PPO, optimizer: optax.GradientTransformation,
               key: Array) -> PPOState:
  key_params, key_actor, key = jax.random.split(key, 3)
  params = agent.init_params(key_params)
  shape = agent.env.observation_shape
  stats = ObsStats(jnp.zeros(()), jnp.zeros(shape), jnp.zeros(shape))
  return PPOState(params, optimizer.init(params),
                  agent.init_actor(key_actor), stats, key)


def update(agent: PPO, optimizer: optax.GradientTransformation,
           state: PPOState) -> Tuple[PPOState, Dict[str, Array]]:
  """Roll out, then num_epochs x num_minibatches optimizer steps."""
  c = agent.config
  key, k_rollout, k_perm = jax.random.split(state.key, 3)
  traj, actor, metrics = agent.rollout(state.params, state.actor,
                                       state.obs_stats, k_rollout)
  stats = (update_stats(state.obs_stats, traj.obs) if c.normalize_obs
           else state.obs_stats)
  _, last_value = agent.network.apply(state.params,
                                      agent.observe(stats, actor.obs))
  adv, target = agent.advantages(traj, last_value)
  size = c.num_envs * c.unroll_len
  batch = jax.tree.map(lambda x: x.reshape((size,) + x.shape[2:]),
                       (traj, adv, target))

  def epoch(carry, key):
    perm = jax.random.permutation(key, size)
    minibatches = jax.tree.map(
        lambda x: x[perm].reshape((c.num_minibatches, -1) + x.shape[1:]),
        batch)

    def sgd_step(carry, minibatch):
      params, opt_state = carry
      grads, m = jax.grad(agent.loss, has_aux=True)(params, stats, minibatch)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), m

    return jax.lax.scan(sgd_step, carry, minibatches)

  (params, opt_state), loss_metrics = jax.lax.scan(
      epoch, (state.params, state.opt_state),
      jax.random.split(k_perm, c.num_epochs))
  metrics.update(jax.tree.map(jnp.mean, loss_metrics))
  return PPOState(params, opt_state, actor, stats, key), metrics


def make_train(agent: PPO, optimizer: optax.GradientTransformation,
               num_updates: int):
  """`train(state) -> (state, metrics[num_updates])` (not jitted here)."""

  def train(state: PPOState):
    return jax.lax.scan(lambda s, _: update(agent, optimizer, s), state,
                        None, length=num_updates)

  return train


class InnerActor(NamedTuple):
  """A PPO agent's environments plus its observation statistics."""
  actor: a2c.ActorState
  obs_stats: ObsStats


class PPOBatch(NamedTuple):
  """One rollout with its advantages and value targets, flattened."""
  traj: Transition
  advantages: Array
  targets: Array
  obs_stats: ObsStats


class InnerAgent(NamedTuple):
  """PPO as an inner agent of `lopt.meta` (one full-batch step per update)."""
  init_params: Callable[[Array], Any]
  init_actor: Callable[[Array], InnerActor]
  rollout: Callable[..., Tuple[PPOBatch, InnerActor, Dict[str, Array]]]
  loss: Callable[[Any, PPOBatch], Tuple[Array, Dict[str, Array]]]


def inner_agent(agent: PPO) -> InnerAgent:
  """Wraps a PPO agent for meta-training: rollout -> batch, loss(batch).

  Each inner update is one gradient step on the whole rollout (the clipped
  surrogate with the behaviour policy's log-probs), so the learned optimizer
  sees PPO's gradients while the meta-gradient stays affordable. Its
  meta-loss head is `lopt.meta_losses.rollout_loss` (name 'ppo'): the
  clipped-surrogate loss on a fresh rollout, from these two functions.
  """
  c = agent.config

  def init_actor(key):
    shape = agent.env.observation_shape
    return InnerActor(agent.init_actor(key), ObsStats(
        jnp.zeros(()), jnp.zeros(shape), jnp.zeros(shape)))

  def rollout(params, inner: InnerActor, key):
    traj, actor, metrics = agent.rollout(params, inner.actor,
                                         inner.obs_stats, key)
    stats = (update_stats(inner.obs_stats, traj.obs) if c.normalize_obs
             else inner.obs_stats)
    _, last_value = agent.network.apply(jax.lax.stop_gradient(params),
                                        agent.observe(stats, actor.obs))
    adv, target = agent.advantages(traj, last_value)
    size = c.num_envs * c.unroll_len
    flat = jax.tree.map(lambda x: x.reshape((size,) + x.shape[2:]),
                        (traj, adv, target))
    return PPOBatch(*flat, stats), InnerActor(actor, stats), metrics

  def loss(params, batch: PPOBatch):
    return agent.loss(params, batch.obs_stats,
                      (batch.traj, batch.advantages, batch.targets))

  return InnerAgent(agent.init_params, init_actor, rollout, loss)
