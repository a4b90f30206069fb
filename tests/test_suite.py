"""The standard suite: rate selection on tuning seeds, fresh-seed reports,
normalisation, IQM and CIs, input checks and resuming."""

import os

import numpy as np
import pytest

from configs import evaluate as evaluate_config
from launchers.lib import suite
from launchers.lib import suite_summary
from launchers.lib import training
import stopping


def tiny_config(**overrides):
  """The standard preset on CartPole at a tiny budget."""
  cfg = evaluate_config.get_config('standard')
  cfg.envs = 'cartpole'
  cfg.optimizers = 'adam,rmsprop'
  cfg.rate_grid = '0.3,1,3'
  cfg.max_grid_extensions = 1
  cfg.tune_seeds = 2
  cfg.report_seeds = 2
  cfg.report_seed_start = 100
  cfg.seeds_per_batch = 0
  cfg.budgets = 'cartpole=1024'
  cfg.random_steps = 600
  for k, v in overrides.items():
    cfg[k] = v
  return cfg


def fake_train(returns, budget_aware=False):
  """A `training.train` stand-in: final return `returns(factor, seed)`
  (`budget_aware`: `returns(factor, seed, updates)`) per seed, where factor
  is the unit's rate over Adam's (2.5e-4)."""
  calls = []

  def train(cfg, workdir, label='', verbose=True, resume=False, stop=None):
    del workdir, verbose, resume, stop
    calls.append(label)
    factor = round(cfg.optimizer.learning_rate / 2.5e-4, 6)
    args = (factor, cfg.seed) + ((cfg.num_updates,) if budget_aware else ())
    final = np.array([returns(*args) for _ in range(cfg.num_seeds)],
                     np.float64)
    return {'final_return': final, 'env_steps': np.array([512, 1024]),
            'returns': np.stack([final / 2, final]), 'steps_per_second': 1.,
            'nonfinite': False}

  train.calls = calls
  return train


def run_fake(cfg, workdir, returns, monkeypatch, budget_aware=False):
  """Tune and report with `fake_train`; returns (plan, store, train)."""
  train = fake_train(returns, budget_aware)
  monkeypatch.setattr(suite, 'random_result', lambda unit, steps: {
      'final_return': np.full(unit.num_seeds, 10.)})
  monkeypatch.setattr(training, 'train', train)
  plan = suite.make_plan(cfg)
  store = suite.Store(str(workdir))
  suite.tune(plan, store, cfg.brax_steps)
  suite.report(plan, store, cfg.brax_steps)
  return plan, store, train


def test_rate_chosen_on_tuning_seeds_reported_on_fresh_ones(tmp_path,
                                                            monkeypatch):
  # Tuning seeds (base 0) prefer 3x; fresh seeds (base 100) prefer 1x, so
  # a selection that peeked at the fresh seeds would pick 1x.
  def returns(factor, seed):
    best = 3. if seed < 100 else 1.
    return 100. - 10. * abs(np.log(factor / best)) + (seed >= 100) * 5.

  plan, store, _ = run_fake(tiny_config(), tmp_path, returns, monkeypatch)
  chosen = suite.choices(plan, store)
  assert chosen[('cartpole', 'adam')] == 3.
  table, complete, scores = suite_summary.task_scores(
      store.rows, chosen, suite_summary.SuiteInfo(
          plan.tasks, plan.optimizers, plan.grid, plan.standard_steps,
          plan.tune_steps, 2, 2, [0], [100], ''))
  adam = [r for r in table if r['optimizer'] == 'adam'][0]
  # The fresh seeds' figure at 3x, not their own best (1x: 105).
  assert adam['tuned_return_mean'] == pytest.approx(105. - 10. * np.log(3.))
  assert complete == ['cartpole']
  # Tuned Adam is 1 on its own fresh seeds; at 1x it is above 1 here.
  np.testing.assert_allclose(scores['tuned', 'adam']['cartpole'], 1.)
  assert scores['at_1x', 'adam']['cartpole'][0] > 1.


