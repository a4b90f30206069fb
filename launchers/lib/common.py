"""Shared launcher pieces: config -> objects, validation, progress, outputs.

The one config -> env / agent / optimizer factory (`make_env`, `make_agent`,
`make_optimizer`) serves training, evaluation and meta-training alike.
Everything here runs on the host before compiling (validation) or between
jitted calls (logging, CSV, plots); nothing here is traced.
"""

import csv
import functools
import json
import os
import time
from typing import Any, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from agents import a2c
from agents import brax_envs
from agents import environments
from agents import networks
from agents import ppo
from agents import wrappers
import lopt

# Named optax optimizers train.py accepts, with their learning rate argument
# (and Adam with a step that adapts itself over the run, lopt.step_adaptation:
# at its default constants, and with the cosine in units of chance, its two
# constants chosen on the ES mix, docs/results/es).
OPTAX_OPTIMIZERS = {
    'adam': optax.adam,
    'adamw': optax.adamw,
    'rmsprop': optax.rmsprop,
    'sgd': optax.sgd,
    'lion': optax.lion,
    'adabelief': optax.adabelief,
    'radam': optax.radam,
    'nadam': optax.nadam,
    'yogi': optax.yogi,
    'adagrad': optax.adagrad,
    'adam_step_adapted': lopt.step_adaptation.adam,
    'adam_step_adapted_z': functools.partial(
        lopt.step_adaptation.adam, beta=0.015, target_cosine=0.8,
        standardize=True),
    # The gradient compared with the decayed sum of ~H past directions.
    'adam_step_adapted_h10': functools.partial(
        lopt.step_adaptation.adam, target_cosine=0., horizon=10.),
    'adam_step_adapted_h100': functools.partial(
        lopt.step_adaptation.adam, target_cosine=0., horizon=100.),
    # The same, adapting over the first 10% of the run only (then held,
    # so the rate's annealing is not undone).
    'adam_step_calibrated': functools.partial(
        lopt.step_adaptation.adam, **lopt.step_adaptation.CALIBRATED),
    # The same with one step per network (a PPO agent's policy and value).
    'adam_step_calibrated_split': functools.partial(
        lopt.step_adaptation.adam, **lopt.step_adaptation.CALIBRATED,
        group_by=lopt.step_adaptation.by_network),
    # The same comparing the gradient with directions at least one agent
    # update old (`delay` = the update's optimizer steps, given by
    # make_optimizer), not those taken on its own batch.
    'adam_step_calibrated_delayed': functools.partial(
        lopt.step_adaptation.adam, **lopt.step_adaptation.CALIBRATED),
}
# Those of OPTAX_OPTIMIZERS that take the run's length (`total_steps`).
OPTAX_LIFETIME_AWARE = ('adam_step_calibrated', 'adam_step_calibrated_split',
                        'adam_step_calibrated_delayed')
# Those that take the optimizer steps of one agent update (as `delay`).
OPTAX_UPDATE_AWARE = ('adam_step_calibrated_delayed',)
# Learned-optimizer cells usable untrained (fresh meta-params from the seed).
LEARNED_CELLS = tuple(sorted(lopt.cells.CELLS))
# A shipped optimizer's learned direction under adam_step_calibrated's step
# rule: '<shipped name>_calibrated' (lifetime-aware: takes total_steps).
CALIBRATED = '_calibrated'
CALIBRATED_NAMES = tuple(n + CALIBRATED for n in lopt.pretrained_lib.names())
# 'learned' loads meta-params (and the cell config) from a file; the
# optimizers shipped in lopt/pretrained load by their name.
OPTIMIZER_NAMES = (tuple(sorted(OPTAX_OPTIMIZERS)) + LEARNED_CELLS +
                   ('learned',) + lopt.pretrained_lib.names() +
                   CALIBRATED_NAMES)


