"""ES on the self-adapting step's constants (lopt.step_adaptation), on the
ES mix at rates nobody tuned.

The step adaptation's constants -- beta, the target cosine and its change
over the run (target_slope, a lifetime-aware target) -- are meta-learned by
OpenAI-ES (`lopt.es`) around Adam's direction: each member trains fresh A2C
agents on Catch and the two small dense gridworlds (200 updates, as
configs/meta_es.py) at the task's tuned rate times a factor drawn from
0.1, 0.3, 1, 3, 10 (one per run key; an antithetic pair shares it), scored
as the ES fitness (random policy 0, tuned Adam 1). The fitness is
standardised, not ranked, so a pair's rate factor cancels in its
difference.

Meta-params are O(1): beta = w[0], target = 0.01 w[1], slope = 0.01 w[2];
the start w = (1, 1, 0) is `adam_step_adapted`'s hand-set constants.

    python scripts/es_step_controller.py runs/es_step_controller 40
    python scripts/es_step_controller.py runs/es_step_controller2 150 16 0.15 0.1

Arguments: the workdir, the number of generations, and optionally the
population, sigma and ES learning rate (default 8, 0.15, 0.05). It resumes from the
workdir's state.npz (written every generation); metrics.csv,
controller.json and progress.png are written as it goes.
"""
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
import optax

from configs import meta_es
from launchers.lib import common
from launchers.lib import meta_training
import lopt

FACTORS = (0.1, 0.3, 1., 3., 10.)
START = (1., 1., 0.)
POPULATION, SIGMA, LEARNING_RATE = 8, 0.15, 0.05


def constants(w):
  """(beta, target cosine, target slope) from the O(1) meta-params."""
  return jnp.maximum(w[0], 0.), 0.01 * w[1], 0.01 * w[2]


def make_fitness(cfg, agents, references):
  runs = []
  for kind, agent, lr in zip(meta_training.task_agents(cfg), agents,
                             cfg.tasks.learning_rates):
    runs.append((meta_training._task_run(cfg, kind, agent), lr,  # pylint: disable=protected-access
                 meta_training.task_optimizer_steps(cfg, kind)))
  factors = jnp.asarray(FACTORS, jnp.float32)

  def scored_run(w, run, lr, steps, key):
    factor = meta_training.drawn_rate_factor(key, factors)
    beta, target, slope = constants(w['w'])
    opt = optax.chain(
        lopt.step_adaptation.step_adapted(
            optax.scale_by_adam(), beta, target, target_slope=slope,
            total_steps=steps),
        optax.scale_by_learning_rate(lambda count: factor * lr))
    return run(opt, key)

  def fitness(w, key):
    scores = []
    for i, ((run, lr, steps), (floor, adam)) in enumerate(
        zip(runs, references)):
      score = scored_run(w, run, lr, steps, jax.random.fold_in(key, i))
      scores.append((score - floor) / (adam - floor))
    return jnp.mean(jnp.stack(scores))

  return fitness


def _plot(rows, path):
  g = [r['generation'] for r in rows]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for k in ('fitness_mean', 'fitness_center'):
    axes[0].plot(g, [r[k] for r in rows], label=k, alpha=0.8)
  axes[0].set_xlabel('generation')
  axes[0].set_ylabel('fitness (random 0, tuned Adam 1)')
  axes[0].legend()
  for k, times in (('beta', 1), ('target', 100), ('slope', 100)):
    axes[1].plot(g, [times * r[k] for r in rows],
                 label=k if times == 1 else f'{k} x {times}')
  axes[1].set_xlabel('generation')
  axes[1].set_title('the constants (the meta-params w)')
  axes[1].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def main(argv):
  if len(argv) not in (3, 6):
    raise SystemExit(__doc__)
  workdir, generations = argv[1], int(argv[2])
  population, sigma, learning_rate = ((int(argv[3]), float(argv[4]),
                                       float(argv[5])) if len(argv) == 6 else
                                      (POPULATION, SIGMA, LEARNING_RATE))
  os.makedirs(workdir, exist_ok=True)
  cfg = meta_es.get_config('mix,residual')
  agents = meta_training.validate(cfg, check_devices=False)
  references = meta_training.es_references_in(workdir, cfg, agents,
                                              primary=True)
  trainer = lopt.es.make_es_trainer(
      make_fitness(cfg, agents, references),
      {'w': jnp.asarray(START, jnp.float32)}, population_size=population,
      sigma=sigma, learning_rate=learning_rate,
      fitness_shaping='standardize')
  state = trainer.init(jax.random.PRNGKey(0))
  leaves, treedef = jax.tree.flatten(state)
  state_path = os.path.join(workdir, 'state.npz')
  metrics_path = os.path.join(workdir, 'metrics.csv')
  rows = []
  if os.path.exists(state_path):
    saved = np.load(state_path)
    state = jax.tree.unflatten(treedef, [
        jnp.asarray(saved[f'leaf{i}'], x.dtype) for i, x in enumerate(leaves)])
    with open(metrics_path) as f:
      header, *lines = [line.strip().split(',') for line in f]
    rows = [{k: float(v) for k, v in zip(header, line)} for line in lines]
    rows = rows[:int(state.step)]
  step = jax.jit(trainer.step)
  start = time.time()
  done_before = int(state.step)
  while int(state.step) < generations:
    state, metrics = step(state)
    beta, target, slope = (float(x) for x in constants(
        state.meta_params['w']))
    rows.append({'generation': int(state.step),
                 **{k: float(v) for k, v in metrics.items()},
                 'beta': beta, 'target': target, 'slope': slope})
    np.savez(state_path + '.tmp.npz', **{
        f'leaf{i}': np.asarray(x)
        for i, x in enumerate(jax.tree.leaves(state))})
    os.replace(state_path + '.tmp.npz', state_path)
    common.write_csv(metrics_path, rows)
    with open(os.path.join(workdir, 'controller.json'), 'w') as f:
      json.dump({'beta': beta, 'target_cosine': target,
                 'target_slope': slope, 'generation': int(state.step),
                 'rate_factors': FACTORS, 'population': population,
                 'sigma': sigma, 'es_learning_rate': learning_rate}, f,
                indent=1)
    _plot(rows, os.path.join(workdir, 'progress.png'))
    n = int(state.step) - done_before
    rate = (time.time() - start) / n
    print(f'generation {int(state.step)}/{generations} | fitness mean '
          f'{rows[-1]["fitness_mean"]:.3f} center '
          f'{rows[-1]["fitness_center"]:.3f} | beta {beta:.3f} target '
          f'{target:.4f} slope {slope:.4f} | {rate:.0f} s/generation | ETA '
          f'{rate * (generations - int(state.step)):.0f}s', flush=True)
  if rows:
    _plot(rows, os.path.join(workdir, 'progress.png'))


if __name__ == '__main__':
  main(sys.argv)