def test_edge_winner_extends_the_grid_then_reselects(tmp_path, monkeypatch):
  # Returns grow with the rate: 3x (the top edge) wins, 9x is added, wins,
  # and max_grid_extensions=1 stops there.
  plan, store, train = run_fake(tiny_config(), tmp_path,
                                lambda factor, seed: factor, monkeypatch)
  assert suite.choices(plan, store)[('cartpole', 'adam')] == 9.
  assert any('tune_cartpole_adam_x9_' in c for c in train.calls)
  assert not any('_x27_' in c for c in train.calls)


def test_reduced_sweep_rechecked_at_the_standard_budget(tmp_path,
                                                       monkeypatch):
  # The 1,024-step sweep (2 updates) prefers 1x; at the standard 2,048
  # steps (4 updates) 0.3x is better, and the recheck of 1x and its
  # neighbours on the tuning seeds finds it; 0.3x is their edge, so 0.09x
  # (past the grid: the one extension allowed) is rechecked too, and loses.
  def returns(factor, seed, updates):
    del seed
    return -abs(np.log(factor / (1. if updates == 2 else 0.3)))

  cfg = tiny_config(envs='cartpole,acrobot',
                    budgets='cartpole=2048,acrobot=2048',
                    tune_steps='cartpole=1024,acrobot=1024')
  plan, store, train = run_fake(cfg, tmp_path, returns, monkeypatch, True)
  assert suite.choices(plan, store)[('cartpole', 'adam')] == 0.3
  rechecked = [c for c in train.calls if c.startswith('recheck_cartpole_adam')]
  assert [c.split('_')[3] for c in rechecked] == ['x0.3', 'x1', 'x3', 'x0.09']
  assert all(c.endswith('_2048') for c in rechecked)
  # Every sweep before any recheck; the rechecks optimizer by optimizer.
  stages = [c.split('_')[:3] for c in train.calls if not
            c.startswith('report')]
  first = stages.index(['recheck', 'cartpole', 'adam'])
  assert all(s[0] == 'tune' for s in stages[:first])
  assert [s[1:] for s in stages[first:]][::4] == [
      ['cartpole', 'adam'], ['acrobot', 'adam'], ['cartpole', 'rmsprop'],
      ['acrobot', 'rmsprop']]
  assert any(c.startswith('report_cartpole_adam_x0.3_') and
             c.endswith('_2048') for c in train.calls)


def test_all_reports_each_row_once_its_choice_is_final(tmp_path,
                                                       monkeypatch):
  # tune(then_report=True), as phase 'all' runs it: after every sweep,
  # Adam's recheck then its fresh-seed report, before rmsprop's recheck.
  def returns(factor, seed, updates):
    del seed
    return -abs(np.log(factor / (1. if updates == 2 else 0.3)))

  train = fake_train(returns, True)
  monkeypatch.setattr(suite, 'random_result', lambda unit, steps: {
      'final_return': np.full(unit.num_seeds, 10.)})
  monkeypatch.setattr(training, 'train', train)
  cfg = tiny_config(budgets='cartpole=2048', tune_steps='cartpole=1024')
  plan = suite.make_plan(cfg)
  store = suite.Store(str(tmp_path))
  suite.tune(plan, store, cfg.brax_steps, then_report=True)
  kinds = [c.split('_')[0] + '_' + c.split('_')[2] for c in train.calls]
  first_recheck = kinds.index('recheck_adam')
  assert set(kinds[:first_recheck]) == {'tune_adam', 'tune_rmsprop'}
  assert kinds[first_recheck:] == (['recheck_adam'] * 4 +
                                   ['report_adam'] * 2 +
                                   ['recheck_rmsprop'] * 4 +
                                   ['report_rmsprop'] * 2)
  # The random floor is there too; report() then has nothing left to run.
  assert any(r['stage'] == 'random' for r in store.rows)
  calls = len(train.calls)
  suite.report(plan, store, cfg.brax_steps)
  assert len(train.calls) == calls


