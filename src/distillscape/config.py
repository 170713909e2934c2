"""Every setting of distillscape, written once: one dataclass per config group (and one per task's own
keys), registered in Hydra's ConfigStore.

Each YAML file of a group extends its schema (`defaults: [schema, _self_]`) and states only what it
changes, so a default lives here and nowhere else. Hydra and OmegaConf check types while composing
(`distill.steps=many` is refused there); what they cannot know, the ranges and allowed values, each
schema checks in `__post_init__`, which runs when a task turns its config into typed settings
(`settings(cfg)`: `OmegaConf.to_object`). `validate` runs that check over a whole composed config and
turns any failure into one `ConfigError` line that names the key and what is allowed.

Values a module needs to know are allowed (datasets, inner losses, init schemes) are defined here, so
that the lower layers import them from one place and this module imports nothing of the package but
its errors.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from .errors import ConfigError

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
SWEEP_DIRECTIONS = ("random", "through", "reference", "line")
SWEEP_COSTS = ("train", "test", "distilled", "snapshots", "random_batch", "train_subsets", "episode_return", "ppo_loss")
RL_COSTS = ("episode_return", "ppo_loss")       # costs of an RL run (env=...); "distilled" serves both kinds
DATASET_COSTS = ("train", "test", "train_subsets")
LANDING_KINDS = ("distilled", "random_real", "random_synthetic")
EARLY_PARTS = ("influence", "fair_baselines", "mixing", "controls", "recognition", "curvature")  # the early-training analyses (issue 25, distillscape.early)
STUDY_TASKS = ("distill", "landscape", "landing", "instances", "report", "none")  # none: the stage is left out
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
MAX_SEED = 2**32 - 1  # numpy's seeds (seed_everything seeds numpy too) are 32-bit
# More than this many held-out inits, grid points or landings is a typo, not a study: refused before
# anything is allocated (100k simple_convnets alone are 10 GB of weights).
MAX_MODELS = 100_000


# -- checks ----------------------------------------------------------------------------------------------
def _choice(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")


def _finite(key: str, value) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}={value} must be a finite number")


def _at_least(key: str, value, low, strict: bool = False) -> None:
    if value is None:
        return
    _finite(key, value)
    if value < low or (strict and value == low):
        raise ConfigError(f"{key}={value} must be {'>' if strict else '>='} {low}")


def _at_most(key: str, value, high, why: str) -> None:
    if value is not None and value > high:
        raise ConfigError(f"{key}={value} must be <= {high} ({why})")


def _count(key: str, value, low: int = 1) -> None:
    """A number of models, steps or examples: at least `low`, and not absurdly many."""
    _at_least(key, value, low)
    _at_most(key, value, MAX_MODELS, "more would exhaust memory before it ran")


def _seed(key: str, value) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{key}={value!r} must be an integer in [0, {MAX_SEED}]")


def _rate(key: str, value) -> None:
    _at_least(key, value, 0.0, strict=True)


# -- dataset/ ------------------------------------------------------------------------------------------
@dataclass
class DatasetConfig:
    """One LightningDataModule for every dataset (distillscape.data.TensorDataModule)."""
    _target_: str = "distillscape.data.TensorDataModule"
    name: str = "digits"
    root: Optional[str] = "${paths.data_dir}"   # where the files are (torchvision's layout); digits needs none
    download: bool = False                      # let torchvision fetch missing files (needs internet)
    val_size: int = 200                         # training images held out for validation (fixed seed)
    batch_size: int = 256                       # real batch of an outer step / a direct-training step
    eval_batch_size: int = 1000
    train_subset: Optional[int] = None          # keep a fixed random subset of this many training images
    split_seed: int = 0                         # of the validation split and the train subset
    num_workers: int = 0

    def __post_init__(self):
        _choice("dataset.name", self.name, DATASETS)
        _count("dataset.val_size", self.val_size)
        _count("dataset.batch_size", self.batch_size)
        _count("dataset.eval_batch_size", self.eval_batch_size)
        _at_least("dataset.train_subset", self.train_subset, 1)
        _seed("dataset.split_seed", self.split_seed)
        _at_least("dataset.num_workers", self.num_workers, 0)
        _at_most("dataset.num_workers", self.num_workers, 256, "one worker per core is plenty")


# the identity of a dataset's data: two configs that agree on these read the same split, normalized the same
DATA_IDENTITY = ("name", "val_size", "split_seed", "train_subset")


# -- arch/ -------------------------------------------------------------------------------------------------
# Built with the dataset's shape and class count: `instantiate(arch)(in_channels=, height=, width=, num_classes=)`.
@dataclass
class MLPConfig:
    """Fully connected network, ReLU hidden layers."""
    _target_: str = "distillscape.models.MLP"
    _partial_: bool = True
    hidden: List[int] = field(default_factory=lambda: [128])

    def __post_init__(self):
        if any(int(h) < 1 for h in self.hidden):
            raise ConfigError(f"arch.hidden={list(self.hidden)} must be positive layer widths")


@dataclass
class LeNetConfig:
    """LeNet-5 with ReLU and max pooling (Wang et al. 2018's MNIST network)."""
    _target_: str = "distillscape.models.LeNet"
    _partial_: bool = True


@dataclass
class SimpleConvNetConfig:
    """conv 3x3 16 -> ReLU -> conv 3x3 32 -> ReLU -> linear: the reference cost-surface study's network."""
    _target_: str = "distillscape.models.SimpleConvNet"
    _partial_: bool = True


@dataclass
class ConvNetConfig:
    """The 3-block ConvNet of distillation benchmarks: conv 3x3 -> instance norm -> ReLU -> avg pool."""
    _target_: str = "distillscape.models.ConvNet"
    _partial_: bool = True
    width_channels: int = 128
    depth: int = 3

    def __post_init__(self):
        _at_least("arch.width_channels", self.width_channels, 1)
        _at_most("arch.width_channels", self.width_channels, 4096, "wider would exhaust memory")
        _at_least("arch.depth", self.depth, 1)
        _at_most("arch.depth", self.depth, 16, "deeper is not this network")


@dataclass
class PolicyMLPConfig:
    """A policy network on flat observations (RL tasks): hidden layers with tanh (or relu), then action
    logits. Built with the environment's sizes: `instantiate(arch)(obs_dim=, num_actions=)`."""
    _target_: str = "distillscape.models.PolicyMLP"
    _partial_: bool = True
    hidden: List[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"

    def __post_init__(self):
        if any(int(h) < 1 for h in self.hidden):
            raise ConfigError(f"arch.hidden={list(self.hidden)} must be positive layer widths")
        _choice("arch.activation", self.activation, ("tanh", "relu"))


@dataclass
class AtariActorConfig:
    """The conv policy on stacked Atari frames (Nature-DQN torso; `width` scales its channels)."""
    _target_: str = "distillscape.models.AtariActor"
    _partial_: bool = True
    width: float = 1.0

    def __post_init__(self):
        _at_least("arch.width", self.width, 0.0, strict=True)
        _at_most("arch.width", self.width, 16.0, "wider would exhaust memory")


ARCH_SCHEMAS = {"mlp": MLPConfig, "lenet": LeNetConfig, "simple_convnet": SimpleConvNetConfig,
                "convnet": ConvNetConfig, "policy_mlp": PolicyMLPConfig, "atari_actor": AtariActorConfig}
POLICY_ARCHS = ("distillscape.models.PolicyMLP", "distillscape.models.AtariActor")
IMAGE_ARCHS = ("mlp", "lenet", "simple_convnet", "convnet")  # the architectures of image classification
ARCHS = tuple(s._target_ for s in ARCH_SCHEMAS.values())


# -- distill/ ----------------------------------------------------------------------------------------------
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

    def __post_init__(self):
        _choice("distill.eval.protocol", self.protocol, EVAL_PROTOCOLS)
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


# -- direct/ and baseline/ -----------------------------------------------------------------------------------
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

    def __post_init__(self):
        _at_least("direct.epochs", self.epochs, 1)
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


# -- trainer/ ----------------------------------------------------------------------------------------------
@dataclass
class TrainerConfig:
    """Lightning's Trainer. Keys not listed here can still be given with `+trainer.<key>=...`."""
    _target_: str = "lightning.pytorch.Trainer"
    accelerator: str = "cpu"
    devices: Any = 1                   # a count, a list of device ids, or auto
    strategy: str = "auto"             # ddp: several devices (landscape sweeps deal their grid points out among them)
    max_epochs: Optional[int] = None
    max_steps: int = -1
    val_check_interval: Any = None
    check_val_every_n_epoch: Optional[int] = 1
    default_root_dir: Optional[str] = "${paths.output_dir}"
    log_every_n_steps: int = 10
    enable_progress_bar: bool = True
    enable_model_summary: bool = False
    num_sanity_val_steps: int = 0
    deterministic: bool = False
    inference_mode: bool = False       # the inner step differentiates inside evaluation too
    gradient_clip_val: Optional[float] = None

    def __post_init__(self):
        _choice("trainer.accelerator", self.accelerator, ACCELERATORS)
        d = self.devices
        if isinstance(d, bool) or not (d == "auto" or (isinstance(d, int) and 1 <= d <= 1024)
                                       or (isinstance(d, (list, tuple)) and d and all(isinstance(i, int) and i >= 0 for i in d))):
            raise ConfigError(f"trainer.devices={d!r} must be a count >= 1, a list of device ids, or auto")
        if self.max_steps != -1:
            _at_least("trainer.max_steps", self.max_steps, 1)
        if self.max_epochs is not None and self.max_epochs != -1:
            _at_least("trainer.max_epochs", self.max_epochs, 1)
        _at_least("trainer.check_val_every_n_epoch", self.check_val_every_n_epoch, 1)
        v = self.val_check_interval
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0):
            raise ConfigError(f"trainer.val_check_interval={v!r} must be a positive number of steps or a fraction")
        _at_least("trainer.log_every_n_steps", self.log_every_n_steps, 1)
        _at_least("trainer.num_sanity_val_steps", self.num_sanity_val_steps, -1)
        _at_least("trainer.gradient_clip_val", self.gradient_clip_val, 0.0)


# -- logger/ -----------------------------------------------------------------------------------------------
@dataclass
class CSVLoggerConfig:
    """Lightning's CSV logger, into <output_dir>/<name> (the TensorBoard one takes the same keys)."""
    _target_: str = "lightning.pytorch.loggers.CSVLogger"
    save_dir: str = "${paths.output_dir}"
    name: str = "csv"
    version: str = ""


@dataclass
class TensorBoardLoggerConfig(CSVLoggerConfig):
    _target_: str = "lightning.pytorch.loggers.TensorBoardLogger"
    name: str = "tensorboard"


@dataclass
class WandbLoggerConfig:
    """Weights & Biases, through distillscape.tracking.wandb_logger (see conf/logger/wandb.yaml)."""
    _target_: str = "lightning.pytorch.loggers.WandbLogger"
    project: str = "distillscape"
    entity: Optional[str] = None
    save_dir: str = "${paths.output_dir}"
    offline: Optional[bool] = None     # null: offline unless an API key is configured
    group: Optional[str] = None        # null: the multirun's sweep
    tags: List[str] = field(default_factory=list)
    log_model: bool = False


LOGGER_SCHEMAS = {"csv": CSVLoggerConfig, "tensorboard": TensorBoardLoggerConfig, "wandb": WandbLoggerConfig}


# -- env/ and rl/ (reinforcement-learning tasks) -------------------------------------------------------------
@dataclass
class EnvConfig:
    """A reinforcement-learning task (gymnasium): the other kind of task beside dataset/. With env set,
    distillscape-distill distills the task into a batch of states and action targets."""
    name: str = "cartpole"
    game: Optional[str] = None         # Atari: the ale-py game (centipede)
    max_episode_steps: int = 500       # CartPole-v1's limit (an episode's return is at most this)
    frame_stack: int = 4               # Atari: frames per observation

    def __post_init__(self):
        _choice("env.name", self.name, ENVS)
        _at_least("env.max_episode_steps", self.max_episode_steps, 1)
        _at_most("env.max_episode_steps", self.max_episode_steps, 1_000_000, "longer is not an episode")
        _at_least("env.frame_stack", self.frame_stack, 1)
        if self.name != "cartpole" and not self.game:
            raise ConfigError(f"env.game must name the ale-py game of env={self.name}")


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


# -- paths/ ------------------------------------------------------------------------------------------------
@dataclass
class PathsConfig:
    data_dir: str = "${oc.env:DISTILLSCAPE_DATA,./data}"   # $DISTILLSCAPE_DATA if set, else ./data
    output_dir: str = "${hydra:runtime.output_dir}"        # Hydra's output directory of the job


# -- sweep/ (distillscape-landscape) ---------------------------------------------------------------------------
@dataclass
class SweepConfig:
    """A plane of two random filter-normalized directions (Li et al. 2018) around each centre,
    coordinates in [-1, 1] as in the reference study; the other sweep/ files change the directions."""
    centres: Any = field(default_factory=lambda: ["minimum"])  # minimum | landing | init | a checkpoint file; several: one surface each, same directions
    directions: str = "random"         # random | through | reference | line
    through: List[str] = field(default_factory=lambda: ["landing", "init"])  # directions=through: the other two points of the plane
    towards: str = "landing"           # directions=reference / line: the point at alpha = 1
    seed: int = 0                      # of the random directions
    bias: str = "zero"                 # biases in random directions: zero | keep (normalized element by element)
    norm: str = "zero"                 # normalization-layer parameters in random directions: zero | keep
    buffers: str = "freeze"            # running statistics: freeze (centre's values) | sweep (moved with the weights)
    range: Optional[List[List[float]]] = field(default_factory=lambda: [[-1.0, 1.0], [-1.0, 1.0]])  # [lo, hi] per axis; null: the marked points' span plus margin
    margin: float = 0.25
    resolution: List[int] = field(default_factory=lambda: [21, 21])
    costs: List[str] = field(default_factory=lambda: ["train", "test", "distilled"])
    mark: List[str] = field(default_factory=lambda: ["init", "landing", "minimum"])  # points drawn at their (projected) coordinates
    log_scale: bool = True
    lines: List[List[str]] = field(default_factory=list)  # also the line from a to b for each [a, b] ([[init, landing]]): alpha 0 at a, 1 at b
    line_range: List[float] = field(default_factory=lambda: [-0.5, 1.5])
    line_resolution: int = 41
    precision: str = "fp32"            # fp32 | bf16: forwards in bfloat16 (sums in float64), checked against fp32 at sample points
    precision_tolerance: float = 1e-3  # bf16: largest relative loss (absolute accuracy) difference from fp32 that passes
    precision_points: int = 8          # bf16: random grid points recomputed in fp32 (besides the centre and each loss's 4 lowest)

    def __post_init__(self):
        _choice("sweep.directions", self.directions, SWEEP_DIRECTIONS)
        _choice("sweep.precision", self.precision, ("fp32", "bf16"))
        if not (math.isfinite(self.precision_tolerance) and self.precision_tolerance > 0):
            raise ConfigError(f"sweep.precision_tolerance={self.precision_tolerance} must be a positive number "
                              f"(e.g. 1e-3: a bf16 loss within 0.1% of fp32)")
        _at_least("sweep.precision_points", self.precision_points, 0)
        _choice("sweep.bias", self.bias, ("zero", "keep"))
        _choice("sweep.norm", self.norm, ("zero", "keep"))
        _choice("sweep.buffers", self.buffers, ("freeze", "sweep"))
        _seed("sweep.seed", self.seed)
        for c in self.costs:
            _choice("sweep.costs entry", c, SWEEP_COSTS)
        if not self.costs:
            raise ConfigError("sweep.costs is empty; name at least one of: " + ", ".join(SWEEP_COSTS))
        if not self.centres:
            raise ConfigError("sweep.centres is empty; name minimum, landing, init or a checkpoint file")
        if any(int(n) < 2 for n in self.resolution):
            raise ConfigError(f"sweep.resolution={list(self.resolution)} needs at least 2 points per axis")
        points = math.prod(int(n) for n in self.resolution)
        if points > 10 * MAX_MODELS:
            raise ConfigError(f"sweep.resolution={list(self.resolution)} is {points} grid points; at most "
                              f"{10 * MAX_MODELS} fit one surface file (split a larger sweep into several)")
        if self.range is not None:
            for r in self.range:
                if len(r) != 2 or not all(math.isfinite(v) for v in r) or r[0] >= r[1]:
                    raise ConfigError(f"sweep.range={[list(r) for r in self.range]} must be a list of finite "
                                      f"[lo, hi] with lo < hi, one per axis")
        _at_least("sweep.margin", self.margin, 0.0)
        if any(len(pair) != 2 for pair in self.lines):
            raise ConfigError(f"sweep.lines={[list(p) for p in self.lines]} must be a list of [from, to] point pairs, "
                              f"e.g. [[init,landing]]")
        r = self.line_range
        if len(r) != 2 or not all(math.isfinite(v) for v in r) or r[0] >= r[1]:
            raise ConfigError(f"sweep.line_range={list(r)} must be finite [lo, hi] with lo < hi")
        _at_least("sweep.line_resolution", self.line_resolution, 2)


@dataclass
class LandscapeConfig:
    out_dir: str = "${paths.output_dir}"   # give every shard of a multirun the same one
    minimum: Optional[str] = None      # a direct_minimum.safetensors to use instead of the run's own
    init_seed: int = 0                 # the init whose one-step landing is the point "landing" (unless the batch has a fixed init)
    batching: str = "auto"             # vmap | loop | channels_last | auto (landscape.batching_rule: by net and device, never a timing)
    points_per_batch: int = 16         # grid points per predict step
    data_batch: int = 4096             # examples per forward of one point (vmap: shared by the chunk's points)
    train_subsample: Optional[int] = None  # train/* on a fixed random subsample of this many images (null: the full split)
    subset_sizes: List[int] = field(default_factory=lambda: [10, 100, 1000, 10000, 55000])  # cost train_subsets: nested random subsets
    subset_seed: int = 0
    random_batch_seed: int = 0         # cost random_batch: the noise batch of the sanity check
    episodes: int = 10                 # cost episode_return: episodes per point (the same seeds at every point)
    episode_seed: int = 0              # ... their seeds' base
    experience_steps: int = 2048       # cost ppo_loss: samples of the static experience set (the centre policy's)
    experience_envs: int = 10          # ... environments it is gathered in
    experience_seed: int = 0

    def __post_init__(self):
        _choice("landscape.batching", self.batching, LANDSCAPE_BATCHINGS)
        _count("landscape.points_per_batch", self.points_per_batch)
        _at_least("landscape.data_batch", self.data_batch, 1)
        _at_most("landscape.data_batch", self.data_batch, 1 << 20, "one forward of that many examples exhausts memory")
        _at_least("landscape.train_subsample", self.train_subsample, 1)
        _seed("landscape.init_seed", self.init_seed)
        _seed("landscape.subset_seed", self.subset_seed)
        _seed("landscape.random_batch_seed", self.random_batch_seed)
        for k in ("episodes", "experience_steps", "experience_envs"):
            _count(f"landscape.{k}", getattr(self, k))
        _seed("landscape.episode_seed", self.episode_seed)
        _seed("landscape.experience_seed", self.experience_seed)
        if any(n < 1 for n in self.subset_sizes):
            raise ConfigError(f"landscape.subset_sizes={list(self.subset_sizes)} must be positive sizes")


# -- analysis/ (distillscape-landing) ---------------------------------------------------------------------
@dataclass
class LandingConfig:
    """The landing analysis: M inits, landed by every batch kind, measured on the true task."""
    kinds: List[str] = field(default_factory=lambda: list(LANDING_KINDS))
    inits: int = 100                   # M: sampled inits (the same for every kind)
    init_seed: int = 2_000_000         # their seed: distinct from the distillation's eval seeds (distill.eval_seed + 0..3)
    seed: int = 0                      # base of the analysis seed streams (seeds.ANALYSIS_STREAMS)
    train_examples: Optional[int] = 2000   # train loss / gradients / barriers on a fixed random subsample (null: the whole split)
    test_examples: Optional[int] = None    # test loss / accuracy on the first this many test images (null: all)
    polish_inits: int = 20             # landings polished (the first ones)
    polish_steps: int = 200            # SGD steps on the real training data from each landing
    polish_lr: float = 0.01
    polish_momentum: float = 0.9
    polish_batch_size: int = 128
    curvature_inits: int = 10          # landings (and inits) whose Hessian is probed (the first ones)
    curvature_examples: Optional[int] = 1000  # the first this many of the train subsample define that Hessian
    power_iters: int = 100             # power iteration: at most this many Hessian-vector products ...
    power_tol: float = 1e-4            # ... or until the top eigenvalue changes by less than this (relative)
    hutchinson_probes: int = 20        # Rademacher probes of the trace estimate (and of the certificate's per-tensor traces)
    # the curvature certificate (distillscape.curvature): is a point a minimum, a saddle or not stationary?
    # certificate.json and density.png, for the first certificate_inits inits, their distilled landings
    # and the direct minimum
    certificate: bool = False
    certificate_inits: int = 10        # landings (and their inits) certified: the first ones
    certificate_examples: Optional[int] = None  # its true task: null = the whole training split, else a fixed random subsample
    certificate_eigs: int = 10         # k: the top-k and bottom-k Hessian eigenvalues (Lanczos Ritz values)
    lanczos_steps: int = 80            # Lanczos iterations (batched Hessian-vector products) per point
    slq_starts: int = 4                # spectral density: random starts of stochastic Lanczos quadrature ...
    slq_steps: int = 40                # ... and Lanczos iterations of each
    grad_tol: float = 1e-3             # stationary: ||grad of the mean train loss|| <= grad_tol
    negative_tol: float = 1e-3         # a Ritz value theta with residual r is significantly negative when theta < -(r + negative_tol * lambda_max)
    density_sigma: float = 0.01        # Gaussian smoothing of the density figure: this fraction of the spectra's range
    barrier_points: int = 11           # points on each straight path (ends included)
    trajectory_inits: int = 5          # inits trained directly on real data (polish optimizer), to compare landings with
    trajectory_steps: List[int] = field(default_factory=lambda: [1, 2, 5, 10, 20, 50, 100, 200, 500])  # (0, the init, is always added)
    data_chunk: int = 1000             # examples per forward
    init_chunk: Optional[int] = None   # models per vmapped forward (lower it if memory runs out)
    device: str = "cpu"                # cpu | cuda
    # -- does the distilled batch only encode early training? (issue 25; distillscape.early; [] runs none)
    early: List[str] = field(default_factory=list)  # any of influence, fair_baselines, mixing, controls, recognition, curvature
    early_inits: int = 20              # the first this many of the M inits are the held-out inits of every early part
    influence_top: int = 5             # test images listed per distilled image: those its removal hurts most
    mixing_per_class: List[int] = field(default_factory=lambda: [0, 2, 10, 50])  # real images per class added
    fair_steps: int = 300              # outer steps learning soft labels and rates for random real images
    fair_direct_seeds: int = 5         # directly trained networks (the run's direct settings), one per seed
    fair_direct_epochs: Optional[int] = None  # their epochs (null: the run's direct.epochs)
    control_fractions: List[float] = field(default_factory=lambda: [0.005, 0.01, 0.02, 0.05])  # real subsets
    control_models: int = 10           # networks trained per subset fraction (each its own subset and init)
    control_steps: int = 200           # full-batch gradient steps on the subset (polish_lr, polish_momentum)
    recognition_archs: List[str] = field(default_factory=lambda: ["mlp", "simple_convnet"])  # trained directly (their defaults) ...
    recognition_epochs: List[int] = field(default_factory=lambda: [1, 5, 20])  # ... and measured on the distilled images after these epochs
    recognition_seeds: int = 3         # networks per architecture
    early_curvature_probes: int = 10   # curvature: Hutchinson probes of the Hessian trace at every checkpoint and landing ...
    early_curvature_lanczos_steps: int = 20  # ... and Lanczos iterations for its top eigenvalue (true task: curvature_examples)

    def __post_init__(self):
        for k in self.kinds:
            _choice("analysis.kinds entry", k, LANDING_KINDS)
        for k in self.early:
            _choice("analysis.early entry", k, EARLY_PARTS)
        for k in self.recognition_archs:
            _choice("analysis.recognition_archs entry", k, IMAGE_ARCHS)
        if not self.recognition_epochs or not all(isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= 10_000
                                                  for k in self.recognition_epochs):
            raise ConfigError(f"analysis.recognition_epochs={list(self.recognition_epochs)}: give epochs from 1 to "
                              f"10000 after which the directly trained networks are measured, e.g. [1,5,20]")
        for k in ("early_inits", "influence_top", "fair_steps", "fair_direct_seeds", "control_models", "recognition_seeds",
                  "early_curvature_probes", "early_curvature_lanczos_steps"):
            _count(f"analysis.{k}", getattr(self, k))
        _at_least("analysis.fair_direct_epochs", self.fair_direct_epochs, 1)
        _at_least("analysis.control_steps", self.control_steps, 0)
        _at_least("analysis.control_models", self.control_models, 2)  # the controls' agreement among themselves needs pairs
        if not self.mixing_per_class or not all(isinstance(k, int) and not isinstance(k, bool) and 0 <= k <= MAX_MODELS
                                                for k in self.mixing_per_class):
            raise ConfigError(f"analysis.mixing_per_class={list(self.mixing_per_class)}: give non-negative integers "
                              f"(real images per class added to the distilled batch), e.g. [0,2,10,50]")
        if not self.control_fractions or not all(0 < f <= 1 for f in self.control_fractions):
            raise ConfigError(f"analysis.control_fractions={list(self.control_fractions)}: give fractions of the "
                              f"training split in (0, 1], e.g. [0.005,0.01,0.02,0.05]")
        for k in ("inits", "power_iters", "hutchinson_probes", "polish_batch_size", "data_chunk", "certificate_inits",
                  "certificate_eigs", "lanczos_steps", "slq_starts", "slq_steps"):
            _count(f"analysis.{k}", getattr(self, k))
        for k in ("polish_inits", "curvature_inits", "trajectory_inits"):
            _count(f"analysis.{k}", getattr(self, k), 0)
        _at_least("analysis.polish_steps", self.polish_steps, 0)
        if self.lanczos_steps < 2 * self.certificate_eigs:
            raise ConfigError(f"analysis.lanczos_steps={self.lanczos_steps} gives at most that many eigenvalues: "
                              f"use at least 2 * analysis.certificate_eigs = {2 * self.certificate_eigs}")
        _rate("analysis.grad_tol", self.grad_tol)
        _at_least("analysis.negative_tol", self.negative_tol, 0.0)
        _rate("analysis.density_sigma", self.density_sigma)
        for k in ("train_examples", "test_examples", "curvature_examples", "certificate_examples", "init_chunk"):
            _at_least(f"analysis.{k}", getattr(self, k), 1)
        _at_least("analysis.barrier_points", self.barrier_points, 2)
        _at_most("analysis.barrier_points", self.barrier_points, 10_000, "each point is a full evaluation")
        if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in self.trajectory_steps):
            raise ConfigError(f"analysis.trajectory_steps={list(self.trajectory_steps)}: give non-negative integers "
                              f"(direct-training steps at which the landing is compared), e.g. [1,10,100]")
        _rate("analysis.polish_lr", self.polish_lr)
        _at_least("analysis.polish_momentum", self.polish_momentum, 0.0)
        _at_least("analysis.power_tol", self.power_tol, 0.0)
        _seed("analysis.init_seed", self.init_seed)
        _seed("analysis.seed", self.seed)
        _choice("analysis.device", self.device, ("cpu", "cuda"))


