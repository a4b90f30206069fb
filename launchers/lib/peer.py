r"""Peer check: our PPO + Adam against Brax's own PPO trainer, side by side.

`peer_check(cfg, workdir)` is launchers/peer_check.py's job (fields in
configs/peer_check.py):

    python -m launchers.peer_check --config=configs/peer_check.py:ant \
        --workdir=runs/peer_check_ant

Both implementations train on the same Brax environment with the same
settings and env-step budget (configs/ppo_brax.py's fields, mapped onto
`brax.training.agents.ppo.train` by `brax_kwargs`), one seed per run, on one
device. For each run it reports:

  * env steps per second after compilation: the budget is cut into
    `num_chunks` equal chunks (Brax: epochs, timed by the trainer itself as
    `training/walltime`), and throughput counts the chunks after the first
    `num_warmup_chunks`, the same for both. (Under jax 0.10 Brax's pmapped
    epoch compiles twice, on its first and second call; with the default of
    two warm-up chunks neither compile is counted on either side.)
  * the return of the policy after every chunk, measured the same way for
    both by `evaluate_policy` (one full episode in each of `num_eval_envs`
    fresh environments, sampled actions, no reward scaling) outside the timed
    region.

Writes results.csv (one row per run), curves.csv, results.md (mean, std and
per-seed figures of each side, the throughput ratio, and whether our final
return lies within Brax's seed range) and returns.png into --workdir.

brax.training calls `jax.device_put_replicated`, which jax 0.10 removed;
`install_device_put_replicated_shim` puts back an equivalent for that call
(and only if jax lacks it).
"""

import functools
import os
import time
from typing import Callable, Dict, List

import jax
import jax.numpy as jnp
import numpy as np

from agents import brax_envs
from agents import ppo
from agents import wrappers
from launchers.lib import common
from launchers.lib import training


def install_device_put_replicated_shim() -> bool:
  """SHIM for brax.training under jax >= 0.10 (returns whether installed).

  `jax.device_put_replicated(x, devices)` returned each leaf stacked once per
  device along a new leading axis, for use as a `jax.pmap` argument. jax 0.10
  removed it; brax.training 0.14 still calls it once, to replicate its
  training state. The stand-in stacks the leaves and places them with an
  identity `pmap`.
  """
  if hasattr(jax, 'device_put_replicated'):
    return False

  def device_put_replicated(x, devices):
    n = len(devices)
    # Through an identity pmap, so the result carries the same (pmap)
    # sharding as the trainer's own pmapped outputs: a plain stacked array
    # would make its second epoch recompile for a new input sharding.
    put = jax.pmap(lambda a: a, devices=list(devices))
    return jax.tree.map(lambda a: put(jnp.stack([jnp.asarray(a)] * n)), x)

  jax.device_put_replicated = device_put_replicated
  return True


def validate(cfg):
  """Checks the peer-check fields; returns `training.validate(cfg)`."""
  if cfg.env_name not in brax_envs.BRAX_ENVS:
    raise ValueError(f'env_name: the peer check runs a Brax task; got '
                     f'{cfg.env_name!r}, allowed: {list(brax_envs.BRAX_ENVS)}')
  if cfg.get('agent', 'a2c') != 'ppo':
    raise ValueError(f'agent: the peer check compares PPO; got {cfg.agent!r}')
  if cfg.optimizer.name != 'adam':
    raise ValueError('optimizer.name: Brax\'s trainer uses Adam; got '
                     f'{cfg.optimizer.name!r}, allowed: [\'adam\']')
  if cfg.get('reset_mode', 'first') != 'first':
    raise ValueError('reset_mode: Brax\'s trainer restarts each env from its '
                     f'first state; got {cfg.reset_mode!r}, allowed: '
                     "['first']")
  for field in ('num_seeds', 'num_chunks', 'num_eval_envs'):
    common.check_positive_int(cfg.peer[field], f'peer.{field}')
  if not 0 <= cfg.peer.num_warmup_chunks < cfg.peer.num_chunks:
    raise ValueError(
        f'peer.num_warmup_chunks: must be in [0, num_chunks = '
        f'{cfg.peer.num_chunks}), got {cfg.peer.num_warmup_chunks}')
  c = cfg.ppo
  if c.num_envs % c.num_minibatches:
    raise ValueError(
        f'ppo.num_minibatches: Brax splits the {c.num_envs} envs\' unrolls '
        f'into minibatches, so {c.num_minibatches} must divide num_envs')
  if cfg.num_updates % cfg.peer.num_chunks:
    raise ValueError(f'peer.num_chunks: {cfg.peer.num_chunks} must divide '
                     f'num_updates = {cfg.num_updates}')
  return training.validate(cfg)