def test_recheck_walks_past_a_winning_edge_hand_values():
  grid = (0.1, 0.3, 1., 3., 10.)
  swept = grid + (33.3,)
  # Inside the rechecked factors: done.
  assert suite_summary.walk(10., [3., 10., 33.3], swept, grid, 2) is None
  # On an edge with a swept factor beyond it: that factor.
  assert suite_summary.walk(3., [3., 10., 33.3], swept, grid, 2) == 1.
  # On the swept edge: past it, by the grid's step, while extensions last.
  assert suite_summary.walk(33.3, [3., 10., 33.3], swept, grid, 2) == 111.
  assert suite_summary.walk(111., [3., 10., 33.3, 111.], swept, grid,
                            2) is None
  assert suite_summary.walk(0.1, [0.1, 0.3], grid, grid, 1) == 0.0333


def test_selection_and_extension_helpers():
  scores = {0.3: np.array([1., 2.]), 1.: np.array([3., np.nan]),
            3.: np.array([np.nan, np.nan])}
  assert suite_summary.select_rate(scores) == 1.  # NaN seeds left out
  grid = (0.1, 0.3, 1., 3., 10.)
  assert suite_summary.extension(0.1, grid, grid, 2) == pytest.approx(0.0333)
  assert suite_summary.extension(10., grid, grid, 2) == pytest.approx(33.3)
  assert suite_summary.extension(1., grid, grid, 2) is None
  assert suite_summary.extension(33.3, grid + (33.3,), grid, 1) is None
  assert suite_summary.neighbours(3., grid) == [1., 3., 10.]
  assert suite_summary.neighbours(0.1, grid) == [0.1, 0.3]


def test_sweep_so_far_table_hand_values():
  # Two optimizers' tuning runs on a task with no fresh seeds yet: each
  # row's mean over seeds per factor, its best in bold, a factor not yet
  # run left blank, an optimizer with no runs left out.
  # Then the rechecks at the standard budget so far, in a table of their
  # own.
  def row(opt, factor, seed, value, stage='tune', steps='1000000'):
    return {'stage': stage, 'task': 'asterix_minatar', 'optimizer': opt,
            'factor': str(factor), 'seed_start': '0', 'seed': str(seed),
            'env_steps': steps, 'final_return': str(value)}
  rows = [row('adam', 1, 0, 1.), row('adam', 1, 1, 2.), row('adam', 3, 0, 4.),
          row('adam', 3, 1, 5.), row('lion', 1, 0, 7.), row('lion', 1, 1, 8.),
          row('adam', 3, 0, 20., 'recheck', '10000000'),
          row('adam', 3, 1, 30., 'recheck', '10000000')]
  info = suite_summary.SuiteInfo(('asterix_minatar', 'cartpole'),
                                 ('adam', 'lion', 'rmsprop'), (1., 3.), {},
                                 {}, 2, 2, [0], [100], '')
  lines = suite_summary.sweep_tables(rows, info, info.tasks)
  assert lines[0] == ('### asterix_minatar (1,000,000 env steps, 2 tuning '
                      'seeds)')
  assert lines[2] == '| optimizer | x1 | x3 |'
  assert lines[4] == '| adam | 1.5 | **4.5** |'
  assert lines[5] == '| lion | **7.5** |  |'
  assert lines[6] == ''  # no rmsprop
  assert lines[7:] == [
      '### asterix_minatar (10,000,000 env steps, 2 tuning seeds, rechecks)',
      '', '| optimizer | x3 |', '|---|---|', '| adam | **25** |', '']


def test_normalize_hand_values():
  np.testing.assert_allclose(
      suite_summary.normalize([10., 55., 100., 120.], 10., 100.),
      [0., 0.5, 1., 1.2222222])


def test_iqm_and_ci_hand_values():
  # 8 runs x 1 task: the middle half is 3, 4, 5, 6.
  scores = np.array([[1.], [2.], [3.], [4.], [5.], [6.], [7.], [100.]])
  iqm, lo, hi = suite_summary.iqm_ci({'a': scores}, reps=500, seed=0)['a']
  assert iqm == pytest.approx(4.5)
  assert lo < iqm < hi
  assert hi < 100.  # the outlier is trimmed in most resamples
  assert suite_summary.iqm_ci({'a': scores}, reps=500, seed=0)['a'] == (
      iqm, lo, hi)
  # Another name beside it (drawn first) leaves its CI as it was.
  assert suite_summary.iqm_ci({'b': scores[::-1] * 2., 'a': scores},
                              reps=500, seed=0)['a'] == (iqm, lo, hi)