# -- the tasks' own keys -----------------------------------------------------------------------------------
@dataclass
class InstancesConfig:
    direct_minimum: Optional[str] = None  # direct_minimum.safetensors (or its dir); default: the one beside the distilled batch
    data_dir: Optional[str] = None     # where the dataset lies now, if not where the distillation run found it
    neighbours: int = 5                # nearest real images shown and measured per distilled image
    models: int = 25                   # one-step models (held-out random inits) for the comparisons and the ensemble
    init_seed: int = 3_000_000         # seed of those inits (distinct from the distillation's train/val/test inits)
    compare_seed: int = 0              # seed of the random real and noise batches
    per_page: int = 20                 # distilled images per figure page
    test_limit: Optional[int] = None   # use only the first N test images (null: all)

    def __post_init__(self):
        for k in ("neighbours", "models", "per_page"):
            _count(f"instances.{k}", getattr(self, k))
        _at_least("instances.test_limit", self.test_limit, 1)
        _seed("instances.init_seed", self.init_seed)
        _seed("instances.compare_seed", self.compare_seed)


@dataclass
class ReportConfig:
    title: str = "distillscape study"
    file: str = "report.html"          # written into the report's output dir
    max_figures: int = 80              # figures embedded in all (the rest are listed)

    def __post_init__(self):
        _at_least("report.max_figures", self.max_figures, 0)
        if not self.file.endswith(".html") or "/" in self.file:
            raise ConfigError(f"report.file={self.file!r} must be a file name ending in .html")


