r"""launchers/studies/gradients.py: the paper's gradient-statistics and -processing tests.

    python -m launchers.studies.gradients --config=launchers/studies/configs/gradients.py \
        --workdir=docs/results/grad_stats
    python -m launchers.studies.gradients --config=launchers/studies/configs/gradients.py --workdir=runs/gs \
        --config.sources=catch,regression --config.identity.num_steps=3000

Finding 1 trains `num_seeds` learners per source with Adam and records their
gradients at several training stages; finding 2 trains a GRU + MLP head to
reproduce those agent gradients from raw or processed input.
"""

import ml_collections

from configs import a2c_common


def get_config():
  config = ml_collections.ConfigDict()
  # Seed of everything: learners use keys split from it, identity-fit seed i
  # uses seed + i, the held-out split uses it too.
  config.seed = 0
  # Comma-separated gradient sources: discrete-action env names (A2C agents,
  # e.g. catch, small_dense_short; see agents.environments.names()) and
  # 'regression' (a supervised MLP regression, the contrast).
  config.sources = 'catch,small_dense_short,regression'
  # Learners per source (independent seeds, vmapped): stats are mean ± std
  # over them.
  config.num_seeds = 3
  # Training updates per learner (A2C updates or regression minibatches).
  config.num_updates = 1000
  # Consecutive updates recorded at each stage (the RNN's sequence length).
  config.window = 10
  # Comma-separated training stages as fractions of training in [0, 1]: a
  # window starts at update round(f * (num_updates - window)).
  config.stage_fractions = '0,0.1,0.5,1'
  # Adam step size of every learner (the A2C configs' default).
  config.learning_rate = 1e-3

  # A2C settings (the paper's; the network is the paper's for each env:
  # Catch dense 256, small gridworlds MLP 32).
  config.a2c = a2c_common.a2c_fields(reward_scale=True)
  # Environments per A2C agent: 16 x 20 steps = 320 env steps per update.
  config.a2c.num_envs = 16

  config.regression = ml_collections.ConfigDict()
  # Dimension of the Gaussian inputs x ~ N(0, I).
  config.regression.input_dim = 16
  # Hidden widths of the fixed random tanh teacher MLP (comma-separated).
  config.regression.teacher_hidden = '32'
  # Hidden widths of the ReLU student MLP being trained (comma-separated).
  config.regression.student_hidden = '64,64'
  # Fresh examples per minibatch.
  config.regression.batch_size = 64
  # Std of the Gaussian label noise.
  config.regression.noise_std = 0.1

  # Histogram bins of log10|g| (decades): [hist_min, hist_max] in steps.
  config.hist_min = -12.
  config.hist_max = 1.
  config.hist_bin_width = 0.25

  config.identity = ml_collections.ConfigDict()
  # Run finding 2 (the identity fit) at all.
  config.identity.enabled = True
  # Comma-separated sources whose gradients it trains on; '' = every A2C
  # source above (not the regression).
  config.identity.sources = ''
  # Comma-separated HEAD:LOSS pairs, each run with every preprocessor.
  # Heads: sign_exp (g_hat = sign(g) exp(o), Optim4RL's m path) or linear
  # (g_hat = o). Losses: log_mse ((log|g_hat| - log|g|)^2), relative
  # (|g_hat - g| / |g|), mse ((g_hat - g)^2, the reference code's).
  config.identity.variants = 'sign_exp:log_mse,linear:mse'
  # Comma-separated input preprocessors (lopt.preprocessing): identity
  # ([g], raw) and log_sign ([log(|g| + eps), sign g]).
  config.identity.preprocessors = 'identity,log_sign'
  # Seeds (model init and minibatches) per (variant, preprocessor).
  config.identity.num_seeds = 3
  # Fraction of each source's coordinate sequences held out for scoring.
  config.identity.heldout_fraction = 0.2
  # At most this many held-out sequences per source are scored.
  config.identity.max_test_sequences = 20000
  # GRU hidden size (the cells' 8).
  config.identity.hidden_size = 8
  # MLP head hidden widths (comma-separated; the cells' default 16,16).
  config.identity.mlp_dims = '16,16'
  # eps of log_sign.
  config.identity.eps = 1e-18
  # Adam step size.
  config.identity.learning_rate = 3e-3
  # Adam steps (same for every run).
  config.identity.num_steps = 1500
  # Sequences (coordinates) per minibatch.
  config.identity.batch_size = 1024
  # Relative tolerance of the 'fraction within' metric.
  config.identity.tolerance = 0.1
  # 'Fraction within' is also reported for |g| below / above this.
  config.identity.magnitude_split = 1e-5
  # Held-out points drawn in the scatter plot per run.
  config.identity.plot_points = 3000
  return config
