"""How a cell runs: the dispatcher between the Haiku module and the kernel.

`lopt.cells` defines the maths with Haiku modules on a `[num_coords,
features]` batch. `make(config, implementation)` returns how the optimizer
runs it, `(initial_state, apply)` with `apply(meta_params, g[N], state) ->
(d[N], state)`:

* 'haiku': the plain module itself, with the door's checks; runs anywhere
  (CPU, GPU, TPU, several devices).
* 'fused': the whole step (features, both paths, direction) as one C++
  kernel through XLA's FFI (`lopt.cell_runtime.fused`), forward and a
  reverse-mode backward; XLA:CPU on one device. Same values and
  meta-gradients as 'haiku' to float tolerance (tests/test_fused_cell.py).
* 'auto' (`resolve`): 'fused' where it builds and runs, else 'haiku'.

`fold_vmap(apply, axis)` runs a cell once on all coordinates of a
population under `vmap` with shared meta-params, instead of batching the
cell's contractions; the kernel is folded the same way
(`fold_coordinates`), its reverse mode being its own backward kernel.
"""

from typing import Callable, NamedTuple, Tuple

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from lopt import cells

Array = jax.Array

IMPLEMENTATIONS = ('fused', 'haiku')
# What `learned_optimizer(implementation=...)` also takes: `resolve` picks.
AUTO = 'auto'
# Names of each cell's paths in the Haiku module, in batch order.
PATHS = {'optim4rl': ('sign_path', 'magnitude_path'), 'l2lgd2': ('path',),
         'linear': ('path',)}


class Implementation(NamedTuple):
  """How the optimizer runs a cell: its state layout and its step."""
  name: str
  initial_state: Callable[[int], cells.CellState]
  apply: Callable


# The name (`jax.ad_checkpoint.checkpoint_name`) of the fused kernel's
# direction. The kernel's backward needs only its inputs, so a
# `jax.checkpoint` policy that saves the direction
# (`lopt.meta.inner_unroll`'s) leaves no kernel forward to run again on the
# backward pass, for 4 bytes a coordinate.
KERNEL_OUTPUT = 'lopt_kernel_output'


def make_fused_apply(config: cells.CellConfig, fold: bool = False
                     ) -> Callable:
  """`apply(meta_params, g[N], state)` with the state in the Haiku module's
  layout (`[N, hidden]` per GRU), the whole step (features, paths,
  direction) in one fused kernel (`lopt.cell_runtime.fused`), which tiles the
  coordinates itself.

  With `fold`, the kernel is folded under `vmap` (`fold_coordinates`: a
  population's coordinates end to end, one call); its reverse pass is the
  kernel's backward, which recomputes the forward of each tile inside it.
  """
  from lopt.cell_runtime import fused as fused_cell  # pylint: disable=g-import-not-at-top
  kernel = fused_cell.make_step(config)
  if fold:  # params [P, S] shared; inputs [N]; states [N, H]; d [N]
    kernel = fold_coordinates(
        kernel, (None, 0, 0), (0, 0), flat=False,
        fn_kept=fused_cell.make_step(config, in_place=False))
  names = PATHS[config.cell]
  num_layers = len(config.mlp_dims) + 1

  def apply(meta_params, inputs, state):
    d, h = kernel(fused_cell.pack(meta_params, names, num_layers),
                  cells.split_inputs(config, inputs), tuple(state))
    return checkpoint_name(d, KERNEL_OUTPUT), h

  return apply


def _fold(x: Array, axis: int) -> Array:
  """`x[B, ...]` with the batch merged into its coordinate axis `axis` (of
  the unbatched shape): `[B, N, H] -> [B * N, H]`, `[B, H, N] -> [H, B * N]`."""
  x = jnp.moveaxis(x, 0, axis)
  shape = x.shape[:axis] + (-1,) + x.shape[axis + 2:]
  return x.reshape(shape)


def _unfold(x: Array, axis: int, size: int) -> Array:
  """The inverse of `_fold` for a batch of `size`."""
  shape = x.shape[:axis] + (size, -1) + x.shape[axis + 1:]
  return jnp.moveaxis(x.reshape(shape), axis, 0)


