r"""Throughput, compile time and peak memory figures (prints them; no test).

    # Meta-training on the reference setting (small_dense_short, 64 agents,
    # K = 4, rollout 20, reset_interval 72):
    python -m launchers.benchmark --mode=meta --env=small_dense_short --agents=64
    python -m launchers.benchmark --mode=meta --env=small_dense_short --agents=512
    python -m launchers.benchmark --mode=meta --env=catch --agents=512
    # A2C + Adam, 64 envs, rollout 20:
    python -m launchers.benchmark --mode=a2c --env=small_dense_short --envs=64
    # A2C on Catch, 5 seeds vmapped, Adam vs the untrained Optim4RL cell
    # (its population folded or plain vmapped):
    python -m launchers.benchmark --mode=a2c --env=catch --envs=16 --seeds=5 \
        --steps_per_call=50 --calls=5 --a2c_optimizer=optim4rl [--nofold_vmap]
    # The two alternated in one process, and their time ratio per round:
    python -m launchers.benchmark --mode=a2c --env=catch --envs=16 --seeds=5 \
        --steps_per_call=50 --calls=20 --a2c_optimizer=both
    # Where meta-training time goes (the cell vs the agents), and a profile
    # of one call summed by XLA op:
    python -m launchers.benchmark --mode=meta --cell_hidden=1 --cell_mlp=
    python -m launchers.benchmark --mode=meta --profile_dir=/tmp/meta_trace
    python -m launchers.benchmark --mode=a2c --env=catch --envs=16 --seeds=5 \
        --steps_per_call=50 --a2c_optimizer=optim4rl --profile_dir=/tmp/a2c
    # One learned-optimizer update vs optax.adam, FLOPs and share of the
    # matmul peak, per cell / MLP shape / implementation / N (JSON via --out):
    python -m launchers.benchmark --mode=opt --out=opt.jsonl
    # Raw environment throughput (uniform-random actions, auto-reset):
    python -m launchers.benchmark --mode=env --env=ant --envs=64 --reset_mode=first

Each run is one process, so `peak_rss_gib` (the process's peak resident
memory, from getrusage) belongs to that setting alone. One JSON line with all
figures is printed at the end (and appended to --out if given).
"""

import json
import resource
import time

from absl import app
from absl import flags
import jax
import numpy as np
import optax

from agents import a2c
from agents import brax_envs
from agents import environments
from agents import networks
from launchers.lib import common
from launchers.lib import runtime
import lopt
from launchers.lib import benchmarking
from lopt import meta

_MODE = flags.DEFINE_enum('mode', 'meta',
                          ['meta', 'a2c', 'random', 'env', 'opt'],
                          'What to measure: meta-training, A2C + Adam, '
                          'the return of a uniform-random policy, raw '
                          'environment steps per second, or one '
                          'learned-optimizer update vs optax.adam.')
_ENV = flags.DEFINE_string('env', 'small_dense_short', 'Environment.')
_AGENTS = flags.DEFINE_integer('agents', 64, 'Meta-training population.')
_ENVS = flags.DEFINE_integer('envs', 64, 'A2C: environments per agent.')
_K = flags.DEFINE_integer('inner_steps', 4, 'Meta: K inner updates.')
_ROLLOUT = flags.DEFINE_integer('rollout', 20, 'Rollout length.')
_RESET = flags.DEFINE_integer('reset_interval', 72, 'Meta: reset interval.')
_STEPS = flags.DEFINE_integer('steps_per_call', 5,
                              'Meta-iterations (or A2C updates) per call.')
_CALLS = flags.DEFINE_integer('calls', 3, 'Timed calls after the first.')
_REMAT = flags.DEFINE_bool('remat', True, 'Meta: jax.checkpoint inner steps.')
_SECOND = flags.DEFINE_bool('second_order', True, 'Meta: full meta-gradient.')
_HIDDEN = flags.DEFINE_integer('cell_hidden', 8,
                               'Meta and A2C: cell GRU hidden size.')
