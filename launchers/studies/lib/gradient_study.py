r"""The gradient study behind `launchers/studies/gradients.py` (its library part).

Finding 1 (Lan et al., 2023, Sec. 4.1-4.2): agent-gradients span many orders
of magnitude with tiny absolute values, and their distribution drifts with
the training stage. For every source (A2C on an env, or a supervised MLP
regression) `num_seeds` learners train with Adam; the gradients of `window`
consecutive updates are recorded at each stage (`launchers.studies.lib.grad_probe`) and
summarised (`launchers.studies.lib.grad_stats`). `run` writes

  grad_stats.csv        per (source, stage): mean and std over seeds of the
                        log10|g| percentiles, spread (decades), zero and
                        small fractions, drift (W1 in decades)
  grad_stats_seeds.csv  the same per seed
  grad_hist.png         log10|g| histograms, one panel per source, stages
                        overlaid
  grad_spread.png       p1 / p50 / p99 of log10|g| against training progress

Finding 2: a GRU (hidden 8) + MLP head, coordinate-wise, trained to output
g from g on the recorded agent gradients (`launchers.studies.lib.identity_fit`), with raw
(`identity`) or processed (`log_sign`) input and otherwise the same model,
loss, data and budget. Writes identity.csv (held-out metrics per run and
source), identity_summary.csv (mean and std over seeds) and identity.png
(held-out |g_hat| against |g|). Everything also goes to summary.json.
"""

import os
import time
from typing import Dict, List, Sequence, Tuple

import jax
import numpy as np
import optax

from agents import a2c
from agents import brax_envs
from agents import environments
from launchers.studies.lib import grad_probe
from agents import networks
from launchers.lib import common
from launchers.studies.lib import grad_stats
from launchers.studies.lib import identity_fit

REGRESSION = 'regression'


def _split(spec: str) -> List[str]:
  return [s.strip() for s in str(spec).split(',') if s.strip()]


def _ints(spec: str, field: str) -> Tuple[int, ...]:
  try:
    values = tuple(int(s) for s in _split(spec))
  except ValueError as e:
    raise ValueError(f'{field}: comma-separated ints expected, got '
                     f'{spec!r}') from e
  if not values or any(v < 1 for v in values):
    raise ValueError(f'{field}: positive widths expected, got {spec!r}')
  return values


def _positive_int(value, field: str) -> int:
  if isinstance(value, bool) or int(value) != value or int(value) < 1:
    raise ValueError(f'{field}: must be an int >= 1, got {value}')
  return int(value)


def stage_starts(fractions: Sequence[float], num_updates: int, window: int
                 ) -> Tuple[int, ...]:
  """First update of each recorded window: round(f * (num_updates - window))."""
  return tuple(int(round(f * (num_updates - window))) for f in fractions)


def parse_variants(spec: str) -> List[Tuple[str, str]]:
  """'sign_exp:log_mse,linear:mse' -> [(head, loss), ...] (validated)."""
  out = []
  for item in _split(spec):
    head, _, loss = item.partition(':')
    if head not in identity_fit.HEADS or loss not in identity_fit.LOSSES:
      raise ValueError(
          f'identity.variants: {item!r} is not HEAD:LOSS with HEAD in '
          f'{list(identity_fit.HEADS)} and LOSS in {list(identity_fit.LOSSES)}')
    out.append((head, loss))
  if not out:
    raise ValueError('identity.variants: at least one HEAD:LOSS is needed')
  return out