@dataclass
class StudyConfig:
    dataset: str = "digits"
    arch: str = "simple_convnet"
    logger: str = "none"               # every stage's logger: csv | tensorboard | wandb | none
    method: str = "meta"               # a stage list may pass it on (distill.method=${study.method}): experiment=atlas
    protocol: str = "one_step"         # the same for distill.eval.protocol
    force: bool = False                # rerun stages that already finished
    progress_every_s: float = 60.0     # without a terminal: a "still running" line after this many silent seconds (0: none)
    tasks: Dict[str, str] = field(default_factory=dict)  # stage -> task it runs, where they differ; the report runs last
    stages: Dict[str, List[str]] = field(default_factory=lambda: {
        "distill": ["dataset=${study.dataset}", "arch=${study.arch}", "logger=${study.logger}", "seed=${seed}"],
        "landscape": ["dataset=${study.dataset}", "logger=${study.logger}", "seed=${seed}"],
        "landing": ["dataset=${study.dataset}", "logger=${study.logger}", "seed=${seed}"],
        "instances": ["logger=${study.logger}", "seed=${seed}"],
        "report": ["logger=${study.logger}"]})   # the chain, in order: stage -> overrides that tie it to the study
    overrides: Dict[str, List[str]] = field(default_factory=lambda: {
        s: [] for s in ("distill", "landscape", "landing", "instances", "report")})  # what an experiment changes in a stage

    def __post_init__(self):
        _choice("study.dataset", self.dataset, DATASETS)
        _choice("study.arch", self.arch, tuple(ARCH_SCHEMAS))
        _choice("study.logger", self.logger, ("none", *LOGGER_SCHEMAS))
        _at_least("study.progress_every_s", self.progress_every_s, 0)
        _choice("study.method", self.method, METHODS)
        _choice("study.protocol", self.protocol, EVAL_PROTOCOLS)
        for stage, task in self.tasks.items():
            _choice(f"study.tasks.{stage}", task, STUDY_TASKS)
            if stage not in self.stages:
                raise ConfigError(f"study.tasks.{stage} names a task for a stage that study.stages does not have; "
                                  f"add study.stages.{stage}=[...] or drop it")
        for name, table in (("stages", self.stages), ("overrides", self.overrides)):
            for stage, ovs in table.items():
                if not isinstance(ovs, (list, tuple)) or not all(isinstance(o, str) for o in ovs):
                    raise ConfigError(f"study.{name}.{stage} must be a list of override strings, got {ovs!r}")


