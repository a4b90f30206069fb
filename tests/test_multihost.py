"""Real multi-process runs on localhost: launchers/tpu.py on jax.distributed.

Two processes x 2 CPU devices meta-train a tiny population; one is SIGKILLed
mid-run and both are restarted; the end state equals one process x 4 devices
running the same global population, and the 2-process checkpoint restores on
4 devices and on 1. Plus the errors: a device count that does not divide the
population (both topologies named), an unreachable coordinator (timeout
named), and processes launched with different configs.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import conftest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 12

TINY_CONFIG = textwrap.dedent('''
    from configs import meta_catch

    def get_config():
      c = meta_catch.get_config()
      c.tasks.num_agents = 4
      c.a2c.rollout_len = 5
      c.network.hidden_sizes = (8,)
      c.optimizer.hidden_size = 4
      c.optimizer.mlp_dims = (4,)
      c.meta.reset_interval = 4
      c.num_meta_steps = %d
      c.log_every = 2
      c.save_every = 2
      c.keep_checkpoints = 2
      return c
''' % STEPS)

CHECK = textwrap.dedent('''
    import sys
    import jax, numpy as np
    import runpy
    from launchers.lib import meta_training
    from lopt import checkpointing, meta
    cfg = runpy.run_path(sys.argv[1])['get_config']()
    one, two = sys.argv[2], sys.argv[3]
    assert jax.device_count() == 4 and jax.process_count() == 1
    meta_training.meta_train(cfg, one, verbose=False)
    a = np.load(one + '/meta_params.npz')
    b = np.load(two + '/meta_params.npz')
    for k in a.files:
      if a[k].dtype.kind == 'f':
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-6,
                                   err_msg=k)
    _, _, trainer = meta_training.build(cfg)
    for devices in (jax.devices(), jax.devices()[:1]):
      mesh = meta.population_mesh(devices)
      template = meta.init_sharded(trainer, jax.random.PRNGKey(0), mesh)
      got = {}
      for name, d in (('one', one), ('two', two)):
        ckpt = checkpointing.Checkpointer(
            d + '/checkpoints', cfg.to_dict(),
            ignore=meta_training.RESUMABLE_CHANGES)
        got[name], step = ckpt.restore(template)
        assert step == %d, step
      leaf = jax.tree.leaves(got['two'].population)[0]
      assert len(leaf.sharding.device_set) == len(devices), leaf.sharding
      for x, y in zip(jax.tree.leaves(got['one']),
                      jax.tree.leaves(got['two'])):
        np.testing.assert_allclose(np.asarray(x, np.float64),
                                   np.asarray(y, np.float64),
                                   rtol=1e-4, atol=1e-6)
      print('restored on', len(devices), 'device(s)', flush=True)
    print('OK multihost', flush=True)
''' % STEPS)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _env(devices: int, cache: str) -> dict:
  return dict(os.environ, JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1',
              XLA_FLAGS=conftest.xla_flags(
                  f'--xla_force_host_platform_device_count={devices}'))


def _tpu_args(config: str, workdir: str, cache: str, extra=()):
  return [sys.executable, '-m', 'launchers.tpu', '--job=meta_train',
          f'--config={config}', f'--workdir={workdir}',
          f'--compilation_cache_dir={cache}', *extra]


def _launch(config, workdir, cache, tmp, tag, per_process_extra=((), ())):
  port = _free_port()
  procs = []
  for i, extra in enumerate(per_process_extra):
    log = open(os.path.join(tmp, f'{tag}.p{i}.log'), 'w')
    procs.append(subprocess.Popen(
        _tpu_args(config, workdir, cache,
                  [f'--coordinator_address=localhost:{port}',
                   '--num_processes=2', f'--process_id={i}',
                   '--coordinator_timeout=120', *extra]),
        cwd=ROOT, env=_env(2, cache), stdout=log, stderr=subprocess.STDOUT))
  return procs


def _log(tmp, name):
  with open(os.path.join(tmp, name)) as f:
    return f.read()


def _steps(ckpt_dir):
  if not os.path.isdir(ckpt_dir):
    return []
  return sorted(int(d) for d in os.listdir(ckpt_dir) if re.fullmatch(r'\d+',
                                                                     d))


def _wait(procs, timeout=400):
  for p in procs:
    p.wait(timeout=timeout)
  return [p.returncode for p in procs]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  tmp = str(tmp_path_factory.mktemp('multihost'))
  config = os.path.join(tmp, 'tiny.py')
  with open(config, 'w') as f:
    f.write(TINY_CONFIG)
  cache = os.path.join(tmp, 'cache')
  two = os.path.join(tmp, 'two')
  # 1. Two processes; process 1 SIGKILLed once a checkpoint is written.
  procs = _launch(config, two, cache, tmp, 'first')
  deadline = time.time() + 400
  while not _steps(os.path.join(two, 'checkpoints')):
    assert time.time() < deadline, _log(tmp, 'first.p0.log')[-3000:]
    assert procs[0].poll() is None, _log(tmp, 'first.p0.log')[-3000:]
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGKILL)
  done_at_kill = _steps(os.path.join(two, 'checkpoints'))
  time.sleep(1.)
  procs[0].send_signal(signal.SIGKILL)
  _wait(procs)
  # 2. Both restarted: they resume from the last complete checkpoint.
  rcs = _wait(_launch(config, two, cache, tmp, 'second'))
  assert rcs == [0, 0], _log(tmp, 'second.p0.log')[-3000:] + _log(
      tmp, 'second.p1.log')[-3000:]
  return {'tmp': tmp, 'config': config, 'cache': cache, 'two': two,
          'done_at_kill': done_at_kill}


def test_killed_two_process_run_resumes_and_equals_one_process(runs):
  tmp = runs['tmp']
  assert max(runs['done_at_kill']) < STEPS, runs['done_at_kill']
  second = _log(tmp, 'second.p0.log')
  assert re.search(r'resumed from checkpoint at meta-step \d+', second)
  assert 'process 0 of 2: 2 local of 4 devices' in second
  # Only process 0 writes the CSV and the export; both hold their shards.
  assert 'step 12/12' in second
  assert 'step 12/12' not in _log(tmp, 'second.p1.log')
  assert os.path.exists(os.path.join(runs['two'], 'metrics.csv'))
  proc = subprocess.run(
      [sys.executable, '-c', CHECK, runs['config'],
       os.path.join(tmp, 'one'), runs['two']],
      cwd=ROOT, env=_env(4, runs['cache']), capture_output=True, text=True,
      timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'restored on 4 device(s)' in proc.stdout
  assert 'restored on 1 device(s)' in proc.stdout
  assert 'OK multihost' in proc.stdout


def test_restore_on_a_device_count_that_does_not_divide_is_refused(runs):
  proc = subprocess.run(
      _tpu_args(runs['config'], runs['two'], runs['cache'],
                ['--single_process']),
      cwd=ROOT, env=_env(3, runs['cache']), capture_output=True, text=True,
      timeout=300)
  assert proc.returncode != 0
  assert ('tasks.num_agents: 4 agents cannot be split evenly over '
          '1 process(es) x 3 device(s) (3 in all) (the checkpoint was written '
          'on 2 process(es) x 2 device(s) (4 in all)') in proc.stderr, (
              proc.stderr[-2000:])


def test_unreachable_coordinator_and_mismatched_configs(runs):
  tmp = runs['tmp']
  proc = subprocess.run(
      _tpu_args(runs['config'], os.path.join(tmp, 'x'), runs['cache'],
                [f'--coordinator_address=localhost:{_free_port()}',
                 '--num_processes=2', '--process_id=1',
                 '--coordinator_timeout=2']),
      cwd=ROOT, env=_env(2, runs['cache']), capture_output=True, text=True,
      timeout=300)
  assert proc.returncode != 0
  assert 'cannot be reached: no answer within the 2 s timeout' in (
      proc.stderr), proc.stderr[-2000:]
  rcs = _wait(_launch(runs['config'], os.path.join(tmp, 'mismatch'),
                      runs['cache'], tmp, 'mismatch',
                      ((), ('--config.seed=1',))), timeout=300)
  assert rcs[0] != 0 and rcs[1] != 0
  for i in range(2):
    assert 'processes [1] run a config different from process 0' in _log(
        tmp, f'mismatch.p{i}.log')
  assert not os.path.exists(os.path.join(tmp, 'mismatch', 'checkpoints'))


def test_two_process_training_equals_one_process(runs):
  """--job=train: 2 processes x 2 devices (2 seeds x 2 env shards)."""
  from configs import a2c_catch  # pylint: disable=g-import-not-at-top
  from launchers.lib import training  # pylint: disable=g-import-not-at-top
  tmp = runs['tmp']
  overrides = ['--config.num_seeds=2', '--config.num_updates=20',
               '--config.log_every=10']
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'launchers.tpu', '--job=train',
       '--config=configs/a2c_catch.py', f'--workdir={tmp}/train', *overrides,
       f'--compilation_cache_dir={runs["cache"]}',
       f'--coordinator_address=localhost:{port}', '--num_processes=2',
       f'--process_id={i}'],
      cwd=ROOT, env=_env(2, runs['cache']), stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL) for i in range(2)]
  assert _wait(procs, timeout=300) == [0, 0]
  with open(os.path.join(tmp, 'train', 'summary.json')) as f:
    two = json.load(f)['final_return_per_seed']
  cfg = a2c_catch.get_config()
  cfg.num_seeds, cfg.num_updates, cfg.log_every = 2, 20, 10
  one = training.train(cfg, '', verbose=False)['final_return']
  np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6)