def identity_config(cfg, preprocessor: str, head: str, loss: str
                    ) -> identity_fit.IdentityFitConfig:
  ic = cfg.identity
  try:
    return identity_fit.IdentityFitConfig(
        preprocessor=preprocessor, head=head, loss=loss, eps=float(ic.eps),
        hidden_size=ic.hidden_size,
        mlp_dims=_ints(ic.mlp_dims, 'identity.mlp_dims'),
        learning_rate=float(ic.learning_rate), num_steps=ic.num_steps,
        batch_size=ic.batch_size, tolerance=float(ic.tolerance))
  except ValueError as e:
    msg = str(e)
    # Name the config's field: preprocessors and variants are lists there.
    for field, name in (('preprocessor:', 'preprocessors:'),
                        ('head:', 'variants:'), ('loss:', 'variants:')):
      if msg.startswith(field):
        msg = name + msg[len(field):]
    raise ValueError(msg if msg.startswith('identity.') else
                     f'identity.{msg}') from None


def regression_config(cfg) -> grad_probe.RegressionConfig:
  r = cfg.regression
  conf = grad_probe.RegressionConfig(
      input_dim=_positive_int(r.input_dim, 'regression.input_dim'),
      teacher_hidden=_ints(r.teacher_hidden, 'regression.teacher_hidden'),
      student_hidden=_ints(r.student_hidden, 'regression.student_hidden'),
      batch_size=_positive_int(r.batch_size, 'regression.batch_size'),
      noise_std=float(r.noise_std))
  conf.validate()
  return conf


def a2c_config(cfg) -> a2c.A2CConfig:
  known = set(a2c.A2CConfig.__dataclass_fields__)
  unknown = sorted(set(cfg.a2c) - known)
  if unknown:
    raise ValueError(f'a2c: unknown fields {unknown}; allowed: {sorted(known)}')
  conf = a2c.A2CConfig(**dict(cfg.a2c))
  try:
    conf.validate()
  except ValueError as e:
    raise ValueError(f'a2c.{e}') from None
  return conf


def validate(cfg) -> dict:
  """Checks every field before anything compiles; returns the parsed plan.

  Raises:
    ValueError naming the bad field and what is allowed.
  """
  sources = _split(cfg.sources)
  if not sources:
    raise ValueError('sources: at least one source is needed')
  if len(set(sources)) != len(sources):
    raise ValueError(f'sources: repeated names in {cfg.sources!r}')
  names = environments.names()
  envs = {}
  for s in sources:
    if s == REGRESSION:
      continue
    if s not in names:
      raise ValueError(f'sources: unknown source {s!r}; allowed: '
                       f'{[REGRESSION] + list(names)}')
    if s in brax_envs.BRAX_ENVS:  # known continuous: no need to build them
      raise ValueError(f'sources: {s!r} has continuous actions; A2C sources '
                       'need discrete ones (catch, gridworlds, cartpole)')
    envs[s] = environments.make(s)
    if getattr(envs[s], 'continuous', False):
      raise ValueError(f'sources: {s!r} has continuous actions; A2C sources '
                       'need discrete ones (catch, gridworlds, cartpole)')
  num_seeds = _positive_int(cfg.num_seeds, 'num_seeds')
  num_updates = _positive_int(cfg.num_updates, 'num_updates')
  window = _positive_int(cfg.window, 'window')
  try:
    fractions = tuple(float(f) for f in _split(cfg.stage_fractions))
  except ValueError as e:
    raise ValueError('stage_fractions: comma-separated numbers expected, got '
                     f'{cfg.stage_fractions!r}') from e
  if not fractions or any(not 0. <= f <= 1. for f in fractions) or any(
      b <= a for a, b in zip(fractions, fractions[1:])):
    raise ValueError('stage_fractions: increasing numbers in [0, 1] '
                     f'expected, got {cfg.stage_fractions!r}')
  if window > num_updates:
    raise ValueError(f'window: {window} exceeds num_updates={num_updates}')
  starts = stage_starts(fractions, num_updates, window)
  grad_probe.check_starts(starts, window, num_updates, 'stage_fractions')
  if not float(cfg.learning_rate) > 0:
    raise ValueError(f'learning_rate: must be > 0, got {cfg.learning_rate}')
  if not float(cfg.hist_bin_width) > 0 or not float(cfg.hist_max) > float(
      cfg.hist_min):
    raise ValueError('hist_min, hist_max, hist_bin_width: need hist_max > '
                     'hist_min and hist_bin_width > 0, got '
                     f'{cfg.hist_min}, {cfg.hist_max}, {cfg.hist_bin_width}')
  plan = {'sources': sources, 'envs': envs, 'num_seeds': num_seeds,
          'num_updates': num_updates, 'window': window,
          'fractions': fractions, 'starts': starts}
  if any(s != REGRESSION for s in sources):
    plan['a2c'] = a2c_config(cfg)
  if REGRESSION in sources:
    plan['regression'] = regression_config(cfg)
  ic = cfg.identity
  plan['identity'] = bool(ic.enabled)
  if ic.enabled:
    id_sources = _split(ic.sources) or [s for s in sources if s != REGRESSION]
    for s in id_sources:
      if s not in sources:
        raise ValueError(f'identity.sources: {s!r} is not one of sources '
                         f'{sources}')
    if not id_sources:
      raise ValueError('identity.sources: no gradient source to fit (sources '
                       'has no A2C env); set identity.enabled=False')
    variants = parse_variants(ic.variants)
    preprocessors = _split(ic.preprocessors)
    if not preprocessors:
      raise ValueError('identity.preprocessors: at least one is needed')
    runs = [identity_config(cfg, p, h, l)
            for h, l in variants for p in preprocessors]
    if not 0. < float(ic.heldout_fraction) < 1.:
      raise ValueError('identity.heldout_fraction: must be in (0, 1), got '
                       f'{ic.heldout_fraction}')
    if not float(ic.magnitude_split) > 0:
      raise ValueError('identity.magnitude_split: must be > 0, got '
                       f'{ic.magnitude_split}')
    for f in ('num_seeds', 'max_test_sequences', 'plot_points'):
      _positive_int(ic[f], f'identity.{f}')
    plan.update(identity_sources=id_sources, identity_runs=runs)
  return plan


