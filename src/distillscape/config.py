"""Schemas that check a composed config before any work starts.

Hydra already refuses unknown config-group options and overrides of keys that do not exist (struct
mode). What it cannot know is which values make sense: these dataclasses give every section of the
config its types (checked by OmegaConf) and ranges / allowed values (checked in `__post_init__`), and
`validate` turns any failure into one `ConfigError` line that names the key and what is allowed.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .data import DATASETS
from .inner import INNER_LOSSES
from .models import INIT_SCHEMES


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the allowed values."""


def _choice(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")


def _at_least(key: str, value, low, strict: bool = False) -> None:
    if value is None:
        return
    if value < low or (strict and value == low):
        raise ConfigError(f"{key}={value} must be {'>' if strict else '>='} {low}")


@dataclass
class DatasetSchema:
    _target_: str = "distillscape.data.TensorDataModule"
    name: str = "digits"
    root: Optional[str] = None
    download: bool = False
    val_size: int = 200
    batch_size: int = 256
    eval_batch_size: int = 1000
    train_subset: Optional[int] = None
    split_seed: int = 0
    num_workers: int = 0

    def __post_init__(self):
        _choice("dataset.name", self.name, DATASETS)
        _at_least("dataset.val_size", self.val_size, 1)
        _at_least("dataset.batch_size", self.batch_size, 1)
        _at_least("dataset.eval_batch_size", self.eval_batch_size, 1)
        _at_least("dataset.train_subset", self.train_subset, 1)
        _at_least("dataset.num_workers", self.num_workers, 0)


@dataclass
class DistillOptimSchema:
    lr_images: float = 0.01
    lr_labels: float = 0.01
    lr_lrs: float = 0.01
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    schedule: str = "cosine"

    def __post_init__(self):
        _choice("distill.optim.schedule", self.schedule, ("constant", "cosine"))
        for f in ("lr_images", "lr_labels", "lr_lrs"):
            _at_least(f"distill.optim.{f}", getattr(self, f), 0.0)


IMAGE_INITS = ("noise", "real")
LABEL_MODES = ("soft", "onehot")
INIT_MODES = ("random", "fixed")
BATCHINGS = ("auto", "vmap", "loop")


@dataclass
class DistillSchema:
    images_per_class: int = 1
    image_init: str = "noise"
    label_mode: str = "soft"
    inner_loss: str = "mse"
    inner_steps: int = 1
    lr_init: float = 0.02
    lr_per_param: bool = False
    init_mode: str = "random"
    init_scheme: str = "default"
    fixed_init_seed: int = 12345
    inits_per_step: int = 8
    steps: int = 1500
    val_every: int = 250
    val_inits: int = 10
    eval_inits: int = 100
    eval_seed: int = 1_000_000
    init_chunk: Optional[int] = None
    batching: str = "auto"
    optim: DistillOptimSchema = field(default_factory=DistillOptimSchema)

    def __post_init__(self):
        _at_least("distill.images_per_class", self.images_per_class, 1)
        _choice("distill.image_init", self.image_init, IMAGE_INITS)
        _choice("distill.label_mode", self.label_mode, LABEL_MODES)
        _choice("distill.inner_loss", self.inner_loss, INNER_LOSSES)
        _at_least("distill.inner_steps", self.inner_steps, 1)
        _at_least("distill.lr_init", self.lr_init, 0.0, strict=True)
        _choice("distill.init_mode", self.init_mode, INIT_MODES)
        _choice("distill.init_scheme", self.init_scheme, INIT_SCHEMES)
        for k in ("inits_per_step", "steps", "val_every", "val_inits", "eval_inits"):
            _at_least(f"distill.{k}", getattr(self, k), 1)
        _at_least("distill.init_chunk", self.init_chunk, 1)
        _choice("distill.batching", self.batching, BATCHINGS)


@dataclass
class DirectSchema:
    checkpoint: Optional[str] = None
    epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 0.0
    init_seed: int = 0

    def __post_init__(self):
        _at_least("direct.epochs", self.epochs, 1)
        _at_least("direct.lr", self.lr, 0.0, strict=True)
        _at_least("direct.weight_decay", self.weight_decay, 0.0)


@dataclass
class BaselineSchema:
    lr_grid: list = field(default_factory=lambda: [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0])
    tune_inits: int = 10

    def __post_init__(self):
        if not self.lr_grid or any(v <= 0 for v in self.lr_grid):
            raise ConfigError(f"baseline.lr_grid={list(self.lr_grid)} must be a non-empty list of positive rates")
        _at_least("baseline.tune_inits", self.tune_inits, 1)


ARCHS = ("distillscape.models.MLP", "distillscape.models.LeNet",
         "distillscape.models.SimpleConvNet", "distillscape.models.ConvNet")

SECTIONS = {"dataset": DatasetSchema, "distill": DistillSchema, "direct": DirectSchema,
            "baseline": BaselineSchema}


def _check_section(name: str, node: Any, schema: type) -> None:
    if not isinstance(node, (dict, DictConfig)):
        raise ConfigError(f"{name} must be a mapping, got {node!r}")
    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    known = {f.name for f in fields(schema)}
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" Did you mean {name}.{close[0]}?" if close else ""
            raise ConfigError(f"unknown key {name}.{key}.{hint} Known keys: {', '.join(sorted(known))}")
    try:
        OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), data))
    except ConfigError:
        raise
    except OmegaConfBaseException as e:  # wrong type: OmegaConf names the key in full_key
        key = getattr(e, "full_key", None) or "?"
        raise ConfigError(f"{name}.{key}: {str(e).splitlines()[0]}") from None


