"""The ablation studies (launchers/studies/findings.py): the plan of runs, field
errors before anything compiles, and the summary's normalisation by hand."""

import numpy as np
import pytest

from launchers.studies.configs import findings as findings_config
from launchers.studies.lib import ablations as studies


def test_plan_covers_every_env_arm_and_seed():
  cfg = findings_config.get_config()
  plan = studies.plan(cfg)
  assert sorted(plan) == ['pipeline', 'structure']
  structure = plan['structure']['runs']
  assert len(structure) == 4 * cfg.seeds  # four arms on catch
  pipeline = plan['pipeline']['runs']
  assert len(pipeline) == 2 * 2 * cfg.seeds  # two arms x two envs
  # Arms override the meta-training config; the rest is the env's own.
  by = {(r.env, r.arm, r.seed): r.meta_cfg for r in structure + pipeline}
  assert by[('catch', 'l2lgd2', 0)].optimizer.cell == 'l2lgd2'
  v2024 = by[('catch', 'optim4rl_2024', 1)]
  assert (v2024.optimizer.preprocessor, tuple(v2024.optimizer.mlp_dims),
          v2024.meta.second_order, v2024.seed) == ('identity', (), False, 1)
  assert by[('catch', 'optim4rl', 0)].meta.pipeline
  assert not by[('small_dense_short', 'optim4rl_no_pipeline', 2)].meta.pipeline
  # The study's budget replaces the env config's.
  assert all(m.tasks.num_agents == cfg.num_agents
             and m.num_meta_steps == cfg.num_meta_steps for m in by.values())
  # Every (env, arm, seed) has its own folder (resume reads it back); a
  # run in two studies (catch optim4rl) is one folder, meta-trained once.
  folders = {(r.env, r.arm, r.seed): r.folder for r in structure + pipeline}
  assert len(set(folders.values())) == len(folders) == 21


@pytest.mark.parametrize('edit, match', [
    (lambda c: setattr(c, 'run', 'structure,nope'), 'run: unknown study'),
    (lambda c: setattr(c.studies.structure, 'arms', 'optim4rl,adamw'),
     r'studies.structure.arms: unknown arm .adamw.'),
    (lambda c: setattr(c.studies.pipeline, 'envs', 'pong'),
     'env .pong. has no meta-training config'),
    (lambda c: setattr(c, 'seeds', 0), 'seeds'),
    (lambda c: c.arms.update({'optim4rl': {'optimiser': {'cell': 'x'}}}),
     'arms.optim4rl: not a meta-training field: .*optimiser'),
])
def test_bad_fields_are_named(edit, match):
  cfg = findings_config.get_config()
  edit(cfg)
  with pytest.raises(ValueError, match=match):
    studies.plan(cfg)


def test_summary_normalises_random_to_0_and_adam_to_1():
  cfg = findings_config.get_config()
  cfg.run = 'structure'
  cfg.studies.structure.arms = 'optim4rl,linear'
  cfg.seeds = 2
  plan = studies.plan(cfg)
  reference = {'catch': {'adam': np.array([1.0, 0.8]),
                         'untrained optim4rl': np.array([0.5, 0.3]),
                         'random policy': np.array([-0.6, -0.4])}}
  # Floor -0.5, Adam 0.9: normalized = (x + 0.5) / 1.4.
  rows = [{'env': 'catch', 'arm': arm, 'seed': s, 'test_return': x,
           'test_normalized': (x + 0.5) / 1.4, 'meta_seconds': 10. * (s + 1)}
          for arm, xs in (('optim4rl', (0.9, 0.2)), ('linear', (-0.5, -0.5)))
          for s, x in enumerate(xs)]
  out = {r['optimizer']: r for r in
         studies._summarize(plan, rows, reference, cfg)}  # pylint: disable=protected-access
  assert out['adam']['normalized'] == pytest.approx(1.0)
  assert out['random policy']['normalized'] == 0.0
  assert out['untrained optim4rl']['normalized'] == pytest.approx(0.9 / 1.4)
  assert out['optim4rl']['normalized'] == pytest.approx(1.05 / 1.4)
  assert out['optim4rl']['normalized_std'] == pytest.approx(0.35 / 1.4)
  assert out['optim4rl']['seed_kind'] == 'meta'
  assert out['linear']['normalized'] == pytest.approx(0.0)
  assert out['linear']['meta_seconds_mean'] == pytest.approx(15.)
  md = studies.markdown(list(out.values()), cfg)
  assert '| catch | optim4rl | 0.550 ± 0.350 | 0.750 ± 0.250 | 2 (meta) |' in md
  assert '-0.000' not in md