def make_learner(source: str, plan: dict, learning_rate: float
                 ) -> grad_probe.Learner:
  optimizer = optax.adam(learning_rate)
  if source == REGRESSION:
    return grad_probe.regression_learner(plan['regression'], optimizer)
  agent = a2c.make_a2c(plan['envs'][source], networks.paper_network(source),
                       plan['a2c'])
  return grad_probe.a2c_learner(agent, optimizer)


def progress_metric(source: str, metrics: Dict[str, np.ndarray]
                    ) -> Tuple[str, np.ndarray]:
  """(name, per-seed-and-stage value) of the learner's own progress."""
  if source == REGRESSION:
    return 'train_mse', metrics['loss_sum'] / np.maximum(metrics['count'], 1)
  with np.errstate(invalid='ignore', divide='ignore'):
    return 'episode_return', np.where(
        metrics['episodes'] > 0,
        metrics['return_sum'] / np.maximum(metrics['episodes'], 1), np.nan)


def collect_all(cfg, plan: dict) -> Dict[str, dict]:
  """Trains every source's learners; returns grads `[S, stages, W, P]`."""
  out = {}
  keys = jax.random.split(jax.random.PRNGKey(cfg.seed), plan['num_seeds'])
  for source in plan['sources']:
    t0 = time.time()
    learner = make_learner(source, plan, float(cfg.learning_rate))
    run = jax.jit(jax.vmap(lambda k, l=learner: grad_probe.collect(
        l, k, plan['starts'], plan['window'])))
    grads, metrics = run(keys)
    grads = np.asarray(grads)
    metrics = {k: np.asarray(v, np.float64) for k, v in metrics.items()}
    name, value = progress_metric(source, metrics)
    seconds = time.time() - t0
    print(f'{source}: {learner.num_params:,} params x {plan["num_seeds"]} '
          f'seeds, stages {list(plan["starts"])}, {name} per stage '
          f'{np.round(np.nanmean(value, axis=0), 3).tolist()} '
          f'({seconds:.1f}s incl. compile)', flush=True)
    if not np.all(np.isfinite(grads)):
      raise FloatingPointError(f'{source}: non-finite gradients recorded')
    out[source] = {'grads': grads, 'metric_name': name, 'metric': value,
                   'num_params': learner.num_params, 'seconds': seconds}
  return out


