"""How a batch is distilled and how models train: distill/ (with its optimiser, evaluation protocol and
the other methods' keys), direct/, baseline/, and rl/ (the RL outer objective and direct PPO)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional

from ..errors import ConfigError
from .checks import _at_least, _at_most, _choice, _count, _precision, _rate, _seed
from .names import (BATCHINGS, EVAL_ACTIONS, EVAL_PATHS, EVAL_PROTOCOLS, IMAGE_INITS, INIT_MODES, INIT_SCHEMES, INNER_LOSSES,
                    LABEL_MODES, METHODS, RL_ESTIMATORS)


@dataclass
class DistillOptimConfig:
    """Adam on the synthetic batch."""
    lr_images: float = 0.1
    lr_labels: float = 0.1
    lr_lrs: float = 0.1
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: str = "cosine"   # cosine (decay to 0 over `steps`) | constant

    def __post_init__(self):
        _choice("distill.optim.schedule", self.schedule, ("constant", "cosine"))
        for f in ("lr_images", "lr_labels", "lr_lrs"):
            _at_least(f"distill.optim.{f}", getattr(self, f), 0.0)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"distill.optim.betas={list(self.betas)} must be two numbers in [0, 1)")


@dataclass
class EvalConfig:
    """How the distilled batch trains a model from each held-out init (`distill.eval.*`), for every method.
    The test reports one step always and this protocol beside it (mean, std and a 95% interval over
    distill.eval_inits inits); the analyses (landing, landscape, instances) take the model this protocol
    produces as the landing."""
    protocol: str = "one_step"     # one_step: the batch's own inner steps and rates | k_steps | yang | minibatch
    k: int = 10                    # k_steps: full-batch gradient steps
    k_lr: Optional[float] = None   # k_steps: the rate of each step; null: the batch's total rate split over k steps
    # Yang et al., ICML 2024 (what "training on distilled data" means there): 300 full-batch SGD steps,
    # momentum 0.9, learning rate 0.01
    yang_steps: int = 300
    yang_lr: float = 0.01
    yang_momentum: float = 0.9
    # minibatch: SGD with momentum, each step on a fresh random subset of the batch (its own per init)
    minibatch_size: int = 4
    minibatch_epochs: int = 50     # steps = epochs x ceil(batch / minibatch_size)
    minibatch_lr: float = 0.01
    minibatch_momentum: float = 0.9
    # the one-step rate of a method that does not learn one (dm, gm, mtt, import without a rate): the rate of
    # this grid with the best mean val accuracy over distill.val_inits held-out inits, as baseline.lr_grid
    lr_grid: List[float] = field(default_factory=lambda: [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0])
    # the held-out models' forwards on the val / test data: fp32 | bf16 (bfloat16 forwards, float32 loss sums),
    # checked against fp32 on the first precision_inits models of each evaluation (the test's certificate is in
    # distilled.json and metrics.json)
    precision: str = "fp32"
    precision_tolerance: float = 1e-2  # bf16: largest relative loss (absolute accuracy) difference per model that passes
    precision_inits: int = 8
    path: str = "auto"  # how the held-out models are run: vmap | channels_last | auto (inner.eval_path_rule, never a timing)

    def __post_init__(self):
        _choice("distill.eval.protocol", self.protocol, EVAL_PROTOCOLS)
        _precision("distill.eval", self.precision, self.precision_tolerance, "precision_inits", self.precision_inits)
        _choice("distill.eval.path", self.path, EVAL_PATHS)
        for k in ("k", "yang_steps", "minibatch_size", "minibatch_epochs"):
            _at_least(f"distill.eval.{k}", getattr(self, k), 1)
            _at_most(f"distill.eval.{k}", getattr(self, k), 100_000, "steps run one after another")
        for k in ("k_lr", "yang_lr", "minibatch_lr"):
            _rate(f"distill.eval.{k}", getattr(self, k))
        for k in ("yang_momentum", "minibatch_momentum"):
            if not 0 <= getattr(self, k) < 1:
                raise ConfigError(f"distill.eval.{k}={getattr(self, k)} must be in [0, 1)")
        if not self.lr_grid or any(not math.isfinite(v) or v <= 0 for v in self.lr_grid):
            raise ConfigError(f"distill.eval.lr_grid={list(self.lr_grid)} must be a non-empty list of positive rates")


@dataclass
class DMConfig:
    """Distribution matching (Zhao & Bilen, WACV 2023): per class, the mean embedding (the net's penultimate
    features) of real and synthetic images under freshly sampled random networks, matched in squared distance.
    The paper: one random ConvNet per iteration, 256 real images per class, 20k iterations, SGD (lr 1,
    momentum 0.5) on real-initialized images, DSA augmentation. Here: the run's arch, the real batch of an
    outer step (dataset.batch_size, all classes), the outer optimizer of distill.optim, no augmentation."""
    nets_per_step: int = 1         # random networks per outer step (paper: 1)

    def __post_init__(self):
        _count("distill.dm.nets_per_step", self.nets_per_step)


@dataclass
class GMConfig:
    """Gradient matching (Zhao, Mopuri & Bilen, ICLR 2021): per class, the gradient of the loss on real and on
    synthetic images at a random network, matched layer by layer in 1 - cosine per output unit (biases left
    out, as the paper's distance). The paper also trains the network on the synthetic set between matchings
    (its outer/inner loops); here each outer step draws fresh networks and matches at them only."""
    nets_per_step: int = 1

    def __post_init__(self):
        _count("distill.gm.nets_per_step", self.nets_per_step)


@dataclass
class MTTConfig:
    """Trajectory matching (Cazenavette et al., CVPR 2022): from epoch t of an expert trajectory, `syn_steps`
    SGD steps on the synthetic batch with a learned rate, the end matched to epoch t + expert_epochs:
    ||student - expert_{t+M}||^2 / ||expert_t - expert_{t+M}||^2. Paper (CIFAR-10, 1 image per class):
    100 experts of 50 epochs, SGD lr 0.01, syn_steps 50, expert_epochs 2, max_start_epoch 2. Scaled to our
    small sets: fewer, shorter experts and fewer student steps. The experts are trained with the run's
    inner loss (cross-entropy as the paper: distill.inner_loss=soft_ce)."""
    experts: int = 5               # expert trajectories (paper: 100)
    expert_train_epochs: int = 10  # epochs of each (paper: 50); the trajectory keeps every epoch's weights
    lr_teacher: float = 0.01       # the experts' SGD rate, and the student's initial rate (paper: 0.01)
    expert_seed: int = 0           # expert i starts from init seed expert_seed + i and shuffles with it
    expert_dir: Optional[str] = None  # where the trajectories are kept and reused (null: <run dir>/experts)
    syn_steps: int = 10            # student steps (paper: 50 on CIFAR-10, 1 image per class)
    expert_epochs: int = 2         # M (paper: 2)
    max_start_epoch: int = 2       # t drawn from [0, max_start_epoch) (paper: 2)
    batch_syn: Optional[int] = None  # synthetic images per student step (null: all, the paper's default)
    lr_lr: float = 0.01            # Adam rate on the log of the student rate

    def __post_init__(self):
        for k in ("experts", "expert_train_epochs", "syn_steps", "expert_epochs", "max_start_epoch", "batch_syn"):
            _count(f"distill.mtt.{k}", getattr(self, k))
        _at_most("distill.mtt.syn_steps", self.syn_steps, 1000, "each step is kept for backprop")
        _rate("distill.mtt.lr_teacher", self.lr_teacher)
        _rate("distill.mtt.lr_lr", self.lr_lr)
        _seed("distill.mtt.expert_seed", self.expert_seed)
        if self.max_start_epoch + self.expert_epochs > self.expert_train_epochs:
            raise ConfigError(f"distill.mtt.max_start_epoch + expert_epochs = {self.max_start_epoch + self.expert_epochs} "
                              f"needs experts of that many epochs; raise distill.mtt.expert_train_epochs "
                              f"(now {self.expert_train_epochs}) or lower the others")


@dataclass
class ImportConfig:
    """A distilled set made elsewhere (distill.method=import), evaluated and analysed like one made here. `path`:
    MTT's layout (a directory with images_best.pt, labels_best.pt and optionally lr_best.pt), DC-BENCH's
    DC/DM/DSA layout (a .pt file holding {"data": [(images, labels), ...]}), or a .safetensors file with
    images, labels and optionally lr. Images [n, C, H, W] in the dataset's normalized space; labels class
    indices [n] (hard) or [n, classes] (soft: taken as the targets of the inner loss as they are)."""
    path: Optional[str] = None
    index: int = -1                # DC-BENCH's layout: which (images, labels) pair of "data" (-1: the last, as DC-BENCH reads it)


@dataclass
class DistillConfig:
    """The synthetic batch and the bilevel loop that learns it."""
    images_per_class: int = 1     # distilled images = images_per_class x classes
    image_init: str = "noise"     # noise | real (class-balanced random training images)
    label_mode: str = "soft"      # soft (learnable) | onehot (fixed)
    inner_loss: str = "mse"       # mse to the label vectors (reference study) | soft_ce (cross-entropy to softmax(labels))
    inner_steps: int = 1          # gradient-descent steps on the synthetic batch
    lr_init: float = 0.02         # initial inner learning rate (learned, kept positive in log space)
    lr_per_param: bool = True     # one learned rate per parameter tensor and step (false: one per step, as the reference study)
    init_mode: str = "random"     # random: fresh inits every outer step | fixed: one saved init (Wang et al. 2018)
    init_scheme: str = "default"  # default (PyTorch) | kaiming | xavier
    fixed_init_seed: int = 12345
    inits_per_step: int = 8       # fresh inits per outer step
    steps: int = 1500             # outer steps
    val_every: int = 250          # outer steps between validations
    val_inits: int = 10           # held-out inits per validation
    eval_inits: int = 100         # held-out inits at test
    eval_seed: int = 1_000_000    # base of the held-out inits' seed streams (seeds.EVAL_STREAMS)
    init_chunk: Optional[int] = None  # vmap chunk over inits (lower it if memory runs out)
    batching: str = "auto"        # vmap | loop over inits in the outer step; auto: inner.outer_batching_rule (vmap), never a timing
    optim: DistillOptimConfig = field(default_factory=DistillOptimConfig)
    # how the batch is distilled: meta (the bilevel loop above) | dm | mtt | gm | import; the others keep
    # their labels one-hot (as their papers) and use distill.optim's Adam on the images
    method: str = "meta"
    eval: EvalConfig = field(default_factory=EvalConfig)
    dm: DMConfig = field(default_factory=DMConfig)
    gm: GMConfig = field(default_factory=GMConfig)
    mtt: MTTConfig = field(default_factory=MTTConfig)
    imported: ImportConfig = field(default_factory=ImportConfig)

    def __post_init__(self):
        _at_least("distill.images_per_class", self.images_per_class, 1)
        _at_most("distill.images_per_class", self.images_per_class, 10_000,
                 "a batch that large is not a distillation and would exhaust memory")
        _choice("distill.image_init", self.image_init, IMAGE_INITS)
        _choice("distill.label_mode", self.label_mode, LABEL_MODES)
        _choice("distill.inner_loss", self.inner_loss, INNER_LOSSES)
        _at_least("distill.inner_steps", self.inner_steps, 1)
        _at_most("distill.inner_steps", self.inner_steps, 1000, "each step is kept for backprop")
        _rate("distill.lr_init", self.lr_init)
        _choice("distill.init_mode", self.init_mode, INIT_MODES)
        _choice("distill.init_scheme", self.init_scheme, INIT_SCHEMES)
        _seed("distill.fixed_init_seed", self.fixed_init_seed)
        for k in ("inits_per_step", "val_inits", "eval_inits"):
            _count(f"distill.{k}", getattr(self, k))
        for k in ("steps", "val_every"):
            _at_least(f"distill.{k}", getattr(self, k), 1)
        _seed("distill.eval_seed", self.eval_seed)
        _at_least("distill.init_chunk", self.init_chunk, 1)
        _choice("distill.batching", self.batching, BATCHINGS)
        _choice("distill.method", self.method, METHODS)
        if self.method == "import" and not self.imported.path:
            raise ConfigError("distill.method=import needs the file: add distill.imported.path=<images_best.pt's "
                              "directory, a DC-BENCH .pt file or a .safetensors file>")


@dataclass
class DirectConfig:
    """Direct training on the real data: the baseline and the true-task minimum."""
    checkpoint: Optional[str] = None   # a direct_minimum.safetensors (or its directory) to load instead of training
    epochs: int = 20
    lr: float = 1e-3                   # Adam
    weight_decay: float = 0.0
    init_seed: int = 0
    # then train until it is a minimum's neighbourhood: full-batch L-BFGS on the training split until the
    # gradient norm of the mean train loss is <= converge_grad_tol, or converge_max_steps iterations
    # (the rule and where it stopped are recorded in direct_minimum.json's "convergence")
    converge: bool = False
    converge_grad_tol: float = 1e-4
    converge_max_steps: int = 500
    snapshot_every: int = 0            # > 0: the weights at the start and every this many epochs, in <out>/direct_trajectory/ (sweep.trajectory=direct)

    def __post_init__(self):
        _at_least("direct.epochs", self.epochs, 1)
        _at_least("direct.snapshot_every", self.snapshot_every, 0)
        _rate("direct.converge_grad_tol", self.converge_grad_tol)
        _count("direct.converge_max_steps", self.converge_max_steps)
        _rate("direct.lr", self.lr)
        _at_least("direct.weight_decay", self.weight_decay, 0.0)
        _seed("direct.init_seed", self.init_seed)


@dataclass
class BaselineConfig:
    """One step on random real images (as many as distilled), with its own rate tuned on val."""
    lr_grid: List[float] = field(default_factory=lambda: [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0])
    tune_inits: int = 10

    def __post_init__(self):
        if not self.lr_grid or any(not math.isfinite(v) or v <= 0 for v in self.lr_grid):
            raise ConfigError(f"baseline.lr_grid={list(self.lr_grid)} must be a non-empty list of positive rates")
        _count("baseline.tune_inits", self.tune_inits)


@dataclass
class PPOConfig:
    """Direct PPO training: the RL task's baseline and minimum (direct_minimum)."""
    env_steps: int = 100_000           # environment steps in all
    envs: int = 8
    horizon: int = 256                 # steps per environment per rollout
    epochs: int = 4
    minibatches: int = 4
    lr: float = 2.5e-3                 # Adam, decayed linearly to 0
    ent_coef: float = 0.0
    init_seed: int = 0

    def __post_init__(self):
        _at_least("rl.ppo.env_steps", self.env_steps, 1)   # streamed, not held: no memory bound
        for k in ("envs", "horizon", "epochs", "minibatches"):
            _count(f"rl.ppo.{k}", getattr(self, k))
        _rate("rl.ppo.lr", self.lr)
        _at_least("rl.ppo.ent_coef", self.ent_coef, 0.0)
        _seed("rl.ppo.init_seed", self.init_seed)


@dataclass
class RLConfig:
    """The RL outer objective of a distillation: the one-step policies act, a PPO clipped surrogate with
    GAE advantages from a critic learned alongside is backpropagated into states, targets and rates."""
    envs_per_init: int = 8             # environments each one-step policy acts in per outer step
    horizon: int = 128                 # steps per environment per outer step
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    epochs: int = 4                    # PPO epochs over each outer step's experience (clipping matters from the 2nd)
    ent_coef: float = 0.0
    critic_lr: float = 1e-3
    critic_hidden: List[int] = field(default_factory=lambda: [64, 64])
    state_init_std: float = 1.0        # the synthetic states start as N(0, std^2) noise
    target_scale: float = 1.0          # the action targets start as one-hot x scale
    eval_episodes: int = 10            # episodes per held-out init (fixed seeds, the same for every init)
    eval_actions: str = "greedy"       # greedy (argmax) | sample (from softmax of the logits)
    baseline_lrs: List[float] = field(default_factory=lambda: [0.01, 0.03, 0.1, 0.3, 1.0, 3.0])  # rates tried for the baselines
    estimator: str = "ppo"             # ppo (the surrogate backpropagated through the inner step) | es (evolution strategies, Lupu et al.)
    es_pairs: int = 32                 # es: antithetic pairs of perturbations of the batch per outer step
    es_sigma: float = 0.3              # es: their standard deviation (states, targets and log rates alike)
    es_episodes: int = 2               # es: episodes per one-step policy (seeds drawn per step, the same for every member)
    ppo: PPOConfig = field(default_factory=PPOConfig)

    def __post_init__(self):
        for k in ("envs_per_init", "horizon", "epochs", "eval_episodes"):
            _count(f"rl.{k}", getattr(self, k))
        for k in ("gamma", "gae_lambda"):
            v = getattr(self, k)
            if not 0 <= v <= 1:
                raise ConfigError(f"rl.{k}={v} must be in [0, 1]")
        _rate("rl.clip", self.clip)
        _rate("rl.critic_lr", self.critic_lr)
        _at_least("rl.ent_coef", self.ent_coef, 0.0)
        _rate("rl.state_init_std", self.state_init_std)
        _rate("rl.target_scale", self.target_scale)
        _choice("rl.eval_actions", self.eval_actions, EVAL_ACTIONS)
        _choice("rl.estimator", self.estimator, RL_ESTIMATORS)
        _count("rl.es_pairs", self.es_pairs)
        _count("rl.es_episodes", self.es_episodes)
        _rate("rl.es_sigma", self.es_sigma)
        if not self.baseline_lrs or any(not math.isfinite(v) or v <= 0 for v in self.baseline_lrs):
            raise ConfigError(f"rl.baseline_lrs={list(self.baseline_lrs)} must be a non-empty list of positive rates")