def _batched(size: int, x: Array, batched: bool) -> Array:
  return x if batched else jnp.broadcast_to(x, (size,) + x.shape)


def fold_vmap(apply: Callable, coordinate_axis: int) -> Callable:
  """`apply(meta_params, g[N], state)`, run once on all coordinates of a
  batch when vmapped with shared meta-params (`g` may be a tuple of `[N]`
  inputs: `CellConfig.second_moment`).

  The cell is coordinate-wise with shared weights, so `vmap` over agents or
  seeds (a population under one optimizer) is the same maths as one call on
  the batch's coordinates laid end to end, and that call needs no batch
  axis inside the cell's contractions. Under `vmap` with unbatched
  meta-params, `g[B, N]` and the state are folded to `B * N` coordinates
  (again for every enclosing `vmap`); with per-element meta-params it is
  the plain `vmap`. Reverse mode (what meta-training takes) goes through the
  same fold: the backward pass is `jax.vjp` of `apply` on the folded
  coordinates, recomputing the forward, and the meta-params' cotangent is
  already the sum over the batch. Values and gradients equal the plain
  `vmap` to float tolerance (tests/test_dispatch.py).

  Args:
    apply: `apply(meta_params, g[N], state) -> (d[N], state)`.
    coordinate_axis: the axis of N in each state array (0 for `[N, H]`,
      1 for `[H, N]`).
  """
  return fold_coordinates(apply, (None, 0, coordinate_axis),
                          (0, coordinate_axis))


def fold_coordinates(fn: Callable, in_axes: Tuple, out_axes: Tuple,
                     flat: bool = True, fn_kept: Callable = None
                     ) -> Callable:
  """`fn(*args)`, coordinate-wise, run once on a batch's coordinates laid
  end to end when vmapped (`fold_vmap` for a cell's step; the fused kernel's
  paths).

  `in_axes[i]` is the coordinate axis of every array in `args[i]` (of the
  unbatched shape), or None for an argument shared by all coordinates (the
  meta-params); `out_axes[j]` likewise for `fn`'s j-th output (all have
  one). Under `vmap` with every shared argument unbatched, the batch axis
  is merged into each coordinate axis (broadcast first where an argument is
  not batched), `fn` runs once, and its outputs are split again; otherwise
  it is the plain `vmap`. Reverse mode keeps the fold: `fn`'s `jax.vjp` on
  the folded coordinates, whose shared arguments' cotangents are already
  the sums over the batch.

  With `flat=False` (every axis 0; the fused kernel, which takes any
  leading axes as more coordinates) the batch axes stay where they are and
  `fn` sees `[B, N, ...]`: the same memory as the merged `[B * N, ...]`, but
  without the reshape, so a kernel that writes its state in place
  (`lopt.cell_runtime.fused`) still does under `vmap`; XLA copies an in-place
  operand that is a reshape of a loop's carry.

  `fn_kept`, if given, is `fn` for where the arguments are kept for the
  reverse pass (`fn` may then not overwrite them: the kernel's state).
  """
  if not flat and any(a not in (None, 0) for a in (*in_axes, *out_axes)):
    raise ValueError('fold_coordinates: flat=False needs every coordinate '
                     f'axis 0, got in_axes {in_axes}, out_axes {out_axes}')

  def fold(x, axis):
    return _fold(x, axis) if flat else x

  def unfold(x, axis, size):
    return _unfold(x, axis, size) if flat else x

  def fold_all(size, args, batched, axes):
    return tuple(
        a if axis is None else jax.tree.map(
            lambda x, b, axis=axis: fold(_batched(size, x, b), axis), a, ab)
        for a, ab, axis in zip(args, batched, axes))

  def unfold_all(outs, axes, size):
    return tuple(o if axis is None else jax.tree.map(
        lambda x, axis=axis: unfold(x, axis, size), o)
                 for o, axis in zip(outs, axes))

  def shared_batched(batched, axes):
    return any(any(jax.tree.leaves(b)) for b, axis in zip(batched, axes)
               if axis is None)

  def plain_vmap(f, in_batched, *args):
    in_axes_ = jax.tree.map(lambda b: 0 if b else None, in_batched)
    out = jax.vmap(f, in_axes=in_axes_)(*args)
    return out, jax.tree.map(lambda _: True, out)

  def batched(f):
    """`f`, folded under `vmap`."""

    @jax.custom_batching.custom_vmap
    def forward(*args):
      return f(*args)

    @forward.def_vmap
    def forward_batched(size, in_batched, *args):
      if shared_batched(in_batched, in_axes):
        return plain_vmap(f, in_batched, *args)
      out = forward(*fold_all(size, args, in_batched, in_axes))
      out = unfold_all(out, out_axes, size)
      return out, jax.tree.map(lambda _: True, out)

    return forward

  forward = batched(fn)
  forward_kept = forward if fn_kept is None else batched(fn_kept)

  def vjp(res, ct):
    return jax.vjp(fn, *res)[1](ct)

  @jax.custom_batching.custom_vmap
  def backward(res, ct):
    return vjp(res, ct)

  @backward.def_vmap
  def backward_batched(size, in_batched, res, ct):
    res_b, ct_b = in_batched
    if shared_batched(res_b, in_axes):
      return plain_vmap(vjp, in_batched, res, ct)
    cts = backward(fold_all(size, res, res_b, in_axes),
                   fold_all(size, ct, ct_b, out_axes))
    # A shared argument's cotangent is the batch's sum: unbatched, as it is.
    out = unfold_all(cts, in_axes, size)
    return out, tuple(jax.tree.map(lambda _, axis=axis: axis is not None, c)
                      for c, axis in zip(out, in_axes))

  @jax.custom_vjp
  def folded(*args):
    return forward(*args)

  def folded_fwd(*args):
    return forward_kept(*args), args

  folded.defvjp(folded_fwd, backward)
  return folded