STAT_KEYS = (['frac_zero'] + [f'p{p}' for p in grad_stats.PERCENTILES] +
             ['spread_1_99', 'spread_5_95', 'log10_min', 'log10_max',
              'mean_abs'] + [grad_stats.threshold_name(t)
                             for t in grad_stats.THRESHOLDS])
DRIFT_KEYS = ('w1_from_first', 'w1_from_prev', 'w1_within')


def stats_tables(collected: Dict[str, dict], plan: dict
                 ) -> Tuple[List[dict], List[dict]]:
  """(rows per source x stage with mean/std over seeds, rows per seed)."""
  per_seed, summary = [], []
  window = plan['window']
  for source, c in collected.items():
    g = c['grads']  # [S, stages, W, P]
    for k, start in enumerate(plan['starts']):
      seed_rows = []
      for s in range(g.shape[0]):
        row = {'source': source, 'stage': k, 'update': start,
               'progress': plan['fractions'][k], 'seed': s,
               c['metric_name']: float(c['metric'][s, k])}
        row.update(grad_stats.spread_stats(g[s, k]))
        row['w1_from_first'] = grad_stats.wasserstein_decades(g[s, k],
                                                              g[s, 0])
        row['w1_from_prev'] = (grad_stats.wasserstein_decades(
            g[s, k], g[s, k - 1]) if k else 0.)
        # Within-window W1 (first vs second half): the noise floor of drift.
        row['w1_within'] = (grad_stats.wasserstein_decades(
            g[s, k, :window // 2], g[s, k, window // 2:])
                            if window >= 2 else float('nan'))
        seed_rows.append(row)
      per_seed.extend(seed_rows)
      row = {'source': source, 'stage': k, 'update': start,
             'progress': plan['fractions'][k], 'num_seeds': g.shape[0],
             'num_params': c['num_params'],
             'coords_per_seed': int(g.shape[2] * g.shape[3])}
      metric = np.array([r[c['metric_name']] for r in seed_rows])
      row[c['metric_name']] = float(np.nanmean(metric)) if np.any(
          np.isfinite(metric)) else float('nan')
      for key in STAT_KEYS + list(DRIFT_KEYS):
        vals = np.array([r[key] for r in seed_rows], np.float64)
        row[key] = float(np.mean(vals))
        row[f'{key}_std'] = float(np.std(vals))
      summary.append(row)
  return summary, per_seed


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _stage_label(source: str, c: dict, plan: dict, k: int) -> str:
  value = np.nanmean(c['metric'][:, k]) if np.any(
      np.isfinite(c['metric'][:, k])) else float('nan')
  name = 'return' if c['metric_name'] == 'episode_return' else 'mse'
  return f'update {plan["starts"][k]} ({name} {value:.2f})'


def plot_histograms(path: str, collected: Dict[str, dict], plan: dict, cfg
                    ) -> str:
  """One panel per source: log10|g| densities of each stage (seeds pooled)."""
  plt = _pyplot()
  bins = np.arange(float(cfg.hist_min), float(cfg.hist_max) + 1e-9,
                   float(cfg.hist_bin_width))
  n = len(collected)
  fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.8), squeeze=False)
  colors = plt.cm.viridis(np.linspace(0., 0.9, len(plan['starts'])))
  for ax, (source, c) in zip(axes[0], collected.items()):
    g = c['grads']
    for k in range(len(plan['starts'])):
      zero = float(np.mean(g[:, k] == 0))
      ax.stairs(grad_stats.histogram(g[:, k], bins), bins, color=colors[k],
                linewidth=1.6, label=f'{_stage_label(source, c, plan, k)}, '
                f'{zero:.0%} zero')
    kind = 'supervised MLP regression' if source == REGRESSION else 'A2C'
    ax.set_title(f'{source} ({kind}, {c["num_params"]:,} params)',
                 fontsize=10)
    ax.set_yscale('log')  # shows the tails, where the decades are
    ax.set_ylim(1e-4, 3.)
    ax.set_xlabel('log10 |g|  (nonzero coordinates)')
    ax.set_ylabel('density (log scale)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc='upper left')
  fig.suptitle(f'Gradient magnitudes over training ({plan["num_seeds"]} '
               f'seeds pooled, {plan["window"]} updates per stage, Adam)',
               fontsize=11)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_spread(path: str, summary: List[dict], plan: dict) -> str:
  """p1, p50, p99 of log10|g| (mean over seeds) against training progress."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for i, source in enumerate(plan['sources']):
    rows = [r for r in summary if r['source'] == source]
    x = np.array([r['progress'] for r in rows])
    color = f'C{i}'
    ax.plot(x, [r['p50'] for r in rows], '-o', color=color,
            label=f'{source}: median, p1-p99 band')
    ax.fill_between(x, [r['p1'] for r in rows], [r['p99'] for r in rows],
                    color=color, alpha=0.15)
  ax.set_xlabel('training progress (fraction of updates)')
  ax.set_ylabel('log10 |g|  (nonzero coordinates)')
  ax.set_title('Spread and drift of gradient magnitudes '
               f'({plan["num_seeds"]} seeds)', fontsize=11)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def identity_data(collected: Dict[str, dict], sources: Sequence[str],
                  heldout_fraction: float, max_test: int, seed: int):
  """Per-coordinate sequences `[N, W]`: one train set, a test set per source.

  A sequence is one coordinate's gradients over one stage's window, for one
  learner seed; sequences that are all zero are dropped. Each source's
  sequences are shuffled and `heldout_fraction` of them held out.
  """
  rng = np.random.default_rng(seed)
  train, test = [], {}
  for source in sources:
    g = collected[source]['grads']  # [S, stages, W, P]
    seqs = np.moveaxis(g, 2, -1).reshape(-1, g.shape[2])
    seqs = seqs[np.any(seqs != 0, axis=1)]
    seqs = seqs[rng.permutation(len(seqs))]
    num_test = max(1, int(round(heldout_fraction * len(seqs))))
    if num_test >= len(seqs):
      raise ValueError(f'identity.heldout_fraction: leaves no training '
                       f'sequence of {source} ({len(seqs)} in all)')
    test[source] = seqs[:num_test][:max_test]
    train.append(seqs[num_test:])
  return np.concatenate(train), test


def run_identity(cfg, plan: dict, collected: Dict[str, dict]):
  """Fits every (variant, preprocessor, seed); returns (rows, examples)."""
  ic = cfg.identity
  train, test = identity_data(collected, plan['identity_sources'],
                              float(ic.heldout_fraction),
                              int(ic.max_test_sequences), int(cfg.seed))
  test_all = np.concatenate(list(test.values()))
  print(f'identity fit: {train.shape[0]:,} train sequences x {train.shape[1]}'
        f' steps; held out {", ".join(f"{s} {len(t):,}" for s, t in test.items())}',
        flush=True)
  rows, examples = [], {}
  zero = identity_fit.metrics(np.zeros_like(test_all), test_all)
  rows.append({'variant': 'predict zero', 'preprocessor': '-', 'seed': '-',
               'eval_source': 'all', **zero})
  for run in plan['identity_runs']:
    variant = f'{run.head}:{run.loss}'
    for i in range(int(ic.num_seeds)):
      t0 = time.time()
      params, losses = identity_fit.fit(
          run, train, jax.random.PRNGKey(int(cfg.seed) + i))
      seconds = time.time() - t0
      tail = losses[-max(1, len(losses) // 10):]
      for source, data in list(test.items()) + [('all', test_all)]:
        pred = identity_fit.predict(run, params, data)
        m = identity_fit.metrics(pred, data, run.tolerance,
                                 float(ic.magnitude_split))
        rows.append({'variant': variant, 'preprocessor': run.preprocessor,
                     'seed': i, 'eval_source': source, **m,
                     'final_train_loss': float(np.mean(tail)),
                     'train_seconds': seconds})
        if source == 'all':
          examples.setdefault((variant, run.preprocessor), []).append(
              (pred, data, m))
      m = rows[-1]
      print(f'  {variant:18s} {run.preprocessor:9s} seed {i}: held-out '
            f'median rel err {m["median_rel_err"]:.3g}, within '
            f'{run.tolerance:.0%} {m["frac_within"]:.1%}, sign '
            f'{m["frac_sign"]:.1%} (train loss {m["final_train_loss"]:.3g}, '
            f'{seconds:.1f}s)', flush=True)
  # Plot the median seed of each run (by fraction within tolerance).
  for k, runs in examples.items():
    order = sorted(range(len(runs)), key=lambda j: runs[j][2]['frac_within'])
    j = order[(len(runs) - 1) // 2]
    examples[k] = runs[j] + (j,)
  return rows, examples


def identity_summary(rows: List[dict]) -> List[dict]:
  """Mean and std over seeds per (variant, preprocessor, eval_source)."""
  out = []
  keys = dict.fromkeys((r['variant'], r['preprocessor'], r['eval_source'])
                       for r in rows)
  for variant, pre, source in keys:
    sel = [r for r in rows if (r['variant'], r['preprocessor'],
                               r['eval_source']) == (variant, pre, source)]
    row = {'variant': variant, 'preprocessor': pre, 'eval_source': source,
           'num_seeds': len(sel) if sel[0]['seed'] != '-' else 0}
    for key in ('mean_rel_err', 'median_rel_err', 'frac_within', 'frac_sign',
                'frac_within_small', 'frac_within_large'):
      vals = np.array([r[key] for r in sel], np.float64)
      row[key] = float(np.mean(vals))
      row[f'{key}_std'] = float(np.std(vals))
    out.append(row)
  return out


def plot_identity(path: str, examples: dict, num_points: int, tolerance: float,
                  seed: int) -> str:
  """Held-out |g_hat| against |g| (log-log), one panel per run (its median
  seed by fraction within tolerance)."""
  plt = _pyplot()
  variants = list(dict.fromkeys(v for v, _ in examples))
  pres = list(dict.fromkeys(p for _, p in examples))
  fig, axes = plt.subplots(len(variants), len(pres), squeeze=False,
                           figsize=(4.2 * len(pres), 3.9 * len(variants)))
  rng = np.random.default_rng(seed)
  for (variant, pre), (pred, data, m, seed_index) in examples.items():
    ax = axes[variants.index(variant)][pres.index(pre)]
    g, g_hat = data.ravel(), pred.ravel()
    keep = np.flatnonzero(g != 0)
    keep = rng.choice(keep, size=min(num_points, keep.size), replace=False)
    g, g_hat = g[keep], g_hat[keep]
    same = np.sign(g_hat) == np.sign(g)
    x = np.log10(np.abs(g))
    y = np.log10(np.maximum(np.abs(g_hat), 1e-30))
    ax.scatter(x[same], y[same], s=3, alpha=0.35, color='C0',
               label='sign correct')
    ax.scatter(x[~same], y[~same], s=3, alpha=0.35, color='C3',
               label='sign wrong')
    lo, hi = float(np.min(x)) - 0.5, float(np.max(x)) + 0.5
    ax.plot([lo, hi], [lo, hi], 'k--', linewidth=1, label='g_hat = g')
    ax.set_xlim(lo, hi)
    ax.set_ylim(max(lo - 3, float(np.min(y)) - 0.5),
                min(hi + 3, float(np.max(y)) + 0.5))
    ax.set_xlabel('log10 |g|  (held-out agent gradient)')
    ax.set_ylabel('log10 |g_hat|')
    ax.set_title(f'input {pre}, head:loss {variant} (seed {seed_index})\n'
                 f'median rel err {m["median_rel_err"]:.3g}, within '
                 f'{tolerance:.0%}: {m["frac_within"]:.1%}', fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc='upper left', markerscale=3)
  fig.suptitle('GRU(8) + MLP trained to output g from g\n(median seed of '
               'each run)' if len(pres) < 2 else 'GRU(8) + MLP trained to '
               'output g from g (median seed of each run)', fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def run(cfg, workdir: str) -> dict:
  """Both findings; writes CSV, PNG and JSON files into `workdir`."""
  plan = validate(cfg)
  t_start = time.time()
  os.makedirs(workdir, exist_ok=True)
  collected = collect_all(cfg, plan)
  summary, per_seed = stats_tables(collected, plan)
  files = {
      'grad_stats': common.write_csv(
          os.path.join(workdir, 'grad_stats.csv'), summary),
      'grad_stats_seeds': common.write_csv(
          os.path.join(workdir, 'grad_stats_seeds.csv'), per_seed),
      'grad_hist': plot_histograms(os.path.join(workdir, 'grad_hist.png'),
                                   collected, plan, cfg),
      'grad_spread': plot_spread(os.path.join(workdir, 'grad_spread.png'),
                                 summary, plan),
  }
  for r in summary:
    print(f'{r["source"]:18s} update {r["update"]:5d}: log10|g| p1..p99 '
          f'{r["p1"]:.2f}..{r["p99"]:.2f} ({r["spread_1_99"]:.2f} ± '
          f'{r["spread_1_99_std"]:.2f} decades), median {r["p50"]:.2f}, '
          f'zero {r["frac_zero"]:.1%}, <1e-6 {r["frac_below_1e-06"]:.1%}, '
          f'W1 from first {r["w1_from_first"]:.2f} (within-window '
          f'{r["w1_within"]:.2f})', flush=True)
  result = {'config': cfg.to_dict(), 'stage_updates': list(plan['starts']),
            'grad_stats': summary,
            'collect_seconds': {s: c['seconds'] for s, c in collected.items()}}
  if plan['identity']:
    rows, examples = run_identity(cfg, plan, collected)
    id_summary = identity_summary(rows)
    files['identity'] = common.write_csv(
        os.path.join(workdir, 'identity.csv'), rows)
    files['identity_summary'] = common.write_csv(
        os.path.join(workdir, 'identity_summary.csv'), id_summary)
    files['identity_plot'] = plot_identity(
        os.path.join(workdir, 'identity.png'), examples,
        int(cfg.identity.plot_points), float(cfg.identity.tolerance),
        int(cfg.seed))
    result['identity'] = id_summary
    for r in id_summary:
      if r['eval_source'] == 'all':
        print(f'identity {r["variant"]:18s} {r["preprocessor"]:9s}: median '
              f'rel err {r["median_rel_err"]:.3g} ± '
              f'{r["median_rel_err_std"]:.2g}, within '
              f'{r["frac_within"]:.1%} ± {r["frac_within_std"]:.1%} (|g| '
              f'below / above {float(cfg.identity.magnitude_split):.0e}: '
              f'{r["frac_within_small"]:.1%} / {r["frac_within_large"]:.1%}),'
              f' mean rel err {r["mean_rel_err"]:.3g}', flush=True)
  result['wall_seconds'] = time.time() - t_start
  result['files'] = {k: os.path.basename(v) for k, v in files.items()}
  files['summary'] = common.write_json(os.path.join(workdir, 'summary.json'),
                                       result)
  print(f'done in {result["wall_seconds"]:.0f}s; outputs in {workdir}',
        flush=True)
  return result
