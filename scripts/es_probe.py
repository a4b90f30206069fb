"""Probes of the ES fitness landscape around its start (configs/meta_es.py).

Scored with the fitness ES meta-training uses (whole runs, random policy 0,
tuned constant-rate Adam 1), on the same run keys throughout.

  sigma: the start and members drawn around it at each sigma. A start
    whose members collapse at a sigma cannot be searched at that sigma.
  schedule: Adam (the residual cell's start) with each rate schedule and
    peak-rate factor: what a lifetime-aware step could gain on the mix.
  adapt: Adam, and directions whose step adapts itself over the run
    (`lopt.step_adaptation`: scaled by exp(h), h += beta * (cos(g_t,
    u_{t-1}) - target)), at 0.1-10x the tasks' rates: whether such a step
    buys rate robustness on the mix. Each spec is
    [NAME@]beta:target[:slope][hH][uF][z], NAME a shipped learned
    optimizer's direction (default Adam's), slope the target's change over
    the run, H the horizon (the gradient is compared with ~H past
    directions), F the fraction of the run it adapts over (`adapt_until`);
    a final 'z' measures the cosine and target in standard deviations of
    chance (`standardize`); beta 0 is the direction as it is. A spec
    optax:NAME is one of optax's step-finding optimizers (SCALE_FINDERS:
    mechanize, prodigy, dadapt, dog).
  compare: meta-params exported by an ES run against its start, on fresh
    run keys (paired): whether the search found anything beyond the noise
    its per-generation figures carry. The run's config is read from the
    file; its references from the run's workdir (else computed).

    python scripts/es_probe.py sigma mix,lifetime 0.01,0.003,0.001
    python scripts/es_probe.py sigma mix,lifetime,residual 0.03,0.01,0.003
    python scripts/es_probe.py schedule mix,residual constant:1,linear:1,linear:2,cosine:1,cosine:2
    python scripts/es_probe.py adapt mix,residual 0.05:0,1:0.01,optim4rl_from_adam_mix@0:0 8
    python scripts/es_probe.py compare runs/meta_es/meta_params.npz 24

Arguments: the probe, the preset, its values, and the number of run keys
(default 8 for sigma and adapt, 16 for schedule); adapt takes a seed of
its run keys last (default 555); compare takes the file and the
number of run keys (default 24).
"""
import sys
import time

import os

import jax
from jax import flatten_util
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from configs import meta_es
from launchers.lib import meta_training
import lopt


def _built(cfg, references=None):
  agents = meta_training.validate(cfg, check_devices=False)
  if references is None:
    references = meta_training.es_references(cfg, agents)
  lo, trainer = meta_training.build_es(cfg, agents, references)
  start = meta_training.start_meta_params(cfg)
  if start is None:
    start = lo.init(jax.random.PRNGKey(cfg.seed))
  return trainer, start, references


def _line(name, f):
  f = np.asarray(f)
  return (f'{name}: mean {f.mean():.3f} +- {f.std() / np.sqrt(f.size):.3f} '
          f'per key {np.round(f, 2)}')


def sigma_probe(preset, sigmas, n):
  trainer, start, _ = _built(meta_es.get_config(preset))
  flat, unravel = flatten_util.ravel_pytree(start)
  print(f'{preset}: {flat.size} meta-params, mean |w| '
        f'{float(jnp.mean(jnp.abs(flat))):.3f}', flush=True)
  keys = jax.random.split(jax.random.PRNGKey(123), n)
  score = jax.jit(jax.vmap(trainer.fitness))
  t = time.time()
  print(_line('start', score(jax.vmap(unravel)(
      jnp.broadcast_to(flat, (n, flat.size))), keys)) +
        f' ({time.time() - t:.0f} s with compiling)', flush=True)
  for sigma in (float(s) for s in sigmas.split(',')):
    z = jax.random.normal(jax.random.PRNGKey(7), (n, flat.size))
    print(_line(f'sigma {sigma:g}',
                score(jax.vmap(unravel)(flat[None] + sigma * z), keys)),
          flush=True)


def schedule_probe(preset, specs, n):
  keys = jax.random.split(jax.random.PRNGKey(321), n)
  references = None  # constant-rate Adam's, computed once
  for spec in specs.split(','):
    schedule, factor = spec.split(':')
    cfg = meta_es.get_config(preset)
    if not cfg.optimizer.adam_residual:
      raise ValueError('schedule: needs a residual preset (its start is Adam)')
    if references is None:
      _, _, references = _built(cfg)
    cfg.tasks.lr_schedule, cfg.tasks.lr_end = schedule, 0.
    cfg.tasks.learning_rates = tuple(float(factor) * r
                                     for r in cfg.tasks.learning_rates)
    trainer, start, _ = _built(cfg, references)
    print(_line(f'Adam, {schedule} schedule, x{float(factor):g} peak rate',
                jax.jit(jax.vmap(trainer.fitness, in_axes=(None, 0)))(
                    start, keys)), flush=True)


