"""Orbax checkpoints of the whole meta-training state, with exact resume.

A checkpoint holds the `MetaState` pytree (meta-params, meta-optimizer state,
every agent of the population, the step) and the run's configuration as JSON.
Resuming restores against the abstract shape of a freshly built state, after
checking that the saved configuration matches the current one, so a
checkpoint from another configuration is refused with a clear message
(naming the differing fields) before anything is compiled or overwritten.
"""

import json
import os
from typing import Any, Iterable, Optional, Tuple

import jax
import orbax.checkpoint as ocp


def _diff(saved: dict, current: dict, prefix: str = '') -> list:
  out = []
  for k in sorted(set(saved) | set(current)):
    a, b = saved.get(k, '<absent>'), current.get(k, '<absent>')
    if isinstance(a, dict) and isinstance(b, dict):
      out += _diff(a, b, f'{prefix}{k}.')
    elif a != b:
      out.append(f'{prefix}{k}: checkpoint has {a!r}, config has {b!r}')
  return out


def _normalise(obj):
  """JSON round trip, so tuples and lists compare equal."""
  return json.loads(json.dumps(obj, default=str))


class Checkpointer:
  """Saves every `save_every` steps (keeping the last `keep`) and restores.

  Args:
    directory: where checkpoints live (created if absent).
    config: JSON-able dict describing the run; must match on restore.
    ignore: top-level config keys that may change between runs (e.g. the
      total number of steps, logging intervals).
    keep: checkpoints kept.
    topology: JSON-able description of where the state lives (e.g. process
      and device counts), saved beside it and readable with
      `saved_topology`; free to differ on restore (the state is restored
      into the template's shardings).
  """

  def __init__(self, directory: str, config: dict, ignore: Iterable[str] = (),
               keep: int = 3, topology: Optional[dict] = None):
    if int(keep) < 1:
      raise ValueError(f'keep: must be >= 1, got {keep}')
    self.directory = os.path.abspath(directory)
    self._ignore = set(ignore)
    self.config = _normalise(config)
    self.topology = _normalise(topology or {})
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=int(keep),
                                             create=True))

  def _comparable(self, cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in self._ignore}

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> list:
    """The steps of the checkpoints kept, oldest first."""
    return sorted(int(s) for s in self._manager.all_steps())

  def _step(self, step: Optional[int]) -> Optional[int]:
    """`step` if a checkpoint of it is kept (ValueError naming the kept
    ones if not); the latest (None if none) when `step` is None."""
    if step is None:
      return self.latest_step()
    kept = self.all_steps()
    if int(step) not in kept:
      raise ValueError(f'step: no checkpoint of meta-step {step} in '
                       f'{self.directory}; kept: {kept or "none"}')
    return int(step)

  def check_compatible(self, step: Optional[int] = None) -> Optional[int]:
    """Raises ValueError if the checkpoint has another config.

    Args:
      step: the checkpoint to check; None: the latest.

    Returns the step checked (None if there is no checkpoint). Reads only
    the small JSON item, so it is cheap and runs before anything compiles.
    """
    step = self._step(step)
    if step is None:
      return None
    try:
      saved = self._manager.restore(
          step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
      saved = saved.config
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(
          f'checkpoint {self.directory}/{step}: unreadable configuration '
          f'({type(e).__name__}: {e}); move it away or use another '
          '--workdir') from e
    diff = _diff(self._comparable(saved), self._comparable(self.config))
    if diff:
      raise ValueError(
          f'checkpoint {self.directory}/{step} was written by another '
          'configuration: ' + '; '.join(diff) +
          '. Use another --workdir, or the same configuration to resume.')
    return step

  def saved_topology(self, step: Optional[int] = None) -> Optional[dict]:
    """The topology checkpoint `step` (None: the latest) was written on
    (None if there is no checkpoint or it did not record one)."""
    step = self._step(step)
    if step is None:
      return None
    try:
      return dict(self._manager.restore(
          step, args=ocp.args.Composite(
              topology=ocp.args.JsonRestore())).topology)
    except Exception:  # pylint: disable=broad-except
      return None

  def restore(self, template: Any, step: Optional[int] = None
              ) -> Tuple[Any, Optional[int]]:
    """Restores a checkpoint into the structure of `template`.

    The restored arrays take the shardings of `template`'s arrays, which
    may lie on another mesh (other devices, other process count) than the
    one that wrote the checkpoint.

    Args:
      template: a state of the saved structure (its values are not used).
      step: the checkpoint to restore; None: the latest.

    Returns (state, step), or (template, None) when there is none.
    """
    step = self.check_compatible(step)
    if step is None:
      return template, None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    try:
      restored = self._manager.restore(
          step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract)))
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(
          f'checkpoint {self.directory}/{step}: cannot restore the state '
          f'({type(e).__name__}: {e})') from e
    return restored.state, step

  def save(self, step: int, state: Any, force: bool = False) -> bool:
    return self._manager.save(
        step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            config=ocp.args.JsonSave(self.config),
            topology=ocp.args.JsonSave(self.topology)), force=force)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