def validate(cfg: DictConfig) -> DictConfig:
    """Check every section the config has; return it unchanged or raise ConfigError."""
    for name, schema in SECTIONS.items():
        if name in cfg:
            _check_section(name, cfg[name], schema)
    if "arch" in cfg:
        _choice("arch._target_", cfg.arch.get("_target_"), ARCHS)
    if "seed" in cfg and cfg.seed is not None and not isinstance(cfg.seed, int):
        raise ConfigError(f"seed={cfg.seed!r} must be an integer")
    return cfg


# -- distillscape-landscape ---------------------------------------------------------------------------
SWEEP_DIRECTIONS = ("random", "through", "reference", "line")
SWEEP_COSTS = ("train", "test", "distilled", "snapshots", "random_batch", "train_subsets")


@dataclass
class SweepSchema:
    centres: Any = field(default_factory=lambda: ["minimum"])
    directions: str = "random"
    through: list = field(default_factory=lambda: ["landing", "init"])
    towards: str = "landing"
    seed: int = 0
    bias: str = "zero"
    norm: str = "zero"
    buffers: str = "freeze"
    range: Optional[list] = None
    margin: float = 0.25
    resolution: list = field(default_factory=lambda: [21, 21])
    costs: list = field(default_factory=lambda: ["train"])
    mark: list = field(default_factory=list)
    log_scale: bool = True

    def __post_init__(self):
        _choice("sweep.directions", self.directions, SWEEP_DIRECTIONS)
        _choice("sweep.bias", self.bias, ("zero", "keep"))
        _choice("sweep.norm", self.norm, ("zero", "keep"))
        _choice("sweep.buffers", self.buffers, ("freeze", "sweep"))
        for c in self.costs:
            _choice("sweep.costs entry", c, SWEEP_COSTS)
        if not self.costs:
            raise ConfigError("sweep.costs is empty; name at least one of: " + ", ".join(SWEEP_COSTS))
        if not self.centres:
            raise ConfigError("sweep.centres is empty; name minimum, landing, init or a checkpoint file")
        if any(int(n) < 2 for n in self.resolution):
            raise ConfigError(f"sweep.resolution={list(self.resolution)} needs at least 2 points per axis")
        if self.range is not None and any(len(r) != 2 or r[0] >= r[1] for r in self.range):
            raise ConfigError(f"sweep.range={list(self.range)} must be a list of [lo, hi] with lo < hi, one per axis")
        _at_least("sweep.margin", self.margin, 0.0)


@dataclass
class LandscapeSchema:
    out_dir: str = "."
    minimum: Optional[str] = None
    init_seed: int = 0
    batching: str = "auto"
    points_per_batch: int = 16
    data_batch: int = 4096
    train_subsample: Optional[int] = None
    subset_sizes: list = field(default_factory=list)
    subset_seed: int = 0
    random_batch_seed: int = 0

    def __post_init__(self):
        _choice("landscape.batching", self.batching, ("auto", "vmap", "loop", "channels_last"))
        _at_least("landscape.points_per_batch", self.points_per_batch, 1)
        _at_least("landscape.data_batch", self.data_batch, 1)
        _at_least("landscape.train_subsample", self.train_subsample, 1)
        if any(n < 1 for n in self.subset_sizes):
            raise ConfigError(f"landscape.subset_sizes={list(self.subset_sizes)} must be positive sizes")