# Learning-rate schedules a config may name (`optimizer.lr_schedule`): the
# rate goes from `learning_rate` to `learning_rate * lr_end` over the run.
LR_SCHEDULES = ('constant', 'linear', 'cosine')


def check_lr_schedule(schedule: str, end: float, field: str) -> None:
  if schedule not in LR_SCHEDULES:
    raise ValueError(f'{field}.lr_schedule: unknown schedule {schedule!r}; '
                     f'allowed: {list(LR_SCHEDULES)}')
  if not 0. <= float(end) <= 1.:
    raise ValueError(f'{field}.lr_end: must be in [0, 1] (a fraction of the '
                     f'learning rate), got {end}')


def make_learning_rate(learning_rate: float, schedule: str = 'constant',
                       end: float = 0., total_steps: int = 1):
  """A float for 'constant', else an `optax.Schedule` over `total_steps`
  optimizer steps, from `learning_rate` to `learning_rate * end`."""
  lr = float(learning_rate)
  if schedule == 'constant':
    return lr
  if schedule == 'linear':
    return optax.linear_schedule(lr, lr * end, int(total_steps))
  return optax.cosine_decay_schedule(lr, int(total_steps), alpha=end)


def optimizer_steps_per_update(cfg) -> int:
  """Optimizer steps one agent update takes (PPO: epochs x minibatches)."""
  if cfg.get('agent', 'a2c') == 'ppo':
    return int(cfg.ppo.num_epochs) * int(cfg.ppo.num_minibatches)
  return 1


def check_optimizer_config(opt_cfg) -> None:
  """Validates `config.optimizer` (name, learning rate, file) on the host."""
  if opt_cfg.name not in OPTIMIZER_NAMES:
    raise ValueError(f'optimizer.name: unknown optimizer {opt_cfg.name!r}; '
                     f'allowed: {list(OPTIMIZER_NAMES)}')
  lopt.optimizer.check_learning_rate(opt_cfg.learning_rate,
                                     'optimizer.learning_rate')
  check_lr_schedule(opt_cfg.get('lr_schedule', 'constant'),
                    opt_cfg.get('lr_end', 0.), 'optimizer')
  if float(opt_cfg.get('max_grad_norm', 0.)) < 0:
    raise ValueError('optimizer.max_grad_norm: must be >= 0 (0 = no clip), '
                     f'got {opt_cfg.max_grad_norm}')
  if opt_cfg.name == 'learned':
    if not opt_cfg.get('meta_params_path'):
      raise ValueError("optimizer.meta_params_path: required when "
                       "optimizer.name='learned'")
    lopt.serialization.load(opt_cfg.meta_params_path)  # raises if bad