# -- one schema per task (the root of conf/<task>.yaml) -------------------------------------------------------
@dataclass
class Job:
    task_name: str = MISSING
    seed: int = 0
    paths: PathsConfig = MISSING
    logger: Any = None
    # a directory holding a job's records is that job's: a rerun there of the same job returns or resumes it, any
    # other is refused (resume.check_owner); false: run anyway, overwriting (a distillation: recompute a finished one)
    skip_complete: bool = True

    def __post_init__(self):
        _seed("seed", self.seed)


@dataclass
class DistillJob(Job):
    dataset: DatasetConfig = MISSING
    env: Optional[EnvConfig] = None    # set (env=cartpole): distill an RL task instead of the dataset
    rl: RLConfig = field(default_factory=RLConfig)
    arch: Any = MISSING
    distill: DistillConfig = MISSING
    direct: DirectConfig = MISSING
    baseline: BaselineConfig = MISSING
    trainer: TrainerConfig = MISSING
    ckpt_path: Optional[str] = None    # resume: `last` (this run dir's checkpoints/last.ckpt) or a checkpoint path
    checkpoint_every: int = 250        # outer steps between checkpoints
    snapshot_every: int = 250          # outer steps between snapshots of the synthetic batch (0: none)

    def __post_init__(self):
        super().__post_init__()
        _at_least("checkpoint_every", self.checkpoint_every, 1)
        _at_least("snapshot_every", self.snapshot_every, 0)


