"""The analyses' and the other tasks' own keys: sweep/ and landscape (distillscape-landscape), analysis/
(distillscape-landing), instances, report, study."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..errors import ConfigError
from .arch import ARCH_SCHEMAS, IMAGE_ARCHS
from .checks import _at_least, _at_most, _choice, _count, _precision, _rate, _seed
from .names import (DATASETS, EARLY_PARTS, EVAL_PATHS, EVAL_PROTOCOLS, HESSIAN_PAIRS, LANDING_CURVES, LANDING_KINDS,
                    LANDSCAPE_BATCHINGS, MAX_MODELS, METHODS, RANGE_UNITS, STUDY_TASKS, SWEEP_COSTS, SWEEP_DIRECTIONS)
from .runtime import LOGGER_SCHEMAS


@dataclass
class SweepConfig:
    """A plane of two random filter-normalized directions (Li et al. 2018) around each centre,
    coordinates in [-1, 1] as in the reference study; the other sweep/ files change the directions."""
    centres: Any = field(default_factory=lambda: ["minimum"])  # minimum | landing | init | a checkpoint file; several: one surface each, same directions
    directions: str = "random"         # random | through | reference | line | hessian | trajectory_pca
    hessian_pair: str = "top_bottom"   # directions=hessian: eigenvectors at the first centre: top_bottom | top2 | bottom2
    hessian_examples: Optional[int] = None  # ... of the true task's Hessian on the training split (null: all of it) or a fixed random subsample
    lanczos_steps: int = 40            # ... Lanczos iterations (Hessian-vector products) finding them
    trajectory: List[str] = field(default_factory=lambda: ["snapshots", "landing"])  # directions=trajectory_pca: its points, in order: snapshots (the landings along the distillation's snapshots) | direct (direct training's saved snapshots) | a point name | a checkpoint file
    range_unit: str = "coordinate"     # coordinate: sweep.range in the directions' units | step: in step lengths ||landing - init|| of parameter distance along each direction
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
        _choice("sweep.hessian_pair", self.hessian_pair, HESSIAN_PAIRS)
        _choice("sweep.range_unit", self.range_unit, RANGE_UNITS)
        _at_least("sweep.lanczos_steps", self.lanczos_steps, 4)
        if self.hessian_examples is not None:
            _at_least("sweep.hessian_examples", self.hessian_examples, 1)
        if self.directions == "trajectory_pca" and not self.trajectory:
            raise ConfigError("sweep.trajectory is empty; name its points, e.g. sweep.trajectory=[snapshots] "
                              "(the landings along the distillation's snapshots) or [direct]")
        if self.range_unit == "step" and self.range is None:
            raise ConfigError("sweep.range_unit=step scales sweep.range, which is null: give sweep.range in step "
                              "lengths, e.g. sweep.range=[[-3,3],[-3,3]]")
        _precision("sweep", self.precision, self.precision_tolerance, "precision_points", self.precision_points)
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
    experience_steps: int = 2048       # costs ppo_loss(_reference): samples of the static experience set (the centre's / the reference policy's)
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
    # one basin or two (distillscape.basins): a curved path landing -> direct minimum trained on the true task,
    # its barrier beside the straight line's; off by default (a training run per landing)
    curve: str = "none"                # none | bezier (quadratic Bezier) | polychain (one bend)
    curve_inits: int = 10              # distilled landings given a curve: the first ones
    curve_steps: int = 500             # SGD steps on the middle point (polish_batch_size, polish_momentum)
    curve_lr: float = 0.05
    curve_points: int = 21             # the t grid the paths are evaluated at (ends included)
    trajectory_inits: int = 5          # inits trained directly on real data (polish optimizer), to compare landings with
    trajectory_steps: List[int] = field(default_factory=lambda: [1, 2, 5, 10, 20, 50, 100, 200, 500])  # (0, the init, is always added)
    data_chunk: int = 1000             # examples per forward
    init_chunk: Optional[int] = None   # models per vmapped forward (lower it if memory runs out)
    device: str = "cpu"                # cpu | cuda
    # true-task loss / accuracy / predictions of the stacks (not gradients, curvature or polish): fp32 | bf16
    # (bfloat16 forwards, float32 loss sums), checked against fp32 on the first precision_inits inits and landings
    precision: str = "fp32"
    precision_tolerance: float = 1e-2  # bf16: largest relative loss (absolute accuracy) difference per model that passes
    precision_inits: int = 8
    eval_path: str = "auto"            # how the stacks' forwards run: vmap | channels_last | auto (inner.eval_path_rule)
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
        _precision("analysis", self.precision, self.precision_tolerance, "precision_inits", self.precision_inits)
        _choice("analysis.eval_path", self.eval_path, EVAL_PATHS)
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
        _choice("analysis.curve", self.curve, LANDING_CURVES)
        _count("analysis.curve_inits", self.curve_inits)
        _at_least("analysis.curve_steps", self.curve_steps, 0)
        _rate("analysis.curve_lr", self.curve_lr)
        _at_least("analysis.curve_points", self.curve_points, 3)  # an inner point: a path's height between its ends
        _at_most("analysis.curve_points", self.curve_points, 10_000, "each point is a full evaluation")
        if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in self.trajectory_steps):
            raise ConfigError(f"analysis.trajectory_steps={list(self.trajectory_steps)}: give non-negative integers "
                              f"(direct-training steps at which the landing is compared), e.g. [1,10,100]")
        _rate("analysis.polish_lr", self.polish_lr)
        _at_least("analysis.polish_momentum", self.polish_momentum, 0.0)
        _at_least("analysis.power_tol", self.power_tol, 0.0)
        _seed("analysis.init_seed", self.init_seed)
        _seed("analysis.seed", self.seed)
        _choice("analysis.device", self.device, ("cpu", "cuda"))


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