def make_optimizer(opt_cfg, seed: int = 0,
                   total_steps: Optional[int] = None,
                   steps_per_update: Optional[int] = None
                   ) -> optax.GradientTransformation:
  """Builds the optimizer named by `config.optimizer` (validated first).

  The learning rate is a float, or (with `optimizer.lr_schedule`) an optax
  schedule over `total_steps` optimizer steps (1 if None), for optax's
  optimizers and the learned ones alike. A learned optimizer also gets
  `total_steps` as its run length: one whose cell has the training-progress
  input (`CellConfig.progress_input`) needs it and refuses None, the others
  ignore it. `steps_per_update` (the agent's optimizer steps per update,
  `optimizer_steps_per_update`) is needed by the OPTAX_UPDATE_AWARE ones.
  """
  check_optimizer_config(opt_cfg)
  lr = make_learning_rate(opt_cfg.learning_rate,
                          opt_cfg.get('lr_schedule', 'constant'),
                          opt_cfg.get('lr_end', 0.),
                          1 if total_steps is None else total_steps)
  name = opt_cfg.name
  if name in OPTAX_OPTIMIZERS:
    kwargs = {}
    if name in OPTAX_LIFETIME_AWARE:
      kwargs['total_steps'] = total_steps
    if name in OPTAX_UPDATE_AWARE:
      if steps_per_update is None or int(steps_per_update) < 1:
        raise ValueError(f'steps_per_update: {name} needs the optimizer '
                         'steps of one agent update (an int >= 1), got '
                         f'{steps_per_update}')
      kwargs['delay'] = int(steps_per_update)
    opt = OPTAX_OPTIMIZERS[name](lr, **kwargs)
  elif name == 'learned':
    lo, meta_params = lopt.serialization.load(opt_cfg.meta_params_path)
    opt = lo.opt_fn(meta_params, learning_rate=lr, total_steps=total_steps)
  elif name in CALIBRATED_NAMES:
    lo, meta_params = lopt.pretrained_lib.load(name[:-len(CALIBRATED)])
    opt = optax.chain(
        lopt.step_adaptation.step_adapted(
            lo.direction_fn(meta_params, total_steps),
            total_steps=total_steps, **lopt.step_adaptation.CALIBRATED),
        optax.scale_by_learning_rate(lr))
  elif name in lopt.pretrained_lib.names():
    # lopt.pretrained(name, lr), with the run length passed on.
    lo, meta_params = lopt.pretrained_lib.load(name)
    opt = lo.opt_fn(meta_params, learning_rate=lr, total_steps=total_steps)
  else:
    lo = lopt.learned_optimizer(learning_rate=lr, cell=name)
    opt = lo.opt_fn(lo.init(jax.random.PRNGKey(seed)),
                    total_steps=total_steps)
  clip = float(opt_cfg.get('max_grad_norm', 0.))
  return optax.chain(optax.clip_by_global_norm(clip), opt) if clip else opt


def network_config(env_name: str, net) -> networks.NetworkConfig:
  """`net` (a config's `network` field), or the paper's network if unset."""
  if net is None or not net.get('torso'):
    return networks.paper_network(env_name)
  return networks.NetworkConfig(
      torso=net.torso, hidden_sizes=tuple(net.hidden_sizes),
      conv_channels=tuple(net.conv_channels), kernel=int(net.kernel))


def _section(cfg, name: str, reward_scale: Optional[float]) -> dict:
  """A config section's fields (sequences as tuples), reward_scale overridden
  when given (meta-training sets it per task)."""
  fields = {k: (tuple(v) if isinstance(v, (list, tuple)) else v)
            for k, v in cfg[name].items()}
  if reward_scale is not None:
    fields['reward_scale'] = float(reward_scale)
  return fields


def a2c_config(cfg, reward_scale: Optional[float] = None) -> a2c.A2CConfig:
  conf = a2c.A2CConfig(**_section(cfg, 'a2c', reward_scale))
  conf.validate()
  return conf


def ppo_config(cfg, reward_scale: Optional[float] = None) -> ppo.PPOConfig:
  if 'ppo' not in cfg:
    raise ValueError('ppo: agent=ppo needs a ppo section (see '
                     'configs/ppo_brax.py or configs/meta_ppo_brax.py)')
  conf = ppo.PPOConfig(**_section(cfg, 'ppo', reward_scale))
  conf.validate()
  return conf


AGENTS = {'a2c': a2c, 'ppo': ppo}


def env_options(cfg, env_name: str) -> Dict[str, Any]:
  """The environment options a config sets, checked by field name.

  `episode_length` (0: the env's own; Brax envs only, as the others have a
  fixed length) and `reset_mode` ('': the env's default; Brax envs only,
  ignored by the others).
  """
  options = {}
  length = cfg.get('episode_length', 0)
  if length:
    if int(length) != length or int(length) < 1:
      raise ValueError("episode_length: must be 0 (the env's own) or an int "
                       f'>= 1, got {length}')
    if env_name not in brax_envs.BRAX_ENVS:
      raise ValueError(
          f'episode_length: {env_name} has a fixed episode length, so it must '
          f'be 0; got {length} (settable for {list(brax_envs.BRAX_ENVS)})')
    options['episode_length'] = int(length)
  mode = cfg.get('reset_mode', '')
  if mode:
    if mode not in brax_envs.RESET_MODES:
      raise ValueError(f'reset_mode: unknown {mode!r}; allowed: '
                       f"{list(brax_envs.RESET_MODES)} ('' = the default)")
    if env_name in brax_envs.BRAX_ENVS:
      options['reset_mode'] = mode
  return options