def brax_kwargs(cfg) -> Dict:
  """Our PPO config as `brax.training.agents.ppo.train` arguments.

  One update of ours (num_envs x unroll_len steps, num_epochs passes of
  num_minibatches minibatches) is one Brax training step with
  batch_size = num_envs / num_minibatches unrolls per minibatch.
  """
  from brax.training.agents.ppo import networks as brax_ppo_networks  # pylint: disable=g-import-not-at-top
  c = cfg.ppo
  return dict(
      num_timesteps=cfg.num_updates * c.num_envs * c.unroll_len,
      num_evals=cfg.peer.num_chunks + 1,  # one epoch per chunk
      run_evals=False,  # we evaluate both sides the same way, outside timing
      episode_length=cfg.episode_length,
      num_envs=c.num_envs,
      unroll_length=c.unroll_len,
      batch_size=c.num_envs // c.num_minibatches,
      num_minibatches=c.num_minibatches,
      num_updates_per_batch=c.num_epochs,
      learning_rate=cfg.optimizer.learning_rate,
      max_grad_norm=cfg.optimizer.get('max_grad_norm', None) or None,
      entropy_cost=c.entropy_weight,
      vf_loss_coefficient=c.value_weight,
      discounting=c.discount,
      gae_lambda=c.gae_lambda,
      clipping_epsilon=c.clip_eps,
      reward_scaling=c.reward_scale,
      normalize_observations=c.normalize_obs,
      normalize_advantage=True,  # ours normalizes per minibatch too
      max_devices_per_host=1,
      network_factory=functools.partial(
          brax_ppo_networks.make_ppo_networks,
          policy_hidden_layer_sizes=tuple(c.policy_hidden),
          value_hidden_layer_sizes=tuple(c.value_hidden)),
  )


def evaluate_policy(env, policy: Callable, key, num_envs: int,
                    num_steps: int):
  """Mean undiscounted return of one episode in each of `num_envs` envs.

  `env` is one of our environments (the Brax task both sides train on, with
  its episode length; `num_steps` >= that length gives every env a whole
  episode); `policy(obs[num_envs, ...], key) -> actions`. Each env's figure
  is the return `wrappers.EpisodeReturns` reports for its first episode. An
  env whose reward goes non-finite first (Brax physics can go nan) ends there,
  with the return it had; one still running after `num_steps` counts its
  return so far.
  """
  env = wrappers.track_returns(env)
  k_reset, k_run = jax.random.split(key)
  obs, state = jax.vmap(env.reset)(jax.random.split(k_reset, num_envs))

  def step(carry, key):
    obs, state, ret, pending = carry
    # `key` samples the policy; the env (which ignores its key when it
    # restarts from its first state) gets its own.
    env_keys = jax.random.split(jax.random.fold_in(key, 1), num_envs)
    obs, new_state, reward, _, _, info = jax.vmap(env.step)(
        env_keys, state, policy(obs, key))
    ok = jnp.isfinite(reward)
    ended = info['episode_done'] | ~ok
    first = jnp.where(ok, info['episode_return'], state.episode_return)
    ret = jnp.where(pending & ended, first, ret)
    return (obs, new_state, ret, pending & ~ended), None

  init = (obs, state, jnp.zeros(num_envs), jnp.ones(num_envs, bool))
  (_, state, ret, pending), _ = jax.lax.scan(
      step, init, jax.random.split(k_run, num_steps))
  return jnp.mean(jnp.where(pending, state.episode_return, ret))


def make_ours(cfg, agent):
  """`run(seed)` for our PPO + Adam; the chunk compiles once, for all seeds.

  Each run returns its chunk timings (the first seed's first chunk includes
  compilation) and the evaluation return after each chunk.
  """
  per_step = common.optimizer_steps_per_update(cfg)
  optimizer = common.make_optimizer(
      cfg.optimizer, seed=cfg.seed, total_steps=cfg.num_updates * per_step,
      steps_per_update=per_step)
  per_chunk = cfg.num_updates // cfg.peer.num_chunks
  chunk = jax.jit(ppo.make_train(agent, optimizer, per_chunk))
  init = jax.jit(lambda k: ppo.init_state(agent, optimizer, k))
  eval_fn = ours_policy_eval(cfg, agent)
  steps_per_chunk = per_chunk * cfg.ppo.num_envs * cfg.ppo.unroll_len

  def run(seed: int) -> dict:
    state = jax.block_until_ready(init(jax.random.PRNGKey(seed)))
    seconds, returns = [], []
    for _ in range(cfg.peer.num_chunks):
      t = time.time()
      state, _ = chunk(state)
      jax.block_until_ready(state)
      seconds.append(time.time() - t)
      returns.append(float(eval_fn(state.params, state.obs_stats)))
      _progress('ours', seed, seconds, steps_per_chunk, returns,
                cfg.peer.num_chunks)
    return _summary('ours', seed, seconds, steps_per_chunk, returns,
                    cfg.peer.num_warmup_chunks)

  return run


