"""Where and how a job runs: trainer/ (Lightning Trainer arguments), logger/, paths/."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, List, Optional

from ..errors import ConfigError
from .checks import _at_least, _choice
from .names import ACCELERATORS


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


@dataclass
class PathsConfig:
    data_dir: str = "${oc.env:DISTILLSCAPE_DATA,./data}"   # $DISTILLSCAPE_DATA if set, else ./data
    output_dir: str = "${hydra:runtime.output_dir}"        # Hydra's output directory of the job