_MLP = flags.DEFINE_list('cell_mlp', ['16', '16'],
                         'Meta and A2C: cell MLP widths (empty: none).')
_RESET_MODE = flags.DEFINE_enum('reset_mode', 'first', ['first', 'sample'],
                                'Brax envs: auto-reset mode.')
_OUT = flags.DEFINE_string('out', '', 'Append the JSON line to this file.')
_COORDS = flags.DEFINE_list('coords', ['1e4', '1e5', '1e6', '1e7'],
                            'Opt: coordinate counts (forward pass).')
_BWD_MAX = flags.DEFINE_float('bwd_max_coords', 1e6,
                              'Opt: largest N timed forward + backward.')
_CELLS = flags.DEFINE_list('cells', ['optim4rl', 'l2lgd2', 'linear'],
                           'Opt: cells to time.')
_SHAPES = flags.DEFINE_list('shapes', ['16x16', 'none'],
                            "Opt: MLP shapes ('16x16' default, 'none' = no "
                            'MLP, the reference code cell shape).')
_IMPLS = flags.DEFINE_list('impls', ['haiku', 'fused'],
                           'Opt: cell implementations to time.')
_GROUPS = flags.DEFINE_integer('agent_groups', 1,
                               'Meta: sequential agent groups (memory).')
_IMPL = flags.DEFINE_enum('impl', 'auto', ['auto', 'fused', 'haiku'],
                          "Meta and A2C: the cell's implementation "
                          "(lopt.cell_runtime.dispatch; 'auto' is the library's default: "
                          "'fused' on one CPU device).")
_SEEDS = flags.DEFINE_integer('seeds', 1, 'A2C: seeds trained at once (vmap).')
_A2C_OPT = flags.DEFINE_enum(
    'a2c_optimizer', 'adam', ['adam', 'optim4rl', 'both'],
    "A2C: optax.adam(1e-3) or the untrained Optim4RL cell at 1e-3 (with "
    "--impl and --fold_vmap); 'both': the two in one process, their calls "
    "alternated, with each one's figures and the time ratio per round "
    '(median), so that the machine\'s drift between runs cancels.')
_FOLD = flags.DEFINE_bool(
    'fold_vmap', None, "Meta and A2C: run the cell once on the population's "
    'coordinates laid end to end (lopt.cell_runtime.dispatch.fold_vmap); unset: on (the '
    "library's default).")
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Opt: timed calls (median).')
_PROFILE = flags.DEFINE_string(
    'profile_dir', '', 'Meta and A2C: after the timed calls, trace one more '
    'call with jax.profiler into this folder and add the XLA op time summed by '
    'op and by op kind (self time, share of all op time) to the figures.')


def _mlp_dims() -> tuple:
  """--cell_mlp as the cell's MLP widths (empty: no MLP)."""
  return tuple(int(m) for m in _MLP.value if m)


def _fold() -> bool:
  """--fold_vmap, or lopt.learned_optimizer's default for --impl."""
  return True if _FOLD.value is None else _FOLD.value


def _peak_rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def _time_calls(fn, state, calls):
  t = time.time()
  for _ in range(calls):
    state, _ = fn(state)
  jax.block_until_ready(state)
  return state, (time.time() - t) / calls