SECTIONS.update({"sweep": SweepSchema, "landscape": LandscapeSchema})


LANDING_KINDS = ("distilled", "random_real", "random_synthetic")


@dataclass
class LandingSchema:
    kinds: list = field(default_factory=lambda: list(LANDING_KINDS))
    inits: int = 100
    init_seed: int = 2_000_000
    seed: int = 0
    train_examples: Optional[int] = 2000
    test_examples: Optional[int] = None
    polish_inits: int = 20
    polish_steps: int = 200
    polish_lr: float = 0.01
    polish_momentum: float = 0.9
    polish_batch_size: int = 128
    curvature_inits: int = 10
    curvature_examples: Optional[int] = 1000
    power_iters: int = 100
    power_tol: float = 1e-4
    hutchinson_probes: int = 20
    barrier_points: int = 11
    trajectory_inits: int = 5
    trajectory_steps: list = field(default_factory=lambda: [1, 2, 5, 10, 20, 50, 100, 200, 500])
    data_chunk: int = 1000
    init_chunk: Optional[int] = None
    device: str = "cpu"

    def __post_init__(self):
        for k in self.kinds:
            _choice("analysis.kinds entry", k, LANDING_KINDS)
        for k in ("inits", "power_iters", "hutchinson_probes", "polish_batch_size", "data_chunk"):
            _at_least(f"analysis.{k}", getattr(self, k), 1)
        for k in ("polish_inits", "polish_steps", "curvature_inits", "trajectory_inits"):
            _at_least(f"analysis.{k}", getattr(self, k), 0)
        for k in ("train_examples", "test_examples", "curvature_examples", "init_chunk"):
            _at_least(f"analysis.{k}", getattr(self, k), 1)
        _at_least("analysis.barrier_points", self.barrier_points, 2)
        if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in self.trajectory_steps):
            raise ConfigError(f"analysis.trajectory_steps={list(self.trajectory_steps)}: give non-negative integers "
                              f"(direct-training steps at which the landing is compared), e.g. [1,10,100]")
        _at_least("analysis.polish_lr", self.polish_lr, 0.0, strict=True)
        _at_least("analysis.polish_momentum", self.polish_momentum, 0.0)
        _at_least("analysis.power_tol", self.power_tol, 0.0)
        _choice("analysis.device", self.device, ("cpu", "cuda"))


SECTIONS["analysis"] = LandingSchema


@dataclass
class InstancesSchema:
    direct_minimum: Optional[str] = None
    data_dir: Optional[str] = None
    neighbours: int = 5
    models: int = 25
    init_seed: int = 3_000_000
    compare_seed: int = 0
    per_page: int = 20
    test_limit: Optional[int] = None

    def __post_init__(self):
        for k in ("neighbours", "models", "per_page"):
            _at_least(f"instances.{k}", getattr(self, k), 1)
        _at_least("instances.test_limit", self.test_limit, 1)


@dataclass
class ReportSchema:
    title: str = "distillscape study"
    file: str = "report.html"
    max_figures: int = 80

    def __post_init__(self):
        _at_least("report.max_figures", self.max_figures, 0)
        if not self.file.endswith(".html") or "/" in self.file:
            raise ConfigError(f"report.file={self.file!r} must be a file name ending in .html")


STUDY_TASKS = ("distill", "landscape", "landing", "instances", "report")


@dataclass
class StudySchema:
    dataset: str = "digits"
    arch: str = "simple_convnet"
    logger: str = "none"
    force: bool = False
    tasks: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        _choice("study.dataset", self.dataset, DATASETS)
        for stage, task in self.tasks.items():
            _choice(f"study.tasks.{stage}", task, STUDY_TASKS)
            if stage not in self.stages:
                raise ConfigError(f"study.tasks.{stage} names a task for a stage that study.stages does not have; "
                                  f"add study.stages.{stage}=[...] or drop it")
        for name, table in (("stages", self.stages), ("overrides", self.overrides)):
            for stage, ovs in table.items():
                if not isinstance(ovs, (list, tuple)) or not all(isinstance(o, str) for o in ovs):
                    raise ConfigError(f"study.{name}.{stage} must be a list of override strings, got {ovs!r}")


SECTIONS.update({"instances": InstancesSchema, "report": ReportSchema, "study": StudySchema})