@dataclass
class TrainJob(Job):
    dataset: DatasetConfig = MISSING
    arch: Any = MISSING
    direct: DirectConfig = MISSING
    trainer: TrainerConfig = MISSING


@dataclass
class LandscapeJob(Job):
    dataset: DatasetConfig = MISSING
    sweep: SweepConfig = MISSING
    trainer: TrainerConfig = MISSING
    distilled: Optional[str] = None    # output directory of distillscape-distill (distilled.*, direct_minimum.*, snapshots/)
    shard: int = 0                     # this run computes shard `shard` of `num_shards` of every grid
    num_shards: int = 1
    landscape: LandscapeConfig = field(default_factory=LandscapeConfig)

    def __post_init__(self):
        super().__post_init__()
        _at_least("num_shards", self.num_shards, 1)
        _at_most("num_shards", self.num_shards, 9999, "shard files are numbered with four digits")
        if not 0 <= self.shard < self.num_shards:
            raise ConfigError(f"shard={self.shard} must be in [0, num_shards={self.num_shards})")


@dataclass
class LandingJob(Job):
    dataset: DatasetConfig = MISSING
    analysis: LandingConfig = MISSING
    baseline: BaselineConfig = MISSING
    distilled: Optional[str] = None    # output directory of distillscape-distill (distilled.*, direct_minimum.*)
    direct_minimum: Optional[str] = None   # a direct_minimum.safetensors (or its directory) to use instead of the run's own
    distill_first: bool = False        # with distilled=null: distill into <output_dir>/distill first (reused when it is there)
    distill_overrides: List[str] = field(default_factory=list)  # overrides of conf/distill.yaml for that distillation


