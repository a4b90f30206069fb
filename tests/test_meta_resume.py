"""meta_train.py: a SIGKILLed and resumed run equals an uninterrupted one."""

import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import lopt

from configs import a2c_catch
from configs import meta_catch
from launchers.lib import meta_training
from launchers.lib import training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny Catch meta-training run (fast to compile, a few ms per meta-step).
OVERRIDES = {
    'tasks.num_agents': 4,
    'optimizer.hidden_size': 4,
    'optimizer.mlp_dims': (4,),
    'network.torso': 'mlp',
    'network.hidden_sizes': (8,),
    'a2c.rollout_len': 5,
    'meta.num_inner_steps': 2,
    'meta.reset_interval': 3,
    'num_meta_steps': 60,
    'log_every': 2,
    'save_every': 4,
    'keep_checkpoints': 2,
}


def _config():
  cfg = meta_catch.get_config()
  for key, value in OVERRIDES.items():
    node = cfg
    *path, leaf = key.split('.')
    for p in path:
      node = node[p]
    node[leaf] = value
  return cfg


def _command(workdir, **extra):
  # The executable cache is opt-in: on here, so that resuming through it
  # is checked to stay bitwise equal.
  args = [sys.executable, '-m', 'launchers.meta_train',
          '--config=configs/meta_catch.py', f'--workdir={workdir}',
          '--executable_cache']
  for key, value in {**OVERRIDES, **extra}.items():
    args.append(f'--config.{key}={value}')
  return args


def _checkpoints(workdir):
  d = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(d):
    return []
  return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def _start_and_signal(workdir, sig, after_step, log):
  """Starts meta_train.py; sends `sig` once a checkpoint > after_step exists."""
  proc = subprocess.Popen(_command(workdir), cwd=ROOT, stdout=log,
                          stderr=subprocess.STDOUT)
  deadline = time.time() + 400
  while time.time() < deadline and proc.poll() is None:
    ckpts = _checkpoints(workdir)
    if ckpts and ckpts[-1] > after_step:
      proc.send_signal(sig)
      break
    time.sleep(0.02)
  proc.wait(timeout=300)
  return proc.returncode, _checkpoints(workdir)


def _meta_params(path):
  with np.load(path, allow_pickle=False) as f:
    return {k: f[k] for k in f.files if not k.startswith('__')}


def test_killed_and_resumed_run_is_bitwise_equal(tmp_path):
  workdir = str(tmp_path / 'interrupted')
  with open(tmp_path / 'log.txt', 'w') as log:
    # 1. SIGKILL after the first checkpoint: no chance to save anything more.
    rc, ckpts = _start_and_signal(workdir, signal.SIGKILL, 0, log)
    assert rc == -signal.SIGKILL, 'run ended before it could be killed'
    killed_at = ckpts[-1]
    assert killed_at < OVERRIDES['num_meta_steps']
    assert not os.path.exists(os.path.join(workdir, 'meta_params.npz'))
    # 2. Resume, then SIGTERM: saves a checkpoint and exits cleanly.
    rc, ckpts = _start_and_signal(workdir, signal.SIGTERM, killed_at, log)
    assert rc == 0
    assert killed_at < ckpts[-1] < OVERRIDES['num_meta_steps']
    assert len(ckpts) <= OVERRIDES['keep_checkpoints']
    # 3. Resume to the end.
    done = subprocess.run(_command(workdir), cwd=ROOT, stdout=log,
                          stderr=subprocess.STDOUT, timeout=400)
    assert done.returncode == 0
  # The command line exports a kept checkpoint and trains nothing.
  kept = _checkpoints(workdir)
  exported = subprocess.run(_command(workdir) + [f'--export_step={kept[0]}'],
                            cwd=ROOT, capture_output=True, text=True,
                            timeout=400)
  assert exported.returncode == 0, exported.stderr[-2000:]
  out = os.path.join(workdir, f'meta_params_{kept[0]}.npz')
  assert f'meta-params of checkpoint {kept[0]}: {out}' in exported.stdout
  assert lopt.serialization.read_metadata(out)['extra']['meta_step'] == kept[0]
  assert _checkpoints(workdir) == kept
  text = (tmp_path / 'log.txt').read_text()
  assert text.count('resumed from checkpoint') == 2
  assert 'signal 15: saving a checkpoint' in text
  # The resumed runs load both programs from the executable cache (the
  # suite's compile cache folder) and still end bitwise equal below.
  assert text.count('executable cache: init hit') >= 2, text[-3000:]
  assert text.count(', run hit') >= 2

  reference = str(tmp_path / 'uninterrupted')
  summary = meta_training.meta_train(_config(), reference, verbose=False)
  assert summary['meta_step'] == OVERRIDES['num_meta_steps']
  a = _meta_params(os.path.join(workdir, 'meta_params.npz'))
  b = _meta_params(os.path.join(reference, 'meta_params.npz'))
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  # The metrics CSV has each meta-step exactly once despite the restarts.
  with open(os.path.join(workdir, 'metrics.csv')) as f:
    steps = [int(line.split(',')[0]) for line in f.readlines()[1:]]
  assert steps == list(range(1, OVERRIDES['num_meta_steps'] + 1))


