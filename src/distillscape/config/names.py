"""The allowed values and limits that modules need to know (datasets, environments, inner losses, init
schemes, costs, ...): defined once, here, so the lower layers import them from one place."""
from __future__ import annotations


DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")


ENVS = ("cartpole", "centipede")  # reinforcement-learning tasks (env/), the other kind of task beside datasets


EVAL_ACTIONS = ("greedy", "sample")


RL_ESTIMATORS = ("ppo", "es")  # the outer gradient of an RL distillation: PPO through the inner step | evolution strategies


INNER_LOSSES = ("mse", "soft_ce")


INIT_SCHEMES = ("default", "kaiming", "xavier", "orthogonal")


IMAGE_INITS = ("noise", "real")


LABEL_MODES = ("soft", "onehot")


INIT_MODES = ("random", "fixed")


BATCHINGS = ("auto", "vmap", "loop")


METHODS = ("meta", "dm", "mtt", "gm", "import")  # how a batch is distilled (distill.method)


EVAL_PROTOCOLS = ("one_step", "k_steps", "yang", "minibatch")  # how a batch trains a model (distill.eval.protocol)


LANDSCAPE_BATCHINGS = ("auto", "vmap", "loop", "channels_last")
EVAL_PATHS = ("auto", "vmap", "channels_last")  # how many models are evaluated (inner.InnerLoop.forward_models)
PRECISIONS = ("fp32", "bf16")  # what the many-model forwards run in (sweep.precision, analysis.precision, distill.eval.precision)


SWEEP_DIRECTIONS = ("random", "through", "reference", "line", "hessian", "trajectory_pca")
HESSIAN_PAIRS = ("top_bottom", "top2", "bottom2")  # sweep.hessian_pair
RANGE_UNITS = ("coordinate", "step")  # sweep.range_unit


SWEEP_COSTS = ("train", "test", "distilled", "snapshots", "random_batch", "train_subsets", "episode_return", "ppo_loss",
               "ppo_loss_reference")


# costs of an RL run (env=...); "distilled" serves both kinds. ppo_loss: on experience of each centre's own policy;
# ppo_loss_reference: on experience of the run's direct PPO minimum, shared by every centre (rl_objective)
RL_COSTS = ("episode_return", "ppo_loss", "ppo_loss_reference")


DATASET_COSTS = ("train", "test", "train_subsets")


LANDING_KINDS = ("distilled", "random_real", "random_synthetic")
LANDING_CURVES = ("none", "bezier", "polychain")  # analysis.curve: the curved path landing -> direct minimum (basins.py)


EARLY_PARTS = ("influence", "fair_baselines", "mixing", "controls", "recognition", "curvature")  # the early-training analyses (issue 25, distillscape.early)


STUDY_TASKS = ("distill", "landscape", "landing", "instances", "report", "none")  # none: the stage is left out


ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")


MAX_SEED = 2**32 - 1  # numpy's seeds (seed_everything seeds numpy too) are 32-bit


# More than this many held-out inits, grid points or landings is a typo, not a study: refused before
# anything is allocated (100k simple_convnets alone are 10 GB of weights).
MAX_MODELS = 100_000
