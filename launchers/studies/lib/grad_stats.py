"""Statistics of gradient magnitudes: spread in decades, drift across stages.

Host-side numpy (float64) over flat gradient arrays; nothing here is traced.
The paper's first claim (Lan et al., 2023, "Learning to Optimize for
Reinforcement Learning", Sec. 4) is that agent-gradients in RL span many
orders of magnitude with tiny absolute values (|g| from ~1e-10 to ~1e-1), and
that their distribution drifts with the agent's training stage (non-iid).

Conventions:

* Percentiles are of `log10|g|` over the *nonzero* coordinates (an exact zero
  has no magnitude); `frac_zero` reports how many were exactly zero.
* `frac_below_<t>` is the fraction of *all* coordinates (zeros included) with
  `|g| < t`.
* `spread_1_99 = p99 - p1` of `log10|g|`: how many decades the middle 98% of
  nonzero coordinates span.

    >>> import numpy as np
    >>> s = spread_stats(np.array([1e-8, -1e-4, 1e-2, 0.]))
    >>> round(s['p50'], 6), s['frac_zero']
    (-4.0, 0.25)
"""

from typing import Dict, Sequence

import numpy as np

# log10|g| percentiles reported by `spread_stats` (as p1, p5, ...).
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
# Thresholds t of the `frac_below_<t>` fields.
THRESHOLDS = (1e-4, 1e-6, 1e-8)


def _flat(g, name: str = 'g') -> np.ndarray:
  g = np.asarray(g, np.float64).ravel()
  if g.size == 0:
    raise ValueError(f'{name}: no gradient coordinates')
  if not np.all(np.isfinite(g)):
    raise ValueError(f'{name}: has {int(np.sum(~np.isfinite(g)))} non-finite '
                     'coordinates')
  return g


def log10_magnitudes(g) -> np.ndarray:
  """`log10|g|` of the nonzero coordinates of `g` (any shape), float64."""
  g = _flat(g)
  a = np.abs(g[g != 0])
  return np.log10(a)


def threshold_name(t: float) -> str:
  """'frac_below_1e-06' for 1e-6: the column name of a threshold."""
  return f'frac_below_{t:.0e}'


def spread_stats(g, thresholds: Sequence[float] = THRESHOLDS
                 ) -> Dict[str, float]:
  """Spread of the magnitudes of one gradient sample.

  Args:
    g: gradient coordinates, any shape (flattened).
    thresholds: t of the `frac_below_<t>` fields.

  Returns:
    dict: `n` coordinates, `frac_zero`, `p1` .. `p99` (log10|g| percentiles
    over nonzero coordinates, linear interpolation), `spread_1_99` and
    `spread_5_95` (decades), `log10_min`, `log10_max`, `median_abs`,
    `mean_abs` (over all coordinates), `frac_below_<t>` for each threshold.

  Raises:
    ValueError: for an empty, non-finite or all-zero `g`.
  """
  g = _flat(g)
  a = np.abs(g)
  logs = np.log10(a[a > 0])
  if logs.size == 0:
    raise ValueError('g: every coordinate is exactly zero')
  q = np.percentile(logs, PERCENTILES)
  out = {'n': float(g.size), 'frac_zero': float(np.mean(a == 0))}
  out.update({f'p{p}': float(v) for p, v in zip(PERCENTILES, q)})
  out['spread_1_99'] = out['p99'] - out['p1']
  out['spread_5_95'] = out['p95'] - out['p5']
  out['log10_min'] = float(logs.min())
  out['log10_max'] = float(logs.max())
  out['median_abs'] = float(np.median(a))
  out['mean_abs'] = float(np.mean(a))
  for t in thresholds:
    out[threshold_name(t)] = float(np.mean(a < t))
  return out


def wasserstein_decades(g_a, g_b, num_quantiles: int = 1001) -> float:
  """1-Wasserstein distance between the log10|g| distributions of two samples.

    W1 = integral_0^1 |Q_a(u) - Q_b(u)| du,  Q = quantile function of log10|g|

  over nonzero coordinates, in decades, estimated on `num_quantiles` evenly
  spaced u. 0 for identical distributions; a pure rescaling g_b = c * g_a
  gives |log10 c|.
  """
  la, lb = log10_magnitudes(g_a), log10_magnitudes(g_b)
  if la.size == 0 or lb.size == 0:
    raise ValueError('g: every coordinate is exactly zero')
  u = np.linspace(0., 100., int(num_quantiles))
  return float(np.mean(np.abs(np.percentile(la, u) - np.percentile(lb, u))))


def histogram(g, bins: np.ndarray) -> np.ndarray:
  """Density of log10|g| (nonzero coordinates) over `bins` edges (decades)."""
  hist, _ = np.histogram(log10_magnitudes(g), bins=bins, density=True)
  return hist


__all__ = ['PERCENTILES', 'THRESHOLDS', 'log10_magnitudes', 'spread_stats',
           'threshold_name', 'wasserstein_decades', 'histogram']