def bench_meta() -> dict:
  env = environments.make(_ENV.value)
  agent = a2c.make_a2c(env, networks.paper_network(_ENV.value),
                       a2c.A2CConfig(num_envs=1, rollout_len=_ROLLOUT.value))
  lo = lopt.learned_optimizer(cell='optim4rl', hidden_size=_HIDDEN.value,
                              mlp_dims=_mlp_dims(),
                              implementation=_IMPL.value,
                              fold_vmap=_fold())
  trainer = meta.make_meta_trainer(
      [meta.Task(_ENV.value, agent, _AGENTS.value, 1e-3)], lo,
      meta.make_meta_optimizer(1e-3), num_inner_steps=_K.value,
      reset_interval=_RESET.value, remat=_REMAT.value,
      second_order=_SECOND.value, steps_per_call=_STEPS.value,
      agent_groups=_GROUPS.value)
  # The meta-training launcher's path: programs from the executable cache
  # (--executable_cache), the population built in place on the devices.
  cache = runtime.executable_cache({
      'mode': 'meta', 'env': _ENV.value, 'agents': _AGENTS.value,
      'K': _K.value, 'rollout': _ROLLOUT.value, 'reset': _RESET.value,
      'steps': _STEPS.value, 'remat': _REMAT.value,
      'second_order': _SECOND.value, 'hidden': _HIDDEN.value,
      'mlp': list(_MLP.value), 'impl': lo.implementation, 'fold': _fold(),
      'groups': _GROUPS.value})
  key = np.asarray(jax.random.PRNGKey(0))
  init = cache.wrap('meta_init', lambda: meta.init_sharded_fn(trainer, key))
  cache.prefetch('meta_run')  # loads while the population is built
  t0 = time.time()
  state = init(key)
  jax.block_until_ready(state)
  t_init = time.time() - t0
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                        state)
  run = cache.wrap('meta_run', lambda: meta.run_sharded_fn(trainer, shapes))
  t1 = time.time()
  compiled = run.compiled(state)
  t_compile = time.time() - t1
  t2 = time.time()
  state, _ = compiled(state)
  jax.block_until_ready(state)
  t_first_call = time.time() - t2
  state, per_call = _time_calls(compiled, state, _CALLS.value)
  per_iter = per_call / _STEPS.value
  profile = _profiled(compiled, state, f'{_STEPS.value} meta-iterations')
  steps = _AGENTS.value * (_K.value + 1) * _ROLLOUT.value
  coords = lopt.cells.coordinate_count(
      jax.eval_shape(agent.init_params, jax.random.PRNGKey(0)))
  return {
      'mode': 'meta', 'env': _ENV.value, 'agents': _AGENTS.value,
      'K': _K.value, 'rollout': _ROLLOUT.value, 'remat': _REMAT.value,
      'second_order': _SECOND.value, 'cell_hidden': _HIDDEN.value,
      'cell_mlp': list(_MLP.value), 'impl': lo.implementation,
      'fold_vmap': _fold(),
      'agent_groups': _GROUPS.value,
      'coords_per_agent': coords,
      'devices': jax.device_count(),
      'seconds_per_meta_iteration': per_iter,
      'agent_env_steps_per_second': steps / per_iter,
      'compile_seconds': t_compile,
      'executable_cache': {'init': init.status, 'run': run.status},
      'time_to_first_meta_iteration_seconds': (
          t_init + t_compile + t_first_call / _STEPS.value),
      'peak_rss_gib': _peak_rss_gib(),
      **({'profile': profile} if profile else {}),
  }


def _profiled(compiled, state, what: str) -> dict:
  """With --profile_dir: one more call of `compiled` traced with
  jax.profiler there, its XLA op time summed by op and by op kind (printed
  and returned); else {}."""
  if not _PROFILE.value:
    return {}
  with jax.profiler.trace(_PROFILE.value):
    jax.block_until_ready(compiled(state))
  profile = benchmarking.profile_by_op(benchmarking.trace_file(_PROFILE.value))
  for part in ('kinds', 'ops'):
    print(f'XLA op time by {part[:-1]} (self time, share of '
          f'{profile["total_ms"][0]:.0f} ms for {what}):')
    for name, ms, share in profile[part]:
      print(f'  {share:6.1%} {ms:10.1f} ms  {name}')
  return profile


def _a2c_optimizer(name: str):
  """(optax transformation, its row's extra fields) for --a2c_optimizer."""
  if name == 'adam':
    return optax.adam(1e-3), {}
  mlp = _mlp_dims()
  lo = lopt.learned_optimizer(learning_rate=1e-3, implementation=_IMPL.value,
                              fold_vmap=_fold(), hidden_size=_HIDDEN.value,
                              mlp_dims=mlp)
  return (lo.opt_fn(lo.init(jax.random.PRNGKey(0))),
          {'impl': lo.implementation, 'fold_vmap': _fold(),
           'cell_hidden': _HIDDEN.value, 'cell_mlp': list(mlp)})