@dataclass
class InstancesJob(Job):
    distilled: str = MISSING           # a distillscape-distill output dir, a snapshot, or a distilled.safetensors
    instances: InstancesConfig = field(default_factory=InstancesConfig)


@dataclass
class ReportJob(Job):
    runs: Any = MISSING                # output directories: a distillation run and any of its analyses
    report: ReportConfig = field(default_factory=ReportConfig)


@dataclass
class StudyJob(Job):
    study: StudyConfig = field(default_factory=StudyConfig)


JOBS = {"distill": DistillJob, "train": TrainJob, "landscape": LandscapeJob, "landing": LandingJob,
        "instances": InstancesJob, "report": ReportJob, "study": StudyJob}
GROUPS = {"dataset": DatasetConfig, "env": EnvConfig, "distill": DistillConfig, "direct": DirectConfig, "baseline": BaselineConfig,
          "trainer": TrainerConfig, "paths": PathsConfig, "sweep": SweepConfig, "analysis": LandingConfig}


def register() -> None:
    """Put every schema in Hydra's ConfigStore: group schemas as `<group>/schema` (arch and logger:
    `<group>/<option>_schema`), task schemas as `<task>_schema`, which conf/<task>.yaml lists first."""
    cs = ConfigStore.instance()
    for group, schema in GROUPS.items():
        cs.store(group=group, name="schema", node=schema)
    for name, schema in ARCH_SCHEMAS.items():
        cs.store(group="arch", name=f"{name}_schema", node=schema)
    for name, schema in LOGGER_SCHEMAS.items():
        cs.store(group="logger", name=f"{name}_schema", node=schema)
    for task, schema in JOBS.items():
        cs.store(name=f"{task}_schema", node=schema)


