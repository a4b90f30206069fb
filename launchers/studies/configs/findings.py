r"""The paper's ablations at this machine's scale (launchers/studies/findings.py).

    python -m launchers.studies.findings --config=launchers/studies/configs/findings.py \
        --workdir=docs/results/findings
    python -m launchers.studies.findings --config=launchers/studies/configs/findings.py:tiny \
        --workdir=/tmp/findings            # minutes; checks the plumbing

Every (env, arm) of the studies is meta-trained with `seeds` meta-training
seeds; each resulting optimizer then trains fresh A2C agents on the env it
was meta-trained on (`eval_seeds` seeds), beside Adam and the untrained
Optim4RL cell at the task's learning rate.
"""

import ml_collections


def get_config(size: str = ''):
  config = ml_collections.ConfigDict()
  # Studies to run, comma-separated (keys of `studies`).
  config.run = 'structure,pipeline'
  # study -> envs and arms (arm names are keys of `arms`).
  config.studies = ml_collections.ConfigDict({
      # Paper: only Optim4RL's structure learns a useful optimizer.
      'structure': {'envs': 'catch',
                    'arms': 'optim4rl,l2lgd2,linear,optim4rl_2024'},
      # Paper: without pipeline training the optimizer is much weaker.
      'pipeline': {'envs': 'catch,small_dense_short',
                   'arms': 'optim4rl,optim4rl_no_pipeline'},
  })
  # arm -> overrides of the meta-training config (nested like
  # configs/meta_common.py; {} = its defaults: Optim4RL, pipeline training).
  config.arms = ml_collections.ConfigDict({
      'optim4rl': {},
      'l2lgd2': {'optimizer': {'cell': 'l2lgd2'}},
      'linear': {'optimizer': {'cell': 'linear'}},
      # The reference code's later cell: raw g into the GRUs, no hidden MLP,
      # first-order meta-gradient. The same cell class, configured.
      'optim4rl_2024': {'optimizer': {'preprocessor': 'identity',
                                      'mlp_dims': ()},
                        'meta': {'second_order': False}},
      'optim4rl_no_pipeline': {'meta': {'pipeline': False}},
  })
  # Meta-training seeds per (env, arm).
  config.seeds = 3
  # Meta-training budget of every run (the paper: 64 agents on Catch, 512
  # per gridworld, thousands of meta-iterations).
  config.num_agents = 16
  config.num_meta_steps = 240
  # Evaluation: fresh agents per optimizer and their A2C updates.
  config.eval_seeds = 5
  config.eval_updates = 1000
  # Where the meta-training and evaluation runs go (resumable; a finished
  # run is read back, not redone). The summary goes to --workdir.
  config.runs_dir = 'runs/findings'
  if size == 'tiny':
    config.seeds = 2
    config.num_agents = 2
    config.num_meta_steps = 4
    config.eval_seeds = 2
    config.eval_updates = 20
  elif size:
    raise ValueError(f'launchers/studies/configs/findings.py: unknown size {size!r}; '
                     "allowed: '' (full) or 'tiny'")
  return config