def make_env(cfg, env_name: Optional[str] = None,
             field: str = 'env_name') -> environments.Environment:
  """The environment `env_name` (default `cfg.env_name`) with the config's
  options (`env_options`); `field` names the config field in errors."""
  name = cfg.env_name if env_name is None else env_name
  if name not in environments.names():
    raise ValueError(f'{field}: unknown environment {name!r}; '
                     f'allowed: {list(environments.names())}')
  return environments.make(name, **env_options(cfg, name))


def make_agent(cfg, env_name: Optional[str] = None,
               reward_scale: Optional[float] = None,
               field: str = 'env_name', kind: Optional[str] = None):
  """Env + agent from a config, every field checked before anything compiles.

  The one config -> agent factory: train.py and evaluate.py build their agent
  with it, meta-training one agent per task (`env_name`, `reward_scale`), so
  every env option (`env_options`) and agent field reaches all of them.

  Args:
    cfg: a config with `agent` ('a2c' or 'ppo'), its section (`a2c` and
      `network`, or `ppo`), `env_name` and the env options.
    env_name: the environment, instead of `cfg.env_name`.
    reward_scale: overrides the agent section's `reward_scale`.
    field: the config field that names the environment, for errors.
    kind: 'a2c' or 'ppo' instead of `cfg.agent` (a meta-training task's own).

  Returns:
    (agent, its module -- `agents.a2c` or `agents.ppo`, both with
    `init_state` and `make_train` -- and env steps per update).
  """
  kind = cfg.get('agent', 'a2c') if kind is None else kind
  if kind not in AGENTS:
    raise ValueError(f'agent: unknown agent {kind!r}; allowed: '
                     f'{sorted(AGENTS)}')
  if kind == 'ppo' and 'ppo' not in cfg:
    raise ValueError('agent: a PPO agent needs a config.ppo section (see '
                     'configs/meta_ppo_brax.py or configs/ppo_brax.py)')
  name = cfg.env_name if env_name is None else env_name
  env = make_env(cfg, name, field)
  if kind == 'ppo':
    conf = ppo_config(cfg, reward_scale)
    return ppo.make_ppo(env, conf), ppo, conf.num_envs * conf.unroll_len
  if env.continuous:
    raise ValueError(f'{field}: A2C needs discrete actions; {name} is '
                     'continuous (use agent=ppo)')
  conf = a2c_config(cfg, reward_scale)
  net = network_config(name, cfg.get('network', None))
  networks.check_network(net)
  return a2c.make_a2c(env, net, conf), a2c, conf.num_envs * conf.rollout_len


def check_positive_int(value, field: str) -> int:
  if int(value) != value or int(value) < 1:
    raise ValueError(f'{field}: must be an int >= 1, got {value}')
  return int(value)


class Progress:
  """Prints step, rate and ETA lines; `rate` counts env steps per second."""

  def __init__(self, total_steps: int, unit: str = 'env-steps'):
    self.total = total_steps
    self.unit = unit
    self.start = time.time()
    self.first_done = None

  def line(self, step: int, done_units: float, **values) -> str:
    now = time.time()
    if self.first_done is None:  # rate excludes the first (compiling) call
      self.first_done = (now, step, done_units)
      rate, eta = float('nan'), float('nan')
    else:
      t0, s0, u0 = self.first_done
      dt = max(now - t0, 1e-9)
      rate = (done_units - u0) / dt
      eta = (self.total - step) * dt / max(step - s0, 1)
    parts = [f'step {step}/{self.total}']
    parts += [f'{k} {v:.4g}' if isinstance(v, float) else f'{k} {v}'
              for k, v in values.items()]
    rate_s = 'compiling' if rate != rate else f'{rate:,.0f}'
    eta_s = '?' if eta != eta else f'{eta:.0f}s'
    parts += [f'{self.unit}/s {rate_s}', f'ETA {eta_s}',
              f'elapsed {now - self.start:.1f}s']
    msg = ' | '.join(parts)
    print(msg, flush=True)
    return msg


