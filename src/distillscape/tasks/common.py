"""What every `distillscape-<task>` Hydra app shares: where the configs live, building the data,
the network, the trainer and the logger from config, and turning known failures into one clear line.

Each task module has a plain function `<task>(cfg) -> result` (what the study and the tests call) and a
thin Hydra `main` that wraps it with `task`: check the config first, then one line per known failure."""
from __future__ import annotations

import functools
import logging
import os
import resource
import sys
from pathlib import Path
from typing import Callable

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from ..data import TensorDataModule
from ..errors import KNOWN_ERRORS, ConfigError
from . import progress


def _conf_dir() -> str:
    env = os.environ.get("DISTILLSCAPE_CONF_DIR")
    if env:
        return str(Path(env).resolve())
    here = Path(__file__).resolve()
    for cand in (here.parents[3] / "conf", here.parents[1] / "conf"):  # source checkout, packaged copy
        if cand.is_dir():
            return str(cand)
    raise RuntimeError("distillscape cannot find its conf/ directory; set DISTILLSCAPE_CONF_DIR")


CONF_DIR = _conf_dir()


class _Console(Console):
    # joblib and submitit ship a task function to workers with cloudpickle, by value, globals included:
    # a Console holds locks, so it travels as a reference to this module's console instead
    def __reduce__(self):
        return (_the_console, ())

    def print(self, *objects, **kwargs) -> None:
        """Print with rich, and log the same as plain text (Hydra's job log, tasks/progress.py)."""
        super().print(*objects, **kwargs)
        if progress.log.isEnabledFor(logging.INFO):
            progress.log.info(progress.plain_text(*objects))


def _the_console() -> Console:
    return console


console = _Console(stderr=False, highlight=False)

# exit status of a job stopped by SIGTERM, as a shell reports a process killed by it (128 + 15)
SIGTERM_EXIT = 143


def task(fn: Callable[[DictConfig], object]) -> Callable[[DictConfig], object]:
    """Wrap a task's plain function (which checks its config first: `config.settings`): print known
    errors as one line and exit 2, and report a stop by SIGTERM (SLURM's scancel, a time limit) as one
    line and exit 143."""
    @functools.wraps(fn)
    def wrapper(cfg: DictConfig):
        progress.quiet_libraries()
        try:
            return fn(cfg)
        except KNOWN_ERRORS as e:
            print(f"distillscape: {type(e).__name__}: {e}", file=sys.stderr)
            progress.log.error(f"{type(e).__name__}: {e}")
            sys.exit(2)
        except SIGTERMException:
            # Lightning turns SIGTERM into this SystemExit between steps; bare, it would exit with 0
            print("distillscape: stopped by SIGTERM. What was finished is kept (checkpoints/last.ckpt of a "
                  "distillation, finished landscape shards, finished study stages): rerun the same command "
                  "to go on (a distillation with ckpt_path=last)", file=sys.stderr)
            sys.exit(SIGTERM_EXIT)
    return wrapper


def compose_task(config_name: str, overrides: list[str]) -> DictConfig:
    """conf/<config_name>.yaml with overrides, as the task's command line would compose it, inside a
    running Hydra app (the study) or outside one (tests, scripts). A value of the wrong type (Hydra
    refuses it while composing) is a ConfigError naming the key."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException

    try:
        if GlobalHydra.instance().is_initialized():
            return compose(config_name=config_name, overrides=list(overrides))
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose(config_name=config_name, overrides=list(overrides))
    except ConfigCompositionException as e:
        cause = e.__cause__ or e
        key = getattr(cause, "full_key", None)
        detail = str(cause).splitlines()[0]
        raise ConfigError(f"{key + ': ' if key else ''}{str(e).splitlines()[0]}: {detail}") from None


def output_dir(cfg: DictConfig) -> Path:
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def build_datamodule(cfg: DictConfig) -> TensorDataModule:
    """The config's dataset, set up (every split in memory)."""
    dm = instantiate(cfg.dataset)
    dm.setup()
    return dm


def build_net(cfg: DictConfig, dm: TensorDataModule):
    c, h, w = dm.image_shape
    return instantiate(cfg.arch)(in_channels=c, height=h, width=w, num_classes=dm.num_classes)


def build_logger(cfg: DictConfig):
    if not cfg.get("logger"):
        return False
    if str(cfg.logger.get("_target_", "")).endswith("WandbLogger"):
        from ..tracking import wandb_logger  # offline unless a key is configured, sweep group, override tags
        return wandb_logger(cfg)
    return instantiate(cfg.logger)


def build_trainer(cfg: DictConfig, logger=None, **overrides) -> L.Trainer:
    """The config's Trainer; its progress shown as tasks/progress.py says (one bar over all steps in a
    terminal, a line every N steps elsewhere)."""
    shown, bar = progress.progress_callbacks(bool(overrides.pop("enable_progress_bar", cfg.trainer.get("enable_progress_bar", True))))
    callbacks = [*overrides.pop("callbacks", []), *shown]
    return instantiate(cfg.trainer, logger=build_logger(cfg) if logger is None else logger, callbacks=callbacks,
                       enable_progress_bar=bar, **overrides)


def resolved(cfg: DictConfig) -> dict:
    """The config as plain data, for artifacts (hydra's own node left out)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def peak_memory(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process so far (Linux reports KiB) and, on a GPU, peak allocated
    GPU memory, in MiB. Kept out of the task functions: joblib's launcher pickles those by value, and
    with `torch.cuda` read in `main` itself that failed ("cannot pickle '_Classes' object")."""
    out = {"train/peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["train/peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out
