"""Every setting of distillscape, written once: one dataclass per config group (and one per task's own
keys), registered in Hydra's ConfigStore (on import: `jobs.register`).

Each YAML file of a group extends its schema (`defaults: [schema, _self_]`) and states only what it
changes, so a default lives here and nowhere else. Hydra and OmegaConf check types while composing
(`distill.steps=many` is refused there); what they cannot know, the ranges and allowed values, each
schema checks in `__post_init__`, which runs when a task turns its config into typed settings
(`settings(cfg)`: `OmegaConf.to_object`). `validate` runs that check over a whole composed config and
turns any failure into one `ConfigError` line that names the key and what is allowed.

Values a module needs to know are allowed (datasets, inner losses, init schemes) are defined here, so
that the lower layers import them from one place and this package imports nothing of distillscape but
its errors.

The modules:
  names     allowed values and limits (DATASETS, ENVS, SWEEP_COSTS, MAX_MODELS, ...)
  checks    the range checks the schemas run (one ConfigError line each)
  data      dataset/, env/          arch      arch/ (one schema per network)
  training  distill/ (and its methods), direct/, baseline/, rl/
  runtime   trainer/, logger/, paths/
  analyses  sweep/, landscape, analysis/ (landing), instances, report, study
  jobs      one schema per task (conf/<task>.yaml's root), GROUPS, JOBS, ConfigStore registration
  convert   composed config -> typed settings: settings(cfg), section, as_settings, validate
"""
from ..errors import ConfigError
from .analyses import InstancesConfig, LandingConfig, LandscapeConfig, ReportConfig, StudyConfig, SweepConfig
from .arch import (ARCHS, ARCH_SCHEMAS, IMAGE_ARCHS, POLICY_ARCHS, AtariActorConfig, ConvNetConfig, LeNetConfig,
                   MLPConfig, PolicyMLPConfig, SimpleConvNetConfig)
from .convert import OPEN_SECTIONS, as_settings, section, settings, validate
from .data import DATA_IDENTITY, DatasetConfig, EnvConfig
from .jobs import (GROUPS, JOBS, DistillJob, InstancesJob, Job, LandingJob, LandscapeJob, ReportJob, StudyJob,
                   TrainJob, register)
from .names import (ACCELERATORS, BATCHINGS, DATASETS, DATASET_COSTS, EARLY_PARTS, ENVS, EVAL_ACTIONS, EVAL_PATHS, EVAL_PROTOCOLS,
                    IMAGE_INITS, INIT_MODES, INIT_SCHEMES, INNER_LOSSES, LABEL_MODES, LANDING_KINDS,
                    LANDSCAPE_BATCHINGS, MAX_MODELS, MAX_SEED, METHODS, PRECISIONS, RL_COSTS, RL_ESTIMATORS, STUDY_TASKS,
                    SWEEP_COSTS, SWEEP_DIRECTIONS)
from .runtime import (LOGGER_SCHEMAS, CSVLoggerConfig, PathsConfig, TensorBoardLoggerConfig, TrainerConfig,
                      WandbLoggerConfig)
from .training import (BaselineConfig, DMConfig, DirectConfig, DistillConfig, DistillOptimConfig, EvalConfig, GMConfig,
                       ImportConfig, MTTConfig, PPOConfig, RLConfig)

__all__ = [
    "ACCELERATORS", "ARCHS", "ARCH_SCHEMAS", "AtariActorConfig", "BATCHINGS", "BaselineConfig", "CSVLoggerConfig",
    "ConfigError", "ConvNetConfig", "DATASETS", "DATASET_COSTS", "DATA_IDENTITY", "DMConfig", "DatasetConfig",
    "DirectConfig", "DistillConfig", "DistillJob", "DistillOptimConfig", "EARLY_PARTS", "ENVS", "EVAL_ACTIONS",
    "EVAL_PATHS", "EVAL_PROTOCOLS", "EnvConfig", "EvalConfig", "GMConfig", "GROUPS", "IMAGE_ARCHS", "IMAGE_INITS", "INIT_MODES",
    "INIT_SCHEMES", "INNER_LOSSES", "ImportConfig", "InstancesConfig", "InstancesJob", "JOBS", "Job", "LABEL_MODES",
    "LANDING_KINDS", "LANDSCAPE_BATCHINGS", "LOGGER_SCHEMAS", "LandingConfig", "LandingJob", "LandscapeConfig",
    "LandscapeJob", "LeNetConfig", "MAX_MODELS", "MAX_SEED", "METHODS", "MLPConfig", "MTTConfig", "OPEN_SECTIONS",
    "POLICY_ARCHS", "PPOConfig", "PRECISIONS", "PathsConfig", "PolicyMLPConfig", "RLConfig", "RL_COSTS", "RL_ESTIMATORS",
    "ReportConfig", "ReportJob", "STUDY_TASKS", "SWEEP_COSTS", "SWEEP_DIRECTIONS", "SimpleConvNetConfig",
    "StudyConfig", "StudyJob", "SweepConfig", "TensorBoardLoggerConfig", "TrainJob", "TrainerConfig",
    "WandbLoggerConfig", "as_settings", "register", "section", "settings", "validate",
]
