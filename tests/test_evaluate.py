"""launchers/evaluate.py: optimizer specs, the table, the plots."""

import csv
import os

import pytest

from configs import evaluate as evaluate_config
from launchers import evaluate


def test_evaluate_writes_table_and_plots(tmp_path):
  cfg = evaluate_config.get_config()
  cfg.envs = 'catch'
  cfg.optimizers = 'adam:1e-3,optim4rl:1e-3'
  cfg.num_seeds = 2
  cfg.num_updates = 20
  rows = evaluate.evaluate(cfg, str(tmp_path))
  assert [r['optimizer'] for r in rows] == ['adam', 'optim4rl']
  assert rows[0]['ratio_to_adam'] == 1.0
  assert all(r['seeds'] == 2 for r in rows)
  assert all(r['final_return_sem'] >= 0 for r in rows)
  with open(tmp_path / 'results.csv') as f:
    assert len(list(csv.DictReader(f))) == 2
  assert '| catch | optim4rl |' in (tmp_path / 'results.md').read_text()
  assert os.path.getsize(tmp_path / 'catch.png') > 0


@pytest.mark.parametrize('spec,match', [
    ('adam', 'is not NAME:LEARNING_RATE'),
    ('adam:fast', 'bad learning rate'),
    ('adamq:1e-3', 'optimizer.name: unknown optimizer'),
    ('adam:-1', 'optimizer.learning_rate: must be'),
])
def test_bad_optimizer_specs(spec, match):
  with pytest.raises(ValueError, match=match):
    evaluate.with_optimizer(evaluate.env_config('catch'), spec)


def test_env_families_pick_their_agent():
  assert evaluate.env_config('ant').agent == 'ppo'
  assert evaluate.env_config('ant').ppo.num_envs == 64
  assert evaluate.env_config('ant', paper_scale=True).ppo.num_envs == 4096
  assert evaluate.env_config('small_dense_short').get('agent', 'a2c') == 'a2c'
