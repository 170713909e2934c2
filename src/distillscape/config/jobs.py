"""One schema per task (the root of conf/<task>.yaml), the group schemas by group, and their
registration in Hydra's ConfigStore (`register`, run when the package is imported)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from ..errors import ConfigError
from .analyses import InstancesConfig, LandingConfig, LandscapeConfig, ReportConfig, StudyConfig, SweepConfig
from .arch import ARCH_SCHEMAS
from .checks import _at_least, _at_most, _seed
from .data import DatasetConfig, EnvConfig
from .runtime import LOGGER_SCHEMAS, PathsConfig, TrainerConfig
from .training import BaselineConfig, DirectConfig, DistillConfig, RLConfig


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