@pytest.mark.parametrize('field,value,match', [
    ('envs', 'cartpole,pong', "envs: unknown 'pong'"),
    ('optimizers', 'adam,adamm', "optimizers: unknown 'adamm'"),
    ('optimizers', 'rmsprop', 'optimizers: must include adam'),
    ('rate_grid', '0.3,3,10', 'rate_grid: .* must contain 1'),
    ('rate_grid', '1,x3', 'rate_grid: .* not comma-separated numbers'),
    ('rate_grid', '1,3', 'rate_grid: .* at least 3'),
    ('report_seed_start', 1, 'report_seed_start: the fresh seeds'),
    ('budgets', 'cartpole=0', 'budgets: .* positive integer'),
    ('tune_steps', 'cartpol=512', "tune_steps: 'cartpol=512' is not ENV=N"),
    ('tune_steps', 'cartpole=2048', 'tune_steps: cartpole=2048 is above'),
])
def test_bad_input_names_the_field(tmp_path, field, value, match):
  workdir = tmp_path / 'w'
  with pytest.raises(ValueError, match=match):
    suite.run(tiny_config(**{field: value}), str(workdir), 'tune')
  assert not workdir.exists()  # failed before any unit (or compile)


def test_bad_phase_and_task_subset(tmp_path):
  with pytest.raises(ValueError, match='phase: unknown'):
    suite.run(tiny_config(), str(tmp_path), 'sweep')
  with pytest.raises(ValueError, match="tasks: unknown 'acrobot'"):
    suite.make_plan(tiny_config(), 'acrobot')


def test_units_left_for_the_eta(tmp_path, monkeypatch):
  # CartPole, adam and rmsprop over 3 rates, one batch of 2 seeds a stage,
  # sweeps at 1,024 env steps, rechecks and reports at 2,048, the random
  # floor at 600: hand counts of (units, env steps over the seeds).
  cfg = tiny_config(budgets='cartpole=2048', tune_steps='cartpole=1024')
  plan = suite.make_plan(cfg)
  store = suite.Store(str(tmp_path))
  # Per optimizer 3 sweep units (1024 x 2), 3 rechecks and 2 reports
  # (2048 x 2, guessed); the floor 600 x 2.
  per_opt = 3 * 2048 + 3 * 4096 + 2 * 4096
  assert suite.units_left(plan, store) == (17, 2 * per_opt + 1200)
  assert suite.units_left(plan, store, report=False) == (
      12, 2 * (3 * 2048 + 3 * 4096))
  # Adam swept (1x wins): its rechecks are now named (0.3, 1, 3).
  train = fake_train(lambda f, seed: -abs(np.log(f)))
  runner = suite.Runner(store, 0, [], train_fn=train, verbose=False)
  assert suite.chosen_factor(plan, store, 'cartpole', 'adam', runner,
                             recheck=False) == 1.
  assert suite.units_left(plan, store) == (
      14, 3 * 4096 + 2 * 4096 + per_opt + 1200)
  # Everything run: nothing left.
  monkeypatch.setattr(suite, 'random_result', lambda unit, steps: {
      'final_return': np.full(unit.num_seeds, 10.)})
  monkeypatch.setattr(training, 'train', train)
  suite.tune(plan, store, cfg.brax_steps, then_report=True)
  assert suite.units_left(plan, store) == (0, 0)