register()


# -- from a composed config to typed settings --------------------------------------------------------------
def _schema_of(node: Any) -> type | None:
    t = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    return t if t is not None and is_dataclass(t) else None


def _unknown_keys(name: str, node: DictConfig, schema: type) -> None:
    """A key a schema does not have (put there with `+key=`, or by a config file written by hand): the
    nearest known key is suggested. Nested schemas are walked."""
    known = {f.name: f for f in fields(schema)}
    for key in node:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" Did you mean {name}.{close[0]}?" if close else ""
            raise ConfigError(f"unknown key {name}.{key}.{hint} Known keys: {', '.join(sorted(known))}")
        child = node._get_node(key)
        if isinstance(child, DictConfig) and (sub := _schema_of(child)) is not None and not child._is_missing():
            _unknown_keys(f"{name}.{key}", child, sub)


def _to_object(name: str, node: DictConfig):
    try:
        return OmegaConf.to_object(node)
    except ConfigError:
        raise
    except MissingMandatoryValue as e:
        key = getattr(e, "full_key", None) or name
        raise ConfigError(f"{key}=??? must be given (add {key}=... to the command line)") from None
    except OmegaConfBaseException as e:  # a wrong type: OmegaConf names the key in full_key
        key = getattr(e, "full_key", None) or name
        raise ConfigError(f"{key}: {str(e).splitlines()[0]}") from None