def bench_a2c() -> dict:
  env = environments.make(_ENV.value)
  agent = a2c.make_a2c(env, networks.paper_network(_ENV.value),
                       a2c.A2CConfig(num_envs=_ENVS.value,
                                     rollout_len=_ROLLOUT.value))
  names = (['adam', 'optim4rl'] if _A2C_OPT.value == 'both' else
           [_A2C_OPT.value])
  runs = {}
  for name in names:
    opt, fields = _a2c_optimizer(name)
    train = jax.jit(jax.vmap(a2c.make_train(agent, opt, _STEPS.value)))
    state = jax.vmap(lambda k, opt=opt: a2c.init_state(agent, opt, k))(
        jax.random.split(jax.random.PRNGKey(0), _SEEDS.value))
    t1 = time.time()
    compiled = train.lower(state).compile()
    t_compile = time.time() - t1
    state = jax.block_until_ready(compiled(state)[0])  # warm, not timed
    runs[name] = dict(compiled=compiled, state=state, fields=fields,
                      compile_seconds=t_compile, seconds=[])
  # Several optimizers: one call of each in turn; one: all its calls at once.
  rounds, calls = (_CALLS.value, 1) if len(runs) > 1 else (1, _CALLS.value)
  for _ in range(rounds):
    for run in runs.values():
      run['state'], seconds = _time_calls(run['compiled'], run['state'],
                                          calls)
      run['seconds'].append(seconds)
  steps = _SEEDS.value * _ENVS.value * _ROLLOUT.value * _STEPS.value

  def row(name):
    run = runs[name]
    return {'optimizer': name, **run['fields'],
            'env_steps_per_second': steps / float(np.median(run['seconds'])),
            'compile_seconds': run['compile_seconds']}

  common = {'mode': 'a2c', 'env': _ENV.value, 'envs': _ENVS.value,
            'seeds': _SEEDS.value, 'rollout': _ROLLOUT.value,
            'updates_per_call': _STEPS.value}
  if len(runs) == 1:
    run = runs[names[0]]
    profile = _profiled(run['compiled'], run['state'],
                        f'{_STEPS.value} updates')
    return {**common, **row(names[0]), 'peak_rss_gib': _peak_rss_gib(),
            **({'profile': profile} if profile else {})}
  ratios = [b / a for a, b in zip(runs['adam']['seconds'],
                                  runs['optim4rl']['seconds'])]
  print(f'A2C, {len(ratios)} rounds of one call each: learned / Adam time '
        f'per round {", ".join(f"{r:.2f}" for r in ratios)}')
  return {**common, 'optimizer': 'both', 'rows': [row(n) for n in names],
          'time_ratio_median': float(np.median(ratios)),
          'time_ratios': ratios, 'peak_rss_gib': _peak_rss_gib()}


def random_policy() -> dict:
  """Mean episode return of a uniform-random policy (a reference figure)."""
  env = environments.make(_ENV.value)
  mean_return, episodes = jax.jit(
      lambda k: common.random_policy_return(env, k, _ENVS.value, 2000))(
          jax.random.PRNGKey(0))
  return {'mode': 'random', 'env': _ENV.value,
          'mean_episode_return': float(mean_return),
          'episodes': int(episodes)}


