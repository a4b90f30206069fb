"""8 virtual CPU devices give the 1-device results: meta-training (the
population split over devices), ES (a generation's members split) and PPO /
A2C training (seeds and env batch split), each in one process that runs
both placements; a PPO run stopped and resumed across the 8 devices
continues exactly."""

import os
import subprocess
import sys
import textwrap

import conftest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent('''
    import os, sys, tempfile
    import jax, numpy as np
    import lopt
    from lopt import meta
    from agents import a2c, environments, networks
    from configs import a2c_catch, ppo_brax
    from launchers.lib import training
    assert jax.device_count() == 8, jax.devices()

    # Meta-training: 8 agents on 1 device vs 1 agent per device.
    agent = a2c.make_a2c(environments.make('catch'),
                         networks.NetworkConfig('mlp', (8,)),
                         a2c.A2CConfig(num_envs=1, rollout_len=5))
    lo = lopt.learned_optimizer(hidden_size=4, mlp_dims=(4,))
    def trainer(devices):
      return meta.make_meta_trainer(
          [meta.Task('catch', agent, 8, 1e-2)], lo,
          meta.make_meta_optimizer(1e-2), num_inner_steps=2,
          reset_interval=4, steps_per_call=3, num_devices=devices)
    single = trainer(1)
    s1, _ = single.run(single.init(jax.random.PRNGKey(0)))
    sharded = trainer(8)
    s8 = meta.init_sharded(sharded, jax.random.PRNGKey(0))
    leaf = jax.tree.leaves(s8.population)[0]
    assert len(leaf.sharding.device_set) == 8, leaf.sharding
    s8, _ = sharded.run(s8)
    leaf = jax.tree.leaves(s8.population)[0]
    assert len(leaf.sharding.device_set) == 8, leaf.sharding
    for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s8)):
      np.testing.assert_allclose(np.asarray(a, np.float64),
                                 np.asarray(b, np.float64),
                                 rtol=1e-4, atol=1e-6)
    try:
      trainer(3)
    except ValueError as e:
      assert 'cannot be split evenly over 3 devices' in str(e)
    else:
      raise AssertionError('8 agents on 3 devices accepted')
    print('OK meta', flush=True)

    # ES: 8 members of a generation on 1 device vs 1 member per device (a
    # whole A2C run each); the same mean after two generations.
    from lopt import es
    def fitness(mp, key):
      opt = lo.opt_fn(mp, 1e-2)
      state = a2c.init_state(agent, opt, key)
      _, m = a2c.make_train(agent, opt, 4)(state)
      return jax.numpy.sum(m['reward_sum']) + jax.numpy.sum(m['entropy'])
    start = lo.init(jax.random.PRNGKey(1))
    def es_run(devices):
      t = es.make_es_trainer(fitness, start, population_size=8, sigma=0.05,
                             learning_rate=1e-2, steps_per_call=2,
                             mesh=meta.population_mesh(jax.devices()[:devices]))
      init = es.init_sharded_fn(t, np.asarray(jax.random.PRNGKey(2)),
                                meta.population_mesh(jax.devices()[:devices]))
      state = init(np.asarray(jax.random.PRNGKey(2)))
      run = es.run_sharded_fn(t, state,
                              meta.population_mesh(jax.devices()[:devices]))
      return run(state)[0]
    e1, e8 = es_run(1), es_run(8)
    assert int(e8.step) == 2
    for a, b in zip(jax.tree.leaves(e1.meta_params),
                    jax.tree.leaves(e8.meta_params)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    print('OK es', flush=True)

    # PPO on CartPole: 2 seeds x 8 envs; 8 devices = 2 seed x 4 env shards.
    cfg = ppo_brax.get_config('cartpole,cpu')
    cfg.episode_length, cfg.reset_mode = 0, ''
    cfg.num_seeds, cfg.num_updates, cfg.log_every = 2, 6, 3
    cfg.ppo.num_envs, cfg.ppo.unroll_len, cfg.ppo.num_minibatches = 8, 8, 2
    cfg.ppo.policy_hidden, cfg.ppo.value_hidden = (16,), (16,)
    one = training.train(cfg, '', verbose=False, devices=jax.devices()[:1])
    eight = training.train(cfg, '', verbose=False)
    np.testing.assert_allclose(one['returns'], eight['returns'], rtol=1e-4,
                               atol=1e-5)
    assert np.all(np.isfinite(one['returns'])), one['returns']
    print('OK ppo', flush=True)

    # Stopped after its first chunk and resumed: the checkpoint restores
    # into the 8-device placement and the run continues to the bit.
    sys.path.insert(0, 'tests')
    import stopping
    work = tempfile.mkdtemp()
    first = training.train(cfg, work, verbose=False, resume=True,
                           stop=stopping.StopAfterRows(
                               os.path.join(work, 'returns.csv'), 1))
    rest = training.train(cfg, work, verbose=False, resume=True)
    assert first['stopped_early'] and len(first['returns']) == 1
    np.testing.assert_array_equal(rest['returns'], eight['returns'])
    print('OK resume', flush=True)

    # 3 seeds x 16 envs: the seeds take 1 device, so envs split 8 ways.
    shape = training.mesh_shape(3, 16, 8)
    assert shape == (1, 8), shape
    try:
      training.mesh_shape(3, 12, 8)
    except ValueError as e:
      assert 'num_envs must be a multiple of 8' in str(e), e
    else:
      raise AssertionError('12 envs x 3 seeds on 8 devices accepted')
    print('OK placement', flush=True)
''')


def test_eight_devices_match_one_device():
  env = dict(os.environ,
             XLA_FLAGS=conftest.xla_flags(
                 '--xla_force_host_platform_device_count=8'),
             JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-c', SCRIPT], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for tag in ('OK meta', 'OK es', 'OK ppo', 'OK resume', 'OK placement'):
    assert tag in proc.stdout, proc.stdout[-2000:]