def test_extra_units_change_no_choice(tmp_path, monkeypatch):
  cfg = tiny_config(budgets='cartpole=2048', tune_steps='cartpole=1024')
  plan = suite.make_plan(cfg)
  keys = [u.key for u in suite.extra_units(plan, 'recheck:1,0.5')]
  assert keys == ['recheck_cartpole_adam_x1_s0+2_2048',
                  'recheck_cartpole_adam_x0.5_s0+2_2048',
                  'recheck_cartpole_rmsprop_x1_s0+2_2048',
                  'recheck_cartpole_rmsprop_x0.5_s0+2_2048']
  assert [u.key for u in suite.extra_units(plan, 'tune:2')][0] == (
      'tune_cartpole_adam_x2_s0+2_1024')
  assert [u.key for u in suite.extra_units(plan, 'report:1')][0] == (
      'report_cartpole_adam_x1_s100+2_2048')
  for spec, match in (('sweep:1', "unknown stage 'sweep'"),
                      ('recheck:', 'is not STAGE:F'),
                      ('recheck:1,x', 'is not STAGE:F'),
                      ('recheck:-1', 'is not STAGE:F')):
    with pytest.raises(ValueError, match='extra: .*' + match):
      suite.extra_units(plan, spec)
  with pytest.raises(ValueError, match='extra: give it'):
    suite.run(cfg, str(tmp_path / 'x'), 'extra')
  with pytest.raises(ValueError, match='extra: give it'):
    suite.run(cfg, str(tmp_path / 'x'), 'tune', extra='recheck:1')
  assert not (tmp_path / 'x').exists()
  # A fake suite whose sweep (2 updates) prefers 3x and whose standard
  # budget prefers 0.5x: the rechecks walk from 3x down to 0.3x, never
  # asking for 0.5x. With the extra 0.5x units in the store (the best
  # rate there), every choice is still what it is without them.
  train = fake_train(lambda f, seed, updates: -abs(np.log(
      f / (3. if updates == 2 else 0.5))), budget_aware=True)
  monkeypatch.setattr(training, 'train', train)
  monkeypatch.setattr(suite, 'random_result', lambda unit, steps: {
      'final_return': np.full(unit.num_seeds, 10.)})
  work = str(tmp_path / 'w')
  suite.run(cfg, work, 'extra', extra='recheck:0.5')
  assert sorted(train.calls) == sorted(keys[1::2])
  suite.run(cfg, work, 'tune')
  plain = str(tmp_path / 'plain')
  suite.run(cfg, plain, 'tune')
  assert suite.choices(plan, suite.Store(work)) == suite.choices(
      plan, suite.Store(plain)) == {('cartpole', 'adam'): 0.3,
                                    ('cartpole', 'rmsprop'): 0.3}


def test_preset_sweeps_minatar_at_a_tenth():
  # The standard preset sweeps MinAtar at 1e6 and rechecks at 1e7; a
  # reduced budget named for a task outside `envs` is left out of the plan.
  plan = suite.make_plan(tiny_config(envs='cartpole,asterix_minatar',
                                     optimizers='adam'))
  assert plan.tune_steps == {'cartpole': 1024, 'asterix_minatar': 1_000_000}
  assert plan.standard_steps['asterix_minatar'] == 10_000_000


def test_resume_skips_finished_units(tmp_path):
  # Two real units on CartPole at 1,024 env steps each (2 seeds vmapped).
  units = [suite.Unit('tune', 'cartpole', 'adam', f, 0, 2, 1024)
           for f in (1., 3.)]
  calls = []

  def train(*args, **kwargs):
    calls.append(args[0].optimizer.learning_rate)
    return training.train(*args, **kwargs)

  store = suite.Store(str(tmp_path))
  runner = suite.Runner(store, 0, units, train_fn=train, verbose=False)
  runner.ensure(units[0])
  assert len(calls) == 1
  # A new process: the finished unit is read back and skipped.
  store = suite.Store(str(tmp_path))
  runner = suite.Runner(store, 0, units, train_fn=train, verbose=False)
  assert runner.total == 1
  for u in units:
    runner.ensure(u)
  assert calls == pytest.approx([2.5e-4, 7.5e-4])
  rows = suite.read_rows(os.path.join(tmp_path, suite.UNITS_CSV))
  assert len(rows) == 4  # 2 units x 2 seeds, none repeated
  assert all(np.isfinite(float(r['final_return'])) for r in rows)
  assert os.path.exists(store.curve_path(units[1]))
  assert not os.path.exists(os.path.join(tmp_path, suite.PARTIAL,
                                         units[1].key))


