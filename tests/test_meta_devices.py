"""Meta-training with the population sharded over several (CPU) devices."""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent('''
    import jax, numpy as np
    import lopt
    from lopt import meta
    from agents import a2c, environments, networks
    assert jax.device_count() == 4, jax.devices()
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
    sharded = trainer(4)
    s4 = meta.shard(sharded.init(jax.random.PRNGKey(0)))
    leaf = jax.tree.leaves(s4.population)[0]
    assert len(leaf.sharding.device_set) == 4, leaf.sharding
    s4, m = sharded.run(s4)
    leaf = jax.tree.leaves(s4.population)[0]
    assert len(leaf.sharding.device_set) == 4, leaf.sharding
    for a, b in zip(jax.tree.leaves(s1.meta_params),
                    jax.tree.leaves(s4.meta_params)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    try:
      trainer(3)
    except ValueError as e:
      assert 'cannot be split evenly over 3 devices' in str(e)
    else:
      raise AssertionError('8 agents on 3 devices accepted')
    print('OK sharded')
''')


def test_population_sharded_over_devices_matches_one_device():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-c', SCRIPT], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'OK sharded' in proc.stdout