def test_checkpoint_of_another_configuration_is_refused(tmp_path):
  cfg = _config()
  cfg.num_meta_steps = 2
  cfg.save_every = 2
  meta_training.meta_train(cfg, str(tmp_path), verbose=False)
  shutil.copy(tmp_path / 'meta_params.npz', tmp_path / 'at_2.npz')
  other = _config()
  other.optimizer.hidden_size = 8
  with pytest.raises(ValueError, match='optimizer.hidden_size: checkpoint '
                     'has 4, config has 8'):
    meta_training.meta_train(other, str(tmp_path), verbose=False)
  # Nothing saved was lost.
  assert os.path.exists(tmp_path / 'checkpoints' / '2')
  # Changing only the run length is fine (resumes).
  more = _config()
  more.num_meta_steps = 4
  more.save_every = 2
  summary = meta_training.meta_train(more, str(tmp_path), verbose=False)
  assert summary['meta_step'] == 4
  # A kept checkpoint exports the meta-params the run had then: those of
  # the run that stopped at 2, to the bit.
  out = meta_training.export_checkpoint(more, str(tmp_path), 2)
  assert out == str(tmp_path / 'meta_params_2.npz')
  assert lopt.serialization.read_metadata(out)['extra']['meta_step'] == 2
  a, b = _meta_params(str(tmp_path / 'at_2.npz')), _meta_params(out)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  with pytest.raises(ValueError, match=r'step: no checkpoint of meta-step 3 '
                     r'in .*; kept: \[2, 4\]'):
    meta_training.export_checkpoint(more, str(tmp_path), 3)
  with pytest.raises(ValueError, match='optimizer.hidden_size: checkpoint '
                     'has 4, config has 8'):
    meta_training.export_checkpoint(other, str(tmp_path), 2)
  # The exported frozen meta-params train a fresh agent through train.py.
  ev = a2c_catch.get_config()
  ev.optimizer.name = 'learned'
  ev.optimizer.meta_params_path = summary['meta_params_path']
  ev.num_updates, ev.log_every, ev.a2c.num_envs = 10, 5, 2
  result = training.train(ev, str(tmp_path / 'eval'), verbose=False)
  assert not result['nonfinite']
  assert result['returns'].shape == (2, 1)


@pytest.mark.parametrize('key,value,match', [
    ('tasks.env_names', ('pong',), "tasks.env_names: unknown environment"),
    ('optimizer.cell', 'lstm', "cell: unknown cell 'lstm'"),
    ('optimizer.preprocessor', 'sqrt', 'preprocessor: unknown'),
    ('meta.meta_loss', 'ppo9', 'meta_loss: unknown meta-loss head'),
    ('meta.reset_interval', 0, 'meta.reset_interval: must be an int >= 1'),
    ('tasks.learning_rates', (0.,), 'tasks.learning_rates: must be'),
    ('save_every', 3, 'save_every: must be a multiple of log_every'),
    # Env options reach meta-training through the launchers' one factory.
    ('episode_length', 100, 'episode_length: catch has a fixed episode'),
    ('reset_mode', 'restart', "reset_mode: unknown 'restart'"),
    ('meta.init_path', '/no/such/start.npz', 'meta.init_path: cannot load'),
])
def test_bad_input_fails_before_compiling(tmp_path, key, value, match):
  cfg = _config()
  node = cfg
  *path, leaf = key.split('.')
  for p in path:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ValueError, match=match):
    meta_training.meta_train(cfg, str(tmp_path), verbose=False)
  assert not os.path.exists(tmp_path / 'checkpoints')


def test_ppo_brax_meta_config_validates_and_rejects_bad_ppo_fields():
  from configs import meta_ppo_brax  # pylint: disable=g-import-not-at-top
  cfg = meta_ppo_brax.get_config('ant,humanoid')
  assert cfg.tasks.env_names == ('ant', 'humanoid')
  assert tuple(cfg.tasks.reward_scales) == (1., 1.)
  # Validation builds each task's Brax env (about 30 s for ant or humanoid
  # here): the checks are the same for any task, so the cheapest one.
  cfg = meta_ppo_brax.get_config('inverted_pendulum')
  meta_training.validate(cfg)
  # 50 env steps per rollout cannot be split into 3 minibatches.
  cfg.ppo.num_envs, cfg.ppo.unroll_len, cfg.ppo.num_minibatches = 5, 10, 3
  with pytest.raises(ValueError, match='num_minibatches: 3 does not divide'):
    meta_training.validate(cfg)
  cfg = meta_ppo_brax.get_config('inverted_pendulum')
  cfg.tasks.reward_scales = (1., 1.)
  with pytest.raises(ValueError, match='tasks.reward_scales: 2 values for 1'):
    meta_training.validate(cfg)


def test_meta_training_starts_from_init_path_of_the_same_cell(tmp_path):
  # meta.init_path: every seed starts from the file's meta-params; a file
  # of another cell is refused, the differing field named, before compiling.
  cfg = _config()
  lo = lopt.learned_optimizer(config=meta_training.cell_config(cfg))
  start = jax.tree.map(lambda x: x + 0.25, lo.init(jax.random.PRNGKey(7)))
  cfg.meta.init_path = lopt.save(str(tmp_path / 'start.npz'), start, lo)
  # The trainer's optimizer (what meta_init draws from) gives the file's.
  built = meta_training.build(cfg)[1]
  for key in (0, 1):
    got = built.init(jax.random.PRNGKey(key))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(start)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  other = lopt.learned_optimizer(hidden_size=5, mlp_dims=(4,))
  cfg.meta.init_path = lopt.save(str(tmp_path / 'other.npz'),
                                 other.init(jax.random.PRNGKey(0)), other)
  with pytest.raises(ValueError, match=r'meta.init_path: .*other.npz is '
                     r'another cell: optimizer.hidden_size: the file has 5, '
                     r'the config 4'):
    meta_training.meta_train(cfg, str(tmp_path / 'run'), verbose=False)
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')