# Optimizers that find their own step size (optax.contrib), as functions of
# the rate factor f and the task's tuned Adam rate lr: Mechanic learns the
# scale of Adam at rate f * lr; Prodigy, D-Adaptation and DoG estimate the
# step from the distance travelled, their rate (default 1) times f.
SCALE_FINDERS = {
    'mechanize': lambda f, lr: optax.contrib.mechanize(optax.adam(
        lambda count: f * lr)),
    'prodigy': lambda f, lr: optax.contrib.prodigy(lambda count: f),
    'dadapt': lambda f, lr: optax.contrib.dadapt_adamw(lambda count: f),
    'dog': lambda f, lr: optax.contrib.dog(lambda count: f),
}


def adapt_probe(preset, specs, n, seed=555):
  cfg = meta_es.get_config(preset)
  agents = meta_training.validate(cfg, check_devices=False)
  references = meta_training.es_references(cfg, agents)
  key = jax.random.PRNGKey(seed)
  runs = [(meta_training._task_run(cfg, kind, agent), lr,
           meta_training.task_optimizer_steps(cfg, kind))
          for kind, agent, lr in zip(meta_training.task_agents(cfg), agents,
                                     cfg.tasks.learning_rates)]
  for spec in ['adam'] + specs.split(','):
    name, _, adapt = spec.rpartition('@') if '@' in spec else (
        'adam', '', spec)

    def direction(steps, name=name, adapt=adapt, spec=spec):
      if name == 'adam':
        d = optax.scale_by_adam()
      else:
        lo, meta_params = lopt.pretrained_lib.load(name)
        d = lo.direction_fn(meta_params)
      if spec == 'adam':
        return d
      standardize = adapt.endswith('z')  # the target in sqrt(N) units
      adapt, _, until = adapt.rstrip('z').partition('u')
      adapt, _, horizon = adapt.partition('h')
      beta, target, *slope = (float(x) for x in adapt.split(':'))
      return lopt.step_adaptation.step_adapted(
          d, beta, target, target_slope=slope[0] if slope else 0.,
          total_steps=steps if slope or until else None,
          standardize=standardize, horizon=float(horizon or 1),
          adapt_until=float(until or 1))

    def optimizer(f, lr, steps, spec=spec):
      if spec.startswith('optax:'):  # a step-finding optimizer of optax's
        return SCALE_FINDERS[spec[len('optax:'):]](f, lr)
      return optax.chain(direction(steps), optax.scale_by_learning_rate(
          lambda count: f * lr))

    # One program a task: the factor is an argument, not a constant.
    scorers = [jax.jit(jax.vmap(lambda k, f, run=run, lr=lr, steps=steps: run(
        optimizer(f, lr, steps), k), in_axes=(0, None)))
               for run, lr, steps in runs]
    for factor in (0.1, 0.3, 1., 3., 10.):
      scores = []
      for i, (score, (floor, adam)) in enumerate(zip(scorers, references)):
        s = score(jax.random.split(jax.random.fold_in(key, i), n),
                  jnp.float32(factor))
        scores.append((np.asarray(s) - floor) / (adam - floor))
      print(_line(f'{spec} x{factor:g} (per task '
                  f'{np.round(np.mean(scores, axis=1), 2)})',
                  np.mean(scores, axis=0)), flush=True)


def compare(path, n):
  meta = lopt.serialization.read_metadata(path)
  cfg = ml_collections.ConfigDict(meta['extra']['config'])
  cfg.optimizer.mlp_dims = tuple(cfg.optimizer.mlp_dims)
  cfg.optimizer.momentum_decays = tuple(cfg.optimizer.momentum_decays)
  agents = meta_training.validate(cfg, check_devices=False)
  references = meta_training.es_references_in(
      os.path.dirname(path), cfg, agents, primary=False)
  trainer, start, _ = _built(cfg, references)
  _, found = lopt.load(path)
  keys = jax.random.split(jax.random.PRNGKey(4242), n)
  score = jax.jit(jax.vmap(trainer.fitness, in_axes=(None, 0)))
  a, b = np.asarray(score(start, keys)), np.asarray(score(found, keys))
  print(_line('start', a))
  print(_line(f'{path} (meta-step {meta["extra"].get("meta_step")})', b))
  print(_line('paired difference', b - a))


def main(argv):
  if len(argv) > 2 and argv[1] == 'compare':
    return compare(argv[2], int(argv[3]) if len(argv) > 3 else 24)
  probes = {'sigma': sigma_probe, 'schedule': schedule_probe,
            'adapt': adapt_probe}
  if len(argv) < 4 or argv[1] not in probes:
    raise SystemExit(__doc__)
  n = int(argv[4]) if len(argv) > 4 else (16 if argv[1] == 'schedule' else 8)
  if argv[1] == 'adapt' and len(argv) > 5:  # other run keys than the default
    return adapt_probe(argv[2], argv[3], n, int(argv[5]))
  probes[argv[1]](argv[2], argv[3], n)


if __name__ == '__main__':
  main(sys.argv)