def resolve(implementation: str, config: cells.CellConfig = None) -> str:
  """'auto' -> 'fused' on a single CPU device where the kernel builds (and
  can run `config`), else 'haiku'; any other name is checked and returned.

  One device only: with several (a population sharded over devices) XLA's
  partitioner would gather every shard's coordinates to each device for
  the kernel, which it cannot split. Asks JAX for its devices, so under
  `jax.distributed` call it after `jax.distributed.initialize`.
  """
  if implementation == AUTO:
    from lopt.cell_runtime import fused as fused_cell  # pylint: disable=g-import-not-at-top
    runs = config is None or fused_cell.supports(config)
    return ('fused' if runs and jax.device_count() == 1
            and fused_cell.available() else 'haiku')
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'implementation: unknown {implementation!r}; allowed: '
                     f'{[AUTO] + list(IMPLEMENTATIONS)}')
  return implementation


def make(config: cells.CellConfig, implementation: str = AUTO,
         cell=None, fold: bool = False) -> Implementation:
  """The cell's step as the optimizer runs it.

  Args:
    config: the cell architecture.
    implementation: 'fused' (the whole step in one kernel,
      `lopt.cell_runtime.fused`; XLA:CPU only), 'haiku' (the plain module)
      or 'auto' (`resolve`). Both keep the state `[N, hidden]` per GRU.
    cell: the Haiku transform, if already built.
    fold: under `vmap` with shared meta-params, run once on the batch's
      coordinates laid end to end (`fold_vmap`).
  """
  implementation = resolve(implementation, config)
  if implementation == 'haiku':
    checked = cells.make_apply(config, cell)
    return Implementation('haiku', config.initial_state,
                          fold_vmap(checked, 0) if fold else checked)
  if implementation == 'fused':  # the Haiku module's state layout
    step = make_fused_apply(config, fold)  # the kernel alone folded

    def fused(meta_params, g, state):
      cells.check_inputs(config, g, state)
      return step(meta_params, g, state)

    return Implementation('fused', config.initial_state, fused)
  raise AssertionError(implementation)  # resolve() allows no other