# keys of a schema that are handed on as they are (extra Trainer arguments given with +trainer.x=...)
OPEN_SECTIONS = ("trainer",)


def section(cfg: DictConfig, name: str, schema: type | None = None):
    """The typed, checked settings of one section of a config (a dataclass instance)."""
    node = cfg[name]
    schema = schema or _schema_of(node)
    if schema is None:
        raise ConfigError(f"{name} has no schema; it must be one of the config groups of conf/")
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{name} must be a mapping, got {node!r}")
    if _schema_of(node) is None:  # plain data (e.g. read back from an artifact): typed by the schema
        node = OmegaConf.merge(OmegaConf.structured(schema), node)
    if name not in OPEN_SECTIONS:
        _unknown_keys(name, node, schema)
    return _to_object(name, node)


def as_settings(schema: type, value):
    """`value` (a schema instance, a DictConfig or a plain dict) as a checked instance of `schema`."""
    if isinstance(value, schema):
        return value
    node = value if isinstance(value, DictConfig) else OmegaConf.create(dict(value))
    if _schema_of(node) is None:
        _unknown_keys(schema.__name__, node, schema)
        node = OmegaConf.merge(OmegaConf.structured(schema), node)
    return _to_object(schema.__name__, node)


def _without_hydra(cfg: DictConfig) -> DictConfig:
    return OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"]) if "hydra" in cfg else cfg


def _dotted(node, prefix: str = ""):
    """Every key of a config node, dotted (distill.optim.lr_images), parents before their children."""
    if isinstance(node, DictConfig):
        for k in node.keys():
            yield f"{prefix}{k}"
            if not node._get_node(k)._is_missing() and not node._get_node(k)._is_interpolation():
                yield from _dotted(node._get_node(k), f"{prefix}{k}.")


def _unknown_top_keys(cfg: DictConfig, schema: type) -> None:
    """A key added with `+` at the top of a task's config (`+distil.steps=3`, `+foo=bar`): no part of the task
    reads it, and the job would run its defaults without a word. Refused with the nearest key the config has."""
    known = {f.name for f in fields(schema)}
    for key in cfg.keys():
        if key == "hydra" or key in known:
            continue
        added = [k for k in _dotted(cfg._get_node(key), f"{key}.")] or [str(key)]
        leaf = next((k for k in reversed(added) if "." in k), str(key))
        have = [k for k in _dotted(_without_hydra(cfg)) if k.split(".")[0] in known]
        close = difflib.get_close_matches(leaf, have, n=1, cutoff=0.6) or difflib.get_close_matches(str(key), sorted(known), n=1)
        hint = f"did you mean {close[0]}?" if close else f"the task's keys are: {', '.join(sorted(known))}"
        raise ConfigError(f"unknown key {leaf}: {hint} (no task reads it; a `+` adds only entries of a mapping, "
                          f"e.g. +study.tasks.<stage>=..., or extra Trainer arguments +trainer.<arg>=...)")


def _check(cfg: DictConfig):
    """Every check of `validate`; returns the typed settings when cfg has a task schema, else None."""
    if (root := _schema_of(cfg)) is not None:
        _unknown_top_keys(cfg, root)
    for name in list(cfg.keys()):
        if name == "hydra" or name in OPEN_SECTIONS:
            continue
        node = cfg._get_node(name)
        if isinstance(node, DictConfig) and not node._is_missing() and (schema := _schema_of(node)) is not None:
            _unknown_keys(name, node, schema)
    if "arch" in cfg and cfg.arch is not None:
        _choice("arch._target_", cfg.arch.get("_target_"), ARCHS)
        if "dataset" in cfg and cfg.get("env") is None and cfg.arch.get("_target_") in POLICY_ARCHS:
            name = str(cfg.arch.get("_target_")).rsplit(".", 1)[-1]
            raise ConfigError(f"arch {name} is a policy network for an RL task (env=cartpole, env=centipede); the "
                              f"dataset {cfg.dataset.get('name')} needs an image classifier: arch=mlp, lenet, "
                              f"simple_convnet or convnet (or add env=<name> to distill an RL task)")
    if "seed" in cfg:
        _seed("seed", cfg.seed)
    if _schema_of(cfg) is not None:  # one pass: every section's __post_init__, then the task's own keys
        return _to_object("config", _without_hydra(cfg))
    for name in list(cfg.keys()):  # a config composed by hand: each typed section on its own
        node = cfg._get_node(name)
        if name != "hydra" and isinstance(node, DictConfig) and not node._is_missing() and _schema_of(node):
            section(cfg, name)
    return None


def validate(cfg: DictConfig) -> DictConfig:
    """Check a composed config against its schemas; return cfg unchanged or raise ConfigError naming the key."""
    _check(cfg)
    return cfg


def settings(cfg: DictConfig):
    """The whole config as typed settings: the task's schema instance (e.g. DistillJob) whose sections
    are the group schemas' instances, every value checked (`validate`)."""
    typed = _check(cfg)
    if typed is None:
        raise ConfigError("this config was not composed from a task's conf/<task>.yaml (it has no task schema)")
    return typed
