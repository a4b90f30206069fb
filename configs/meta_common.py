"""Shared meta-training config (every field documented here)."""

import ml_collections

from configs import a2c_common


def base_config() -> ml_collections.ConfigDict:
  """Meta-training defaults; experiment files set tasks and sizes."""
  config = ml_collections.ConfigDict()
  # Seed of the meta-params and of every agent of the population.
  config.seed = 0
  # Meta-iterations in total (rounded up to a multiple of log_every).
  config.num_meta_steps = 1000
  # Meta-iterations per jitted call; one progress line per call.
  config.log_every = 10
  # Checkpoint every this many meta-iterations (a multiple of log_every).
  config.save_every = 100
  # Checkpoints kept in <workdir>/checkpoints.
  config.keep_checkpoints = 3

  # Inner agent: 'a2c' (fields in config.a2c) or 'ppo' (needs a config.ppo
  # section, see configs/meta_ppo_brax.py).
  config.agent = 'a2c'

  config.tasks = ml_collections.ConfigDict()
  # Environments meta-trained on together (see agents.environments.names()).
  config.tasks.env_names = ('catch',)
  # Agent learning rate of each task (the learned optimizer's step size).
  config.tasks.learning_rates = (1e-3,)
  # Each agent's learning-rate schedule over its life (reset to reset, i.e.
  # reset_interval x num_inner_steps updates): constant, linear or cosine,
  # down to learning_rate * lr_end.
  config.tasks.lr_schedule = 'constant'
  config.tasks.lr_end = 0.
  # Reward scaling of each task (makes gradient magnitudes comparable).
  config.tasks.reward_scales = (1.0,)
  # Agents per task (the population); divisible by the device count.
  config.tasks.num_agents = 64
  # Inner agent of each task, 'a2c' or 'ppo' (a mix is meta-trained
  # together; PPO tasks need the config.ppo section); () = config.agent for
  # every task.
  config.tasks.agents = ()
  # Reset interval of each task; () = meta.reset_interval for every task.
  config.tasks.reset_intervals = ()
  # Env options, for every task, as in the training configs (each task's
  # agent is built by the same factory, launchers/common.make_agent).
  # Steps before an episode is truncated: 0 keeps each env's own (Brax: 1000;
  # gridworlds, Catch and CartPole have a fixed length and accept only 0).
  config.episode_length = 0
  # Brax auto-reset: 'first' (restart from the first initial state, as Brax's
  # trainers) or 'sample' (a fresh initial state per episode); '' = 'first'.
  # Other envs ignore it.
  config.reset_mode = ''

  config.a2c = a2c_common.a2c_fields(reward_scale=False)
  config.network = a2c_common.network_fields()

  config.optimizer = ml_collections.ConfigDict()
  # Learned-optimizer cell: optim4rl, l2lgd2 or linear.
  config.optimizer.cell = 'optim4rl'
  # GRU hidden size.
  config.optimizer.hidden_size = 8
  # Hidden widths of the MLP after each GRU.
  config.optimizer.mlp_dims = (16, 16)
  # MLP activation: relu, tanh, gelu, elu, silu.
  config.optimizer.activation = 'relu'
  # Gradient preprocessor: '' (the cell's default), log_sign, andrychowicz,
  # identity.
  config.optimizer.preprocessor = ''
  # eps of log_sign: log(|g| + eps).
  config.optimizer.preprocessor_eps = 1e-18
  # eps of Optim4RL's m / sqrt(v + eps).
  config.optimizer.update_eps = 1e-18
  # Momentum input: decay of a debiased EMA of g fed to the cell instead of
  # g (0 = g itself, the paper's cell).
  config.optimizer.grad_ema = 0.
  # Each update's direction at unit RMS over its coordinates (the rate sets
  # the step's size; meta-training learns only its spread).
  config.optimizer.unit_rms = False
  # Adam's second moment as the magnitude path's input: decay of a debiased
  # EMA of the raw g^2 it sees in place of the square of the cell's input
  # (0 = that square, the paper's cell).
  config.optimizer.second_moment = 0.
  # Lifetime-aware inputs (off for the paper's cell): the training progress
  # t / total_steps (the agent's lifetime: a whole ES run, or reset to reset
  # with meta-gradients), and debiased momenta of g at these decays.
  config.optimizer.progress_input = False
  config.optimizer.momentum_decays = ()
  # Optim4RL's paths learn log-corrections of the moments they see, from
  # zero (with grad_ema and second_moment: exactly Adam at the start).
  config.optimizer.adam_residual = False

  config.meta = ml_collections.ConfigDict()
  # How the meta-params are trained: 'meta_gradient' (the paper's: through
  # K inner updates with pipeline resets; the fields below) or 'es'
  # (evolution strategies on whole training runs, lopt.es; meta.es).
  config.meta.algorithm = 'meta_gradient'
  config.meta.es = ml_collections.ConfigDict()
  # Members per generation (even: antithetic pairs; a multiple of the
  # device count, over which they are split).
  config.meta.es.population_size = 16
  # Standard deviation of the search around the meta-params.
  config.meta.es.sigma = 0.01
  # Adam's rate on the ES ascent direction.
  config.meta.es.learning_rate = 3e-3
  # centered_rank (only the order of members counts), standardize or none.
  config.meta.es.fitness_shaping = 'centered_rank'
  # Updates of each whole training run that scores a member (per task, with
  # the task's env batch and rate; the tasks' lr_schedule runs over it).
  config.meta.es.run_updates = 200
  # Runs per member and task (different seeds; antithetic pairs share them).
  config.meta.es.seeds_per_member = 1
  # The run's score: 'final' (episodes ending in its last 10% of updates)
  # or 'auc' (every episode). Normalised per task: random policy 0, tuned
  # Adam 1 (from reference_seeds runs each, once per workdir).
  config.meta.es.fitness = 'final'
  config.meta.es.reference_seeds = 4
  # Adam's rates for the reference, as factors of each task's rate: the best
  # of them is the fitness's 1 (tuned Adam, not Adam at one rate).
  config.meta.es.reference_rates = (0.3, 1., 3.)
  # Rate factors each run's rate is drawn from (times the task's rate;
  # antithetic pairs share the draw): () = the task's rate. With several,
  # the fitness rewards training well at rates the optimizer is not tuned to.
  config.meta.es.rate_factors = ()
  # Score the search mean each generation (printed as 'search mean'): one
  # more run a generation on every device; False skips it.
  config.meta.es.score_center = True
  # Start from this file's meta-params (a lopt .npz of the same cell as
  # `optimizer`, e.g. launchers/studies/variant.py --adam_start) instead of the
  # cell's init; '' = the init from `seed`.
  config.meta.init_path = ''
  # Start from the cell's init set so that its direction is Adam's
  # (lopt.imitation.adam_start; needs optimizer.second_moment > 0): a
  # meta-trained optimizer then starts as good as Adam at Adam's rate.
  config.meta.adam_start = False
  # Meta-optimizer (Adam) learning rate.
  config.meta.learning_rate = 1e-3
  # Meta-gradient clipping: elementwise, global_norm or none.
  config.meta.clip_type = 'elementwise'
  # Clip value (1.0 elementwise or 0.5 global-norm in the paper).
  config.meta.clip = 1.0
  # K: inner updates per meta-iteration.
  config.meta.num_inner_steps = 4
  # Meta-iterations between two resets of an agent (unless
  # tasks.reset_intervals gives one per task).
  config.meta.reset_interval = 64
  # Pipeline training: staggered resets (False: all agents reset together).
  config.meta.pipeline = True
  # Meta-loss head (lopt.meta_losses): a2c.
  config.meta.meta_loss = 'a2c'
  # Differentiate through the inner gradients too (the full meta-gradient).
  config.meta.second_order = True
  # Recompute inner updates on the backward pass to save memory.
  config.meta.remat = True
  # Run each task's agents in this many sequential groups, each recomputed
  # on the backward pass: the same meta-gradient with one group's peak
  # memory (1 = all agents at once, fastest).
  config.meta.agent_groups = 1
  # How the tasks' meta-gradients are combined: 'mean' (the gradient of the
  # mean meta-loss over tasks) or 'unit_norm' (each task's meta-gradient at
  # unit global norm, then the mean: for mixes whose meta-losses differ by
  # orders of magnitude).
  config.meta.task_weighting = 'mean'
  return config