def test_stopped_unit_continues_from_its_checkpoint(tmp_path):
  # One real unit (CartPole, 2 seeds, 4 chunks of updates) stopped after
  # its second chunk: the runner raises `Stopped`, writes no rows and keeps
  # the checkpoint; a new process continues the unit from it, and its rows
  # are those of the unit run straight through.
  unit = suite.Unit('tune', 'cartpole', 'adam', 1., 0, 2, 2048)
  straight = suite.Store(str(tmp_path / 'straight'))
  suite.Runner(straight, 0, [unit], verbose=False).ensure(unit)
  work = str(tmp_path / 'stopped')
  partial = os.path.join(work, suite.PARTIAL, unit.key)
  stop = stopping.StopAfterRows(os.path.join(partial, 'returns.csv'), 2)
  with pytest.raises(suite.Stopped, match='the same command continues'):
    suite.Runner(suite.Store(work), 0, [unit], verbose=False,
                 stop=stop).ensure(unit)
  store = suite.Store(work)
  assert not store.done and os.listdir(os.path.join(partial, 'checkpoints'))
  suite.Runner(store, 0, [unit], verbose=False).ensure(unit)
  key = lambda r: (r['seed'], r['final_return'], r['env_steps'])
  assert ([key(r) for r in suite.Store(work).rows] ==
          [key(r) for r in suite.Store(str(tmp_path / 'straight')).rows])
  with open(store.curve_path(unit)) as a, open(
      straight.curve_path(unit)) as b:
    assert a.read() == b.read()
  assert not os.path.exists(partial)


def test_readme_table_between_markers(tmp_path):
  summary = tmp_path / 'summary.md'
  summary.write_text('# Title\n\nstatus line\n\n| t |\n\n## Per task\n| x |\n')
  readme = tmp_path / 'README.md'
  readme.write_text('intro\n')
  assert not suite_summary.write_readme_table(str(readme), str(summary))
  assert readme.read_text() == 'intro\n'
  readme.write_text(f'intro\n{suite_summary.README_BEGIN}\nold\n'
                    f'{suite_summary.README_END}\nrest\n')
  assert suite_summary.write_readme_table(str(readme), str(summary))
  text = readme.read_text()
  assert 'status line' in text and '| t |' in text and 'old' not in text
  assert '| x |' not in text and text.endswith('rest\n')


def _saved_optimizer(path, tasks=('catch', 'cartpole')):
  import jax  # pylint: disable=g-import-not-at-top
  import lopt  # pylint: disable=g-import-not-at-top
  lo = lopt.learned_optimizer(hidden_size=2, mlp_dims=(), grad_ema=0.9,
                              second_moment=0.999, adam_residual=True)
  extra = {} if tasks is None else {
      'config': {'tasks': {'env_names': list(tasks)}}}
  return lopt.save(str(path), lo.init(jax.random.PRNGKey(0)), lo,
                   extra=extra)


def test_a_meta_params_file_joins_the_suite_under_its_label(tmp_path,
                                                            monkeypatch):
  path = _saved_optimizer(tmp_path / 'mine.npz')
  cfg = tiny_config(optimizers=f'adam,mine={path}')
  plan = suite.make_plan(cfg)
  assert plan.optimizers == ('adam', 'mine')
  assert plan.files == {'mine': path}
  unit_cfg = suite.task_config('cartpole', 'mine', 3., 0, 1, 1024, 0,
                               plan.files['mine'])
  assert unit_cfg.optimizer.name == 'learned'
  assert unit_cfg.optimizer.meta_params_path == path
  assert unit_cfg.optimizer.learning_rate == pytest.approx(7.5e-4)
  # Seen tasks come from the file's meta-training config.
  assert suite_summary.seen_tasks('mine', plan.files) == ('catch',
                                                          'cartpole')
  # The runner trains the file's optimizer under the label (fake training
  # records the config it was given).
  given = []
  def train(cfg, workdir, label='', verbose=True, **kwargs):
    del workdir, verbose, kwargs
    given.append((label, cfg.optimizer.name, cfg.optimizer.meta_params_path))
    return {'final_return': np.ones(cfg.num_seeds), 'env_steps':
            np.array([1024]), 'returns': np.ones((1, cfg.num_seeds)),
            'steps_per_second': 1., 'nonfinite': False}
  unit = suite.Unit('tune', 'cartpole', 'mine', 1., 0, 2, 1024)
  runner = suite.Runner(suite.Store(str(tmp_path / 'w')), 0, [unit],
                        train_fn=train, verbose=False, files=plan.files)
  runner.ensure(unit)
  assert given == [(unit.key, 'learned', path)]


