"""Which cell implementation runs on this backend, and what one update costs.

On an accelerator `learned_optimizer()` ('auto') must pick the Haiku module
and 'fused' must be refused by name; the contract of a learned optimizer is
checked on the backend, then one update of the default cell is timed
against optax.adam (the Haiku module; forward, and forward+backward w.r.t.
the meta-params). Prints a line per row and writes $OUT/accelerator_check.json
(or /tmp). Usage: python scripts/accelerator_check.py
"""
import json
import os

import jax

import lopt
from launchers.lib import benchmarking

SIZES = ((1e5, False), (1e6, False), (1e6, True), (1e7, False), (1e7, True))


def main():
  out = {'jax': jax.__version__, 'backend': jax.default_backend(),
         'devices': [str(d) for d in jax.devices()]}
  lo = lopt.learned_optimizer()
  out['auto'] = lo.implementation
  try:
    lopt.learned_optimizer(implementation='fused')
    out['fused'] = 'accepted'
  except ValueError as e:
    out['fused'] = f'refused: {e}'
  lopt.testing.check_learned_optimizer(lo, zero_grad_moves=False)
  out['contract'] = 'passed'
  peak = benchmarking.matmul_peak_gflops(n=8192, repeats=10)
  out['matmul_peak_gflops'] = peak
  out['rows'] = []
  for impl in ('haiku',):
    cell = lopt.learned_optimizer(implementation=impl)
    for n, backward in SIZES:
      n = int(n)
      row = benchmarking.update_row(cell, n, backward=backward,
                                    peak_gflops=peak,
                                    adam=benchmarking.adam_seconds(n),
                                    repeats=20)
      row['impl'] = impl
      out['rows'].append(row)
      print(impl, n, row['pass'], f"{row['ms']:.3f} ms",
            f"{row['vs_adam']:.1f}x adam", flush=True)
  print(json.dumps({k: v for k, v in out.items() if k != 'rows'}, indent=1))
  path = os.path.join(os.environ.get('OUT', '/tmp'), 'accelerator_check.json')
  with open(path, 'w') as f:
    json.dump(out, f, indent=1)


if __name__ == '__main__':
  main()