def run_brax(cfg, env, eval_fn, seed: int) -> dict:
  """Brax's PPO trainer, one seed: its own epoch timings, same evaluation."""
  from brax.training.agents.ppo import train as brax_ppo  # pylint: disable=g-import-not-at-top
  install_device_put_replicated_shim()
  seconds, steps, returns = [], [], []
  last = {'walltime': 0.}

  def progress(step, metrics):
    wall = float(metrics['training/walltime'])
    seconds.append(wall - last['walltime'])
    last['walltime'] = wall
    steps.append(int(step))
    # (Brax calls policy_params_fn, which evaluates, before progress_fn.)
    _progress('brax', seed, seconds, steps[0], returns, cfg.peer.num_chunks)

  def params_fn(step, make_policy, params):
    del make_policy
    if step > 0:  # after each epoch (Brax also calls it before training)
      returns.append(float(eval_fn(params)))

  brax_ppo.train(environment=env, seed=seed, progress_fn=progress,
                 policy_params_fn=params_fn, **brax_kwargs(cfg))
  steps_per_chunk = steps[0]
  if any(b - a != steps_per_chunk for a, b in zip(steps, steps[1:])):
    raise RuntimeError(f'Brax epochs are uneven: env steps {steps}')
  return _summary('brax', seed, seconds, steps_per_chunk, returns,
                  cfg.peer.num_warmup_chunks)


def _progress(impl: str, seed: int, seconds: List[float],
              steps_per_chunk: int, returns: List[float], num_chunks: int):
  done = len(seconds)
  print(f'{impl} seed {seed}: chunk {done}/{num_chunks}, '
        f'{steps_per_chunk * done:,} env steps, '
        f'{steps_per_chunk / seconds[-1]:,.0f} env-steps/s, eval return '
        f'{returns[-1]:.1f}, ETA {seconds[-1] * (num_chunks - done):.0f} s',
        flush=True)


def _summary(impl: str, seed: int, seconds: List[float], steps_per_chunk: int,
             returns: List[float], warmup: int) -> dict:
  later = seconds[warmup:]
  return {
      'implementation': impl, 'seed': seed,
      'env_steps': steps_per_chunk * len(seconds),
      'warmup_seconds': sum(seconds[:warmup]),
      'chunk_seconds': ' '.join(f'{x:.2f}' for x in seconds),
      'env_steps_per_second': (steps_per_chunk * len(later) / sum(later)
                               if later else float('nan')),
      'final_return': returns[-1],
      'returns': returns,
  }


def brax_policy_eval(cfg, env):
  """jitted `eval(params) -> return` for Brax's (normalizer, policy, value).

  `env` is our environment of the task (`agent.env`), as for our policy.
  """
  from brax.training.acme import running_statistics  # pylint: disable=g-import-not-at-top
  from brax.training.agents.ppo import networks as brax_ppo_networks  # pylint: disable=g-import-not-at-top
  normalize = (running_statistics.normalize if cfg.ppo.normalize_obs
               else (lambda x, y: x))
  nets = brax_kwargs(cfg)['network_factory'](
      env.observation_shape, env.action_size,
      preprocess_observations_fn=normalize)
  make_policy = brax_ppo_networks.make_inference_fn(nets)
  key = jax.random.PRNGKey(cfg.seed + 1000)

  @jax.jit
  def eval_fn(params):
    policy = make_policy(params, deterministic=False)
    return evaluate_policy(env, lambda o, k: policy(o, k)[0], key,
                           cfg.peer.num_eval_envs, cfg.episode_length)

  return eval_fn


def ours_policy_eval(cfg, agent):
  """jitted `eval(params, obs_stats) -> return` for our PPO agent."""
  key = jax.random.PRNGKey(cfg.seed + 1000)  # the same episodes as Brax's

  @jax.jit
  def eval_fn(params, stats):
    return evaluate_policy(
        agent.env, lambda o, k: agent.act(params, stats, o, k), key,
        cfg.peer.num_eval_envs, cfg.episode_length)

  return eval_fn


