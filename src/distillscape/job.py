"""One job: what a task's Hydra entry composed, as the one typed object every function below the task takes.

A console script composes a DictConfig; the task's plain function (`distill(cfg)`, `landscape(cfg)`, ...) turns it
into a `Job` at once (`Job.of(cfg)`, which checks every value: `config.settings`) and hands that on. Below the
task nothing reads the DictConfig: the typed settings answer what to do, `out` where, and `config` (the resolved
config as plain data) is kept only as the job's record and identity: what complete.json's fingerprint, the
directory's config_resolved.yaml, the artifacts' `config` and W&B's run config hold, byte for byte as before."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .config import settings as typed_settings


def task_overrides() -> tuple[str, ...]:
    """The command line's overrides of the running Hydra job (none outside a Hydra app: tests, scripts)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return ()
    return tuple(HydraConfig.get().overrides.task)


@dataclass(frozen=True)
class Job:
    """task: the task's name (`task_name`); settings: its typed, checked settings (config.JOBS[task], e.g. a
    DistillJob); out: its output directory; config: the resolved config without Hydra's node (read it through
    `resolved`, a copy); overrides: the command line's, as recorded beside the outputs; composed: as Hydra records it."""
    task: str
    settings: Any
    out: Path
    config: dict = field(repr=False)
    overrides: tuple[str, ...] = ()
    composed: str = field(default="", repr=False)  # the composed config as YAML, unresolved: .hydra/config.yaml

    @classmethod
    def of(cls, cfg: DictConfig, out: Path | None = None) -> Job:
        """The job of a composed config: its settings checked (ConfigError naming the key), its output directory
        `out` or the config's paths.output_dir."""
        s = typed_settings(cfg)
        config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
        config.pop("hydra", None)
        return cls(task=str(cfg.get("task_name")), settings=s, out=Path(out if out is not None else s.paths.output_dir),
                   config=config, overrides=task_overrides(), composed=OmegaConf.to_yaml(cfg))

    def at(self, out: Path) -> Job:
        """The same job writing into `out`."""
        return dataclasses.replace(self, out=Path(out))

    def resolved(self, *keys: str) -> Any:
        """A copy of the resolved config, or of the section at `keys` (`resolved("arch")`): what records hold."""
        node: Any = self.config
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        return copy.deepcopy(node)

    @property
    def skip_complete(self) -> bool:
        return bool(getattr(self.settings, "skip_complete", True))

    def trainer_arguments(self, **overrides) -> dict:
        """Lightning Trainer's arguments: the typed trainer settings and the extra ones given with
        +trainer.<arg>=... (which the schema does not list, so only the resolved config has them)."""
        typed = dataclasses.asdict(self.settings.trainer)
        extra = {k: v for k, v in (self.config.get("trainer") or {}).items() if k not in typed}
        return {**typed, **extra, **overrides}