def write_csv(path: str, rows: Sequence[Dict[str, float]]) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fields = list(dict.fromkeys(k for row in rows for k in row))
  with open(path, 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=fields, restval='')
    w.writeheader()
    w.writerows(rows)
  return path


def write_json(path: str, obj) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(obj, f, indent=2, default=float)
  return path


def distinct_colors(n: int):
  """n matplotlib colours, all different for n <= 20 (tab10, else tab20)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  colors = matplotlib.colormaps['tab10' if n <= 10 else 'tab20'].colors
  return [colors[i % len(colors)] for i in range(n)]


def plot_curves(path: str, curves: Dict[str, np.ndarray], x: np.ndarray,
                xlabel: str, ylabel: str, title: str,
                spread: Optional[Dict[str, np.ndarray]] = None) -> str:
  """One PNG of named curves (mean over seeds, optional shaded spread)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4))
  for (name, y), color in zip(curves.items(), distinct_colors(len(curves))):
    ax.plot(x, y, label=name, color=color)
    if spread and name in spread:
      ax.fill_between(x, y - spread[name], y + spread[name], alpha=0.2,
                      color=color)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  if len(curves) > 8:  # many runs: a smaller legend beside the axes
    ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.))
    fig.set_size_inches(8.5, 4)
  else:
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def mean_episode_return(metrics) -> np.ndarray:
  """Mean return of episodes completed in a chunk, per leading (seed) axis.

  NaN where no episode ended.
  """
  ret = np.asarray(metrics['return_sum']).sum(axis=-1)
  num = np.asarray(metrics['episodes']).sum(axis=-1)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(num > 0, ret / np.maximum(num, 1), np.nan)


def random_actions(env: environments.Environment, key: jax.Array,
                   num_envs: int) -> jax.Array:
  """Uniform actions for `num_envs` envs: indices below `num_actions`
  (discrete) or points of [-1, 1]^action_size (continuous, Brax)."""
  if env.continuous:
    return jax.random.uniform(key, (num_envs, env.action_size), minval=-1.,
                              maxval=1.)
  return jax.random.randint(key, (num_envs,), 0, env.num_actions)


def random_policy_return(env: environments.Environment, key: jax.Array,
                         num_envs: int = 16, num_steps: int = 2000):
  """Mean return of the episodes a uniform-random policy ends, and their count.

  Discrete envs draw actions uniformly from `num_actions`; continuous ones
  (Brax) uniformly from [-1, 1]^action_size. Returns are counted by
  `wrappers.EpisodeReturns`. Jittable; vmap it over keys for several seeds.
  """
  env = wrappers.track_returns(env)

  def step(carry, key):
    state, episodes = carry
    k_act, k_env = jax.random.split(key)
    action = random_actions(env, k_act, num_envs)
    _, state, _, _, _, info = jax.vmap(env.step)(
        jax.random.split(k_env, num_envs), state, action)
    return (state, episodes.add(info)), None

  k_reset, k_run = jax.random.split(key)
  _, state = jax.vmap(env.reset)(jax.random.split(k_reset, num_envs))
  (_, episodes), _ = jax.lax.scan(
      step, (state, wrappers.no_episodes()),
      jax.random.split(k_run, num_steps))
  count = episodes.episodes
  return episodes.return_sum / jnp.maximum(count, 1), count
