"""Save and load frozen meta-params as a small `.npz` file (no pickle).

The file holds one array per meta-param leaf, under its Haiku path
("module/name"), plus the cell configuration and the default learning rate as
JSON text (stored as a uint8 array). Loading uses `allow_pickle=False`, so no
code from the file is ever executed, and checks that the file's configuration
and shapes match what the caller expects before anything is returned.
"""

import json
import os
from typing import Optional, Tuple

import jax
import numpy as np

from lopt import cells
from lopt import optimizer as optimizer_lib

_META_KEY = '__lopt_meta__'
FORMAT_VERSION = 1


def save(path: str, meta_params, lo: optimizer_lib.LearnedOptimizer,
         extra: Optional[dict] = None) -> str:
  """Writes `meta_params` of learned optimizer `lo` to `path` (.npz).

  Written to a temporary file first and renamed, so an existing file is never
  left half-written.
  """
  arrays = {}
  for module, params in meta_params.items():
    for name, value in params.items():
      arrays[f'{module}/{name}'] = np.asarray(value)
  # A schedule cannot be stored: the file then holds no default rate and
  # whoever loads it passes one to opt_fn.
  lr = None if callable(lo.learning_rate) else lo.learning_rate
  meta = {'format_version': FORMAT_VERSION, 'config': lo.config.to_dict(),
          'learning_rate': lr, 'extra': extra or {}}
  arrays[_META_KEY] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
  if not path.endswith('.npz'):
    path += '.npz'
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp.npz'
  np.savez(tmp, **arrays)
  os.replace(tmp, path)
  return path


def read_metadata(path: str) -> dict:
  """The JSON metadata (config, learning rate, extra) of a saved file."""
  with _open(path) as f:
    return _metadata(f, path)


def _open(path):
  if not os.path.exists(path):
    raise FileNotFoundError(f'meta-params file not found: {path}')
  try:
    return np.load(path, allow_pickle=False)
  except Exception as e:  # zip / format errors of a corrupt file
    raise ValueError(f'{path}: not a readable meta-params .npz file '
                     f'({type(e).__name__}: {e})') from e


def _metadata(f, path) -> dict:
  if _META_KEY not in f.files:
    raise ValueError(f'{path}: not a lopt meta-params file (no {_META_KEY})')
  try:
    return json.loads(f[_META_KEY].tobytes().decode())
  except Exception as e:
    raise ValueError(f'{path}: corrupt metadata ({e})') from e


def load(path: str,
         expected: Optional[cells.CellConfig] = None
         ) -> Tuple[optimizer_lib.LearnedOptimizer, dict]:
  """Loads a learned optimizer and its meta-params from `path`.

  Args:
    path: a file written by `save`.
    expected: if given, the file's cell configuration must equal it.

  Returns:
    (learned optimizer built from the file's config, meta_params).

  Raises:
    ValueError: a corrupt file, a configuration that differs from `expected`
      (naming each differing field), or arrays whose names or shapes do not
      fit the configuration.
  """
  with _open(path) as f:
    meta = _metadata(f, path)
    try:
      config = cells.CellConfig.from_dict(meta['config'])
    except (KeyError, TypeError) as e:
      raise ValueError(f'{path}: corrupt cell config ({e})') from e
    if expected is not None and config != expected:
      got, want = config.to_dict(), expected.to_dict()
      diff = [f'{k}: file has {got[k]!r}, expected {want[k]!r}'
              for k in want if got.get(k) != want[k]]
      raise ValueError(f'{path}: meta-params were saved for another cell '
                       'configuration; ' + '; '.join(diff))
    arrays = {k: f[k] for k in f.files if k != _META_KEY}
  lo = optimizer_lib.learned_optimizer(
      learning_rate=meta.get('learning_rate', 1e-3), config=config)
  template = jax.eval_shape(lo.init, jax.random.PRNGKey(0))
  meta_params = {}
  for module, params in template.items():
    meta_params[module] = {}
    for name, spec in params.items():
      key = f'{module}/{name}'
      if key not in arrays:
        raise ValueError(f'{path}: missing meta-param {key!r} for cell '
                         f'config {config}')
      if arrays[key].shape != spec.shape:
        raise ValueError(f'{path}: meta-param {key!r} has shape '
                         f'{arrays[key].shape}, the config needs {spec.shape}')
      meta_params[module][name] = jax.numpy.asarray(arrays[key], spec.dtype)
  extra_keys = sorted(set(arrays) - {f'{m}/{n}' for m, p in template.items()
                                     for n in p})
  if extra_keys:
    raise ValueError(f'{path}: unexpected arrays {extra_keys} for cell '
                     f'config {config}')
  return lo, meta_params
