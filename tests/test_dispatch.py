"""lopt.cell_runtime.dispatch: the fused kernel as the optimizer runs it equals
the plain Haiku module over steps, folded vmaps equal plain ones, names checked."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt
from lopt import cells
from lopt.cell_runtime import dispatch
from lopt.cell_runtime import fused as fused_cell
from lopt import meta

CONFIGS = {
    'optim4rl': dict(cell='optim4rl'),
    'optim4rl_no_mlp': dict(cell='optim4rl', mlp_dims=()),
    'optim4rl_tanh': dict(cell='optim4rl', hidden_size=4, mlp_dims=(6,),
                          activation='tanh'),
    'l2lgd2': dict(cell='l2lgd2'),
    'linear': dict(cell='linear'),
}


def _inputs(config, n, key):
  """Meta-params moved off init, RL-like gradients, a non-zero state."""
  cell = cells.make_cell(config)
  k0, k1, k2, k3 = jax.random.split(key, 4)
  mp = cell.init(k0, jnp.zeros(1), config.initial_state(1))
  leaves, tree = jax.tree.flatten(mp)
  mp = jax.tree.unflatten(tree, [
      x + 0.3 * jax.random.normal(k, x.shape)
      for x, k in zip(leaves, jax.random.split(k1, len(leaves)))])
  g = jax.random.normal(k2, (n,)) * 10. ** jax.random.uniform(
      k3, (n,), minval=-9., maxval=1.)
  g = g.at[:3].set(0.)
  state = tuple(0.5 * jnp.tanh(jax.random.normal(jax.random.fold_in(k3, i),
                                                 (n, config.hidden_size)))
                for i in range(cells.NUM_GRUS[config.cell]))
  return cell, mp, g, state


def test_optimizer_implementations_agree_over_steps():
  implementation = 'fused'
  lo_kernel = lopt.learned_optimizer(cell='optim4rl',
                                   implementation=implementation)
  lo_plain = lopt.learned_optimizer(cell='optim4rl', implementation='haiku')
  mp = lo_kernel.init(jax.random.PRNGKey(0))
  params = {'w': jnp.ones((40, 30)), 'b': jnp.zeros(30)}
  grads = jax.tree.map(lambda p: 1e-3 * jnp.cos(jnp.arange(p.size).reshape(
      p.shape) * 1.0), params)
  out = []
  for lo in (lo_kernel, lo_plain):
    opt = lo.opt_fn(mp, 1e-2)
    state = opt.init(params)
    ups = []
    for _ in range(3):
      u, state = jax.jit(opt.update)(grads, state)
      ups.append(u)
    out.append((ups, lopt.direction_state(state).cell_state))
  for a, b in zip(jax.tree.leaves(out[0][0]), jax.tree.leaves(out[1][0])):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-12)
  for a, b in zip(out[0][1], out[1][1]):
    assert a.shape == b.shape == (1230, 8)  # Haiku's layout for both
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bad_implementation_and_state_shapes_are_named():
  with pytest.raises(ValueError, match="implementation: unknown 'cuda'"):
    lopt.learned_optimizer(implementation='cuda')
  with pytest.raises(ValueError, match="implementation: unknown 'fast'"):
    lopt.learned_optimizer(implementation='fast')
  lo = lopt.learned_optimizer(cell='optim4rl', implementation='haiku')
  mp = lo.init(jax.random.PRNGKey(0))
  opt = lo.direction_fn(mp)
  state = opt.init(jnp.zeros(5))
  impl = dispatch.make(lo.config, 'haiku')
  with pytest.raises(AssertionError, match='rank'):
    impl.apply(mp, jnp.zeros((5, 1)), state.cell_state)
  bad = state._replace(cell_state=(jnp.zeros((5, 7)), jnp.zeros((5, 7))))
  with pytest.raises(AssertionError, match='shape'):
    opt.update(jnp.zeros(5), bad)


def _max_diff(a, b):
  return max(float(jnp.max(jnp.abs(x - y)))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize('implementation,axis',
                         [('haiku', 0), ('fused', 0)])
def test_folded_vmap_equals_the_plain_vmap(implementation, axis):
  # The population's coordinates laid end to end: the same values, state
  # and gradients (meta-params, g, state) as vmapping the cell, also nested,
  # with an unbatched state, and with per-agent meta-params (plain vmap).
  config = cells.CellConfig(cell='optim4rl', hidden_size=4, mlp_dims=(6,))
  _, mp, _, _ = _inputs(config, 1, jax.random.PRNGKey(0))
  impl = dispatch.make(config, implementation)
  folded = dispatch.fold_vmap(impl.apply, axis)
  b, n = 3, 37
  g = 1e-3 * jax.random.normal(jax.random.PRNGKey(1), (b, n))
  state = tuple(0.3 * jax.random.normal(jax.random.PRNGKey(2 + i), (b,) + x.shape)
                for i, x in enumerate(impl.initial_state(n)))
  shared = functools.partial(jax.vmap, in_axes=(None, 0, 0))
  np.testing.assert_allclose(
      _max_diff(shared(folded)(mp, g, state), shared(impl.apply)(mp, g, state)),
      0., atol=1e-6)

  def loss(fn, mp, g, state):
    d, h = shared(fn)(mp, g, state)
    return jnp.sum(jnp.sin(d)) + sum(jnp.sum(jnp.cos(x)) for x in h)

  grads = [jax.jit(jax.grad(functools.partial(loss, fn), argnums=(0, 1, 2)))(
      mp, g, state) for fn in (impl.apply, folded)]
  for x, y in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    np.testing.assert_allclose(y, x, rtol=1e-4,
                               atol=1e-5 * float(jnp.abs(x).max()) + 1e-12)
  nested = lambda fn: jax.vmap(shared(fn), in_axes=(None, 0, 0))
  g2, s2 = jnp.stack([g, -2. * g]), jax.tree.map(
      lambda x: jnp.stack([x, 0.5 * x]), state)
  assert _max_diff(nested(folded)(mp, g2, s2),
                   nested(impl.apply)(mp, g2, s2)) < 1e-6
  state0 = impl.initial_state(n)
  one_state = functools.partial(jax.vmap, in_axes=(None, 0, None))
  assert _max_diff(one_state(folded)(mp, g, state0),
                   one_state(impl.apply)(mp, g, state0)) < 1e-6
  per_agent = jax.tree.map(lambda x: jnp.stack([x, 1.1 * x, 0.9 * x]), mp)
  assert _max_diff(jax.vmap(folded)(per_agent, g, state),
                   jax.vmap(impl.apply)(per_agent, g, state)) < 1e-6
  grad_mp = lambda fn: jax.grad(
      lambda m: jnp.sum(jax.vmap(fn)(m, g, state)[0]))(per_agent)
  assert _max_diff(grad_mp(folded), grad_mp(impl.apply)) < 1e-5


def test_folded_optimizer_gives_the_same_meta_gradient_in_meta_training():
  # One population meta-gradient (vmapped agents, K inner steps, remat) with
  # the cell folded and not, and with the fused kernel (folded).
  def meta_grad(fold, implementation='haiku'):
    lo = lopt.learned_optimizer(cell='optim4rl', hidden_size=4, mlp_dims=(6,),
                                fold_vmap=fold, implementation=implementation)
    mp = lo.init(jax.random.PRNGKey(0))
    params = {'w': jax.random.normal(jax.random.PRNGKey(1), (4, 5, 3))}
    x = jax.random.normal(jax.random.PRNGKey(2), (4, 8, 5))

    def agent_loss(mp, w, x):
      opt = lo.opt_fn(mp, 1e-2)
      loss = lambda w: jnp.mean((x @ w) ** 2)

      def step(carry, _):
        w, s = carry
        u, s = opt.update(jax.grad(loss)(w), s)
        return (w + u, s), None

      (w, _), _ = jax.lax.scan(jax.checkpoint(step), (w, opt.init(w)), None,
                               length=3)
      return loss(w)

    pop = lambda mp: jnp.mean(jax.vmap(agent_loss, in_axes=(None, 0, 0))(
        mp, params['w'], x))
    return jax.jit(jax.value_and_grad(pop))(mp)

  v0, g0 = meta_grad(False)
  for v1, g1 in (meta_grad(True), meta_grad(True, 'fused')):
    np.testing.assert_allclose(v1, v0, rtol=1e-6)
    for x, y in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
      np.testing.assert_allclose(y, x, rtol=1e-4,
                                 atol=1e-5 * float(jnp.abs(x).max()) + 1e-12)


def test_fused_reverse_pass_runs_no_kernel_forward_again():
  # K inner steps of a population, under meta.inner_unroll's remat policy:
  # the program has one forward and one backward kernel call (in the scan's
  # forward and reverse loops), and the meta-gradient is the one without
  # remat. The kernel's backward needs only its inputs, but unit_rms's
  # derivative needs the direction: the plain jax.checkpoint would run the
  # forward again for it, the policy keeps it.
  lo = lopt.learned_optimizer(cell='optim4rl', hidden_size=4, mlp_dims=(6,),
                              implementation='fused', unit_rms=True)
  mp = lo.init(jax.random.PRNGKey(0))
  w0 = jax.random.normal(jax.random.PRNGKey(1), (3, 40))

  def meta_loss(mp, policy):
    opt = lo.opt_fn(mp, 1e-2)

    def agent(w):
      def step(carry, _):
        w, s = carry
        u, s = opt.update(jax.grad(lambda w: jnp.sum(jnp.sin(w) * w))(w), s)
        return (w + u, s), None
      if policy != 'none':
        step = jax.checkpoint(step, policy=policy)
      (w, _), _ = jax.lax.scan(step, (w, opt.init(w)), None, length=3)
      return jnp.sum(w ** 2)

    return jnp.mean(jax.vmap(agent)(w0))

  def kernel_calls(policy):
    fn = jax.jit(jax.grad(functools.partial(meta_loss, policy=policy)))
    text = fn.lower(mp).compile().as_text()
    return [text.count(f'custom_call_target="{t}"')
            for t in (fused_cell.FORWARD, fused_cell.BACKWARD)], fn(mp)

  (calls, g0), (calls_policy, g1) = (kernel_calls('none'),
                                     kernel_calls(meta.REMAT_POLICY))
  assert calls == calls_policy == [1, 1]
  assert kernel_calls(None)[0] == [2, 1]  # jax.checkpoint's default
  # unit_rms makes the direction's overall scale (the sign path's last bias)
  # irrelevant: that gradient is 0 up to rounding, hence a global atol.
  scale = max(float(jnp.abs(a).max()) for a in jax.tree.leaves(g0))
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * scale)