@pytest.mark.parametrize('spec,match', [
    ('adam,Mine={path}', r"optimizers: 'Mine=.*LABEL=PATH needs a label"),
    ('adam,adam={path}', r'LABEL=PATH needs a label'),
    ('adam,mine={missing}', r'optimizers: mine=.*cannot load it'),
    ('adam,mine={bare}', r'records no meta-training tasks'),
    ('adam,mine={path},mine={path}', r'optimizers: a name is given twice'),
])
def test_bad_meta_params_files_are_named(tmp_path, spec, match):
  path = _saved_optimizer(tmp_path / 'mine.npz')
  bare = _saved_optimizer(tmp_path / 'bare.npz', tasks=None)
  spec = spec.format(path=path, bare=bare, missing=tmp_path / 'no.npz')
  with pytest.raises(ValueError, match=match):
    suite.make_plan(tiny_config(optimizers=spec))


def test_cards_get_the_suite_figures_between_markers(tmp_path):
  from launchers.lib import common  # pylint: disable=g-import-not-at-top
  out = tmp_path / 'suite'
  common.write_csv(str(out / 'results.csv'), [
      {'task': 'cartpole', 'optimizer': 'mine', 'seen_in_meta_training':
       False, 'chosen_factor': 3., 'normalized_tuned': 0.95,
       'normalized_at_1x': 0.8},
      {'task': 'asterix_minatar', 'optimizer': 'mine',
       'seen_in_meta_training': True, 'chosen_factor': 1.,
       'normalized_tuned': 1.1, 'normalized_at_1x': 1.1},
      {'task': 'hopper', 'optimizer': 'mine', 'seen_in_meta_training':
       False, 'chosen_factor': '', 'normalized_tuned': '',
       'normalized_at_1x': ''}])
  common.write_csv(str(out / 'aggregate.csv'), [
      {'table': t, 'subset': sub, 'optimizer': 'mine', 'iqm': v,
       'ci_low': v - 0.1, 'ci_high': v + 0.1, 'tasks': 1}
      for t, sub, v in (('at_1x', 'held_out', 0.8), ('at_1x', 'seen', 1.1),
                        ('tuned', 'held_out', 0.95))])
  cards = tmp_path / 'cards'
  cards.mkdir()
  marked = (f'# mine\n\nintro\n{suite_summary.README_BEGIN}\nold figures\n'
            f'{suite_summary.README_END}\nrest\n')
  (cards / 'mine.md').write_text(marked)
  (cards / 'other.md').write_text(marked)       # not in the suite
  (cards / 'plain.md').write_text('# mine\n')   # no markers
  written = suite_summary.write_cards(str(cards), str(out))
  assert written == [str(cards / 'mine.md')]
  text = (cards / 'mine.md').read_text()
  assert 'old figures' not in text and text.endswith('rest\n')
  assert ('At the rate you give Adam: held-out 0.80 [0.70, 0.90] (1); '
          'seen 1.10 [1.00, 1.20] (1).') in text
  assert ('Each tuned: held-out 0.95 [0.85, 1.05] (1); seen none '
          'measured.') in text
  assert ('cartpole 0.80 / 0.95 (x3); asterix_minatar (seen) 1.10 / 1.10 '
          '(x1).') in text
  assert 'PARTIAL**: not yet measured on hopper.' in text
  assert (cards / 'other.md').read_text() == marked