def compare_rows(runs: List[dict]) -> List[dict]:
  """Mean / std / per-seed rows per implementation, plus the verdicts."""
  rows = []
  for impl in ('ours', 'brax'):
    mine = [r for r in runs if r['implementation'] == impl]
    ret = np.array([r['final_return'] for r in mine])
    sps = np.array([r['env_steps_per_second'] for r in mine])
    rows.append({'implementation': impl, 'seeds': len(mine),
                 'env_steps': mine[0]['env_steps'],
                 'final_return_mean': float(ret.mean()),
                 'final_return_std': float(ret.std()),
                 'final_return_min': float(ret.min()),
                 'final_return_max': float(ret.max()),
                 'per_seed': ' '.join(f'{x:.1f}' for x in ret),
                 'env_steps_per_second': float(sps.mean()),
                 'warmup_seconds': float(
                     np.mean([r['warmup_seconds'] for r in mine]))})
  ours, brax = rows
  ours['throughput_ratio_to_brax'] = (ours['env_steps_per_second'] /
                                      brax['env_steps_per_second'])
  ours['return_within_brax_seed_range'] = bool(
      brax['final_return_min'] <= ours['final_return_mean']
      <= brax['final_return_max'])
  return rows


def markdown(rows: List[dict], cfg) -> str:
  ours = rows[0]
  lines = [
      f'Peer check on {cfg.env_name}: {rows[0]["env_steps"]:,} env steps '
      f'per run, {cfg.ppo.num_envs} envs, unroll {cfg.ppo.unroll_len}, '
      f'{cfg.ppo.num_minibatches} minibatches x {cfg.ppo.num_epochs} epochs, '
      f'Adam lr {cfg.optimizer.learning_rate:g}; return = one episode in '
      f'each of {cfg.peer.num_eval_envs} envs after training.', '',
      '| implementation | final return mean ± std | per seed | env steps/s '
      f'(after {cfg.peer.num_warmup_chunks} warm-up chunks) | warm-up (s, '
      'incl. compile) |',
      '|---|---|---|---|---|']
  for r in rows:
    lines.append(
        f'| {r["implementation"]} | {r["final_return_mean"]:.1f} ± '
        f'{r["final_return_std"]:.1f} | {r["per_seed"]} | '
        f'{r["env_steps_per_second"]:,.0f} | {r["warmup_seconds"]:.1f} |')
  lines += ['', f'Throughput ours / Brax: '
            f'{ours["throughput_ratio_to_brax"]:.2f}. Our mean return within '
            f'Brax\'s seed range: {ours["return_within_brax_seed_range"]}.']
  return '\n'.join(lines) + '\n'


def peer_check(cfg, workdir: str) -> List[dict]:
  """Runs both sides for every seed; writes and returns the summary rows."""
  agent, _, _ = validate(cfg)
  # The raw Brax env Brax's trainer trains on (ours: agent.env wraps it).
  env = agent.env.inner._env  # pylint: disable=protected-access
  run_ours = make_ours(cfg, agent)
  brax_eval = brax_policy_eval(cfg, agent.env)
  runs = []
  for seed in range(cfg.seed, cfg.seed + cfg.peer.num_seeds):
    for impl, fn in (('ours', run_ours),
                     ('brax', lambda s: run_brax(cfg, env, brax_eval, s))):
      t = time.time()
      r = fn(seed)
      runs.append(r)
      print(f'{impl} seed {seed}: final return {r["final_return"]:.1f}, '
            f'{r["env_steps_per_second"]:,.0f} env-steps/s after compile, '
            f'run {time.time() - t:.0f}s', flush=True)
  rows = compare_rows(runs)
  os.makedirs(workdir, exist_ok=True)
  common.write_csv(os.path.join(workdir, 'results.csv'),
                   [{k: v for k, v in r.items() if k != 'returns'}
                    for r in runs])
  x = np.arange(1, cfg.peer.num_chunks + 1) * (
      runs[0]['env_steps'] // cfg.peer.num_chunks)
  curves = {impl: np.array([r['returns'] for r in runs
                            if r['implementation'] == impl]).T
            for impl in ('ours', 'brax')}
  common.write_csv(os.path.join(workdir, 'curves.csv'), [
      {'env_steps': int(s), **{f'{impl}_seed{i}': float(v)
                               for impl, c in curves.items()
                               for i, v in enumerate(c[j])}}
      for j, s in enumerate(x)])
  common.plot_curves(
      os.path.join(workdir, 'returns.png'),
      {f'{k} PPO + Adam': c.mean(axis=1) for k, c in curves.items()}, x,
      'env steps', 'evaluation return',
      f'{cfg.env_name}: ours vs brax.training PPO '
      f'({cfg.peer.num_seeds} seeds)',
      spread={f'{k} PPO + Adam': c.std(axis=1) for k, c in curves.items()})
  table = markdown(rows, cfg)
  with open(os.path.join(workdir, 'results.md'), 'w') as f:
    f.write(table)
  common.write_json(os.path.join(workdir, 'summary.json'), rows)
  print(table, flush=True)
  return rows