def bench_env() -> dict:
  """Env steps per second of `--envs` vmapped envs under random actions."""
  kwargs = ({'reset_mode': _RESET_MODE.value}
            if _ENV.value in brax_envs.BRAX_ENVS else {})
  env = environments.make(_ENV.value, **kwargs)
  n = _ENVS.value

  def scan(state, key):
    def step(state, key):
      k_act, k_env = jax.random.split(key)
      action = common.random_actions(env, k_act, n)
      out = jax.vmap(env.step)(jax.random.split(k_env, n), state, action)
      return out[1], out[2]
    key, k = jax.random.split(key)
    state, rewards = jax.lax.scan(
        step, state, jax.random.split(k, _ROLLOUT.value * _STEPS.value))
    return (state, key), rewards

  init = jax.jit(lambda k: jax.vmap(env.reset)(jax.random.split(k, n))[1])
  carry = (init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
  t1 = time.time()
  compiled = jax.jit(lambda c: scan(*c)).lower(carry).compile()
  t_compile = time.time() - t1
  carry, _ = compiled(carry)
  carry, per_call = _time_calls(compiled, carry, _CALLS.value)
  steps = n * _ROLLOUT.value * _STEPS.value
  return {'mode': 'env', 'env': _ENV.value, 'envs': n,
          'reset_mode': kwargs.get('reset_mode', ''),
          'env_steps_per_second': steps / per_call,
          'compile_seconds': t_compile, 'peak_rss_gib': _peak_rss_gib()}


def bench_opt() -> dict:
  """Learned-optimizer update time vs optax.adam, FLOPs, share of peak."""
  peak = benchmarking.matmul_peak_gflops()
  bandwidth = benchmarking.bandwidth_peak_gbs()
  print(f'matmul peak (2048^2 f32, this process): {peak:.1f} GFLOP/s; '
        f'bandwidth (x/2+1 on 128 MiB f32, in place): {bandwidth:.1f} GB/s',
        flush=True)
  rows = []
  header = (f'{"impl":5} {"cell":8} {"mlp":5} {"pass":7} {"coords":>9} '
            f'{"ms":>9} {"x adam":>7} {"flop/c":>7} {"GFLOP/s":>8} '
            f'{"peak":>6} {"byte/c":>7} {"GB/s":>6} {"bw":>6} '
            f'{"compile":>7}')
  print(header, flush=True)
  for n in [int(float(c)) for c in _COORDS.value]:
    adam = benchmarking.adam_seconds(n, _REPEATS.value)
    for impl in _IMPLS.value:
      for cell in _CELLS.value:
        for shape in _SHAPES.value:
          mlp = () if shape == 'none' else tuple(int(d) for d in
                                                 shape.split('x'))
          lo = lopt.learned_optimizer(cell=cell, mlp_dims=mlp,
                                      implementation=impl)
          for backward in (False, True):
            if backward and n > _BWD_MAX.value:
              continue
            row = benchmarking.update_row(lo, n, backward=backward,
                                          peak_gflops=peak,
                                          peak_gbs=bandwidth, adam=adam,
                                          repeats=_REPEATS.value)
            row['impl'] = impl
            rows.append(row)
            print(f'{impl:5} {cell:8} {row["mlp_dims"]:5} {row["pass"]:7} '
                  f'{n:9.0e} {row["ms"]:9.2f} {row["vs_adam"]:7.1f} '
                  f'{row["flops_per_coord"]:7.0f} {row["gflops"]:8.1f} '
                  f'{row["share_of_peak"]:6.1%} '
                  f'{row["bytes_per_coord"]:7.0f} {row["gbs"]:6.1f} '
                  f'{row["share_of_bandwidth"]:6.1%} {row["compile_s"]:6.1f}s',
                  flush=True)
  return {'mode': 'opt', 'matmul_peak_gflops': peak,
          'bandwidth_peak_gbs': bandwidth, 'rows': rows,
          'peak_rss_gib': _peak_rss_gib()}


def main(argv):
  del argv
  runtime.setup()
  result = {'meta': bench_meta, 'a2c': bench_a2c, 'random': random_policy,
            'env': bench_env, 'opt': bench_opt}[_MODE.value]()
  line = json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                     for k, v in result.items()}, default=float)
  print(line, flush=True)
  if _OUT.value:
    with open(_OUT.value, 'a') as f:
      f.write(line + '\n')


if __name__ == '__main__':
  app.run(main)
