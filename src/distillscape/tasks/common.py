"""What the tasks share below the command line (tasks/cli.py): the console, starting a job in its output
directory, building the data, the trainer and the logger from a job's settings, and the memory probes that
refuse a job too big for the machine before anything is allocated.

Every function here takes the typed `Job` (distillscape.job) or its parts, never the composed config."""
from __future__ import annotations

import resource
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape

from ..artifacts import atomic_write, remove_temporaries
from ..data import TensorDataModule
from ..errors import ConfigError
from ..job import Job
from ..models import build_net
from ..resume import check_owner, claim, write_job_config
from . import progress
from .cli import rank
from .cli import CONF_DIR, compose_task, task  # noqa: F401  (where tests and scripts found them before tasks/cli.py)


class _Console(Console):
    # joblib and submitit ship a task function to workers with cloudpickle, by value, globals included:
    # a Console holds locks, so it travels as a reference to this module's console instead
    def __reduce__(self):
        return (_the_console, ())

    def print(self, *objects, **kwargs) -> None:
        """Print with rich, and log the same as plain text (Hydra's job log, tasks/progress.py)."""
        if progress.soft_wrap(objects):
            kwargs.setdefault("soft_wrap", True)
        super().print(*objects, **kwargs)
        progress.said()
        if progress.recording:
            progress.record(progress.plain_text(*objects, markup=kwargs.get("markup") is not False))


def _the_console() -> Console:
    return console


console = _Console(stderr=False, highlight=False, **progress.console_options())
# every process that runs a task imports this module before Hydra composes its config: the console script,
# and a joblib worker unpickling its task; Hydra's and the libraries' notes a user cannot act on are dropped
# from the start (`task` drops them again, a test's warning filters being reset in between)
progress.quiet_libraries()

def start_job(job: Job, out: Path | None = None, exclusive: bool = True) -> Path:
    """The job's output directory (`out`, else its own), claimed for this process and with the job's record
    written (Hydra's `.hydra/` files and config_resolved.yaml). Called only once the config is checked and nothing
    refuses the run: a refused or invalid run leaves an existing directory exactly as it was (Hydra's own early
    write of `.hydra/` is switched off in conf/hydra/default.yaml for this reason). The processes a
    multi-device run starts beside rank 0 neither claim nor record. `exclusive=False`: jobs that share the
    directory by design (landscape shards: each claims its own shard instead). A directory holding another
    job's records is refused here at the latest (`check_owner`; the tasks check it before their work)."""
    out = job.out if out is None else Path(out)
    check_owner(job, out)
    if rank() > 0:
        return out
    out.mkdir(parents=True, exist_ok=True)
    if exclusive:
        claim(out)
        remove_temporaries(out)  # half-written files of a killed run of this directory
    write_hydra_record(job, out)
    write_job_config(job, out)
    progress.recording = True  # from here on the job log holds our messages
    return out


def write_hydra_record(job: Job, out: Path) -> None:
    """What Hydra's run_job writes to `<output_subdir>/` before the task starts (config, hydra config,
    overrides), written here after the checks instead; nothing when not run from a Hydra app."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    app_out = OmegaConf.select(hc, "runtime.output_dir", default=None, throw_on_missing=False)
    if app_out is None or Path(app_out).resolve() != out.resolve():  # a study's stage: the study records it
        return
    record = {"config.yaml": job.composed, "hydra.yaml": OmegaConf.to_yaml({"hydra": hc}),
              "overrides.yaml": OmegaConf.to_yaml(list(hc.overrides.task))}
    for name, text in record.items():
        atomic_write(out / ".hydra" / name, lambda tmp, text=text: Path(tmp).write_text(text))


def job_of(cfg: DictConfig, needed: dict[str, str] | None = None) -> Job:
    """The typed job of a task's composed config (every value checked); first, each of the task's `needed` keys
    left unset (??? or empty) is refused with its own line (what to give), which says more than a missing value's."""
    for key, line in (needed or {}).items():
        if OmegaConf.is_missing(cfg, key) or not cfg.get(key):
            raise ConfigError(line)
    return Job.of(cfg)


def build_datamodule(dataset) -> TensorDataModule:
    """The dataset of a job's settings (`settings.dataset`), set up (every split in memory)."""
    dm = instantiate(dataset)
    dm.setup()
    return dm


def _target(logger) -> str:
    """A logger's settings' `_target_` (a schema instance, or a mapping), "" for none."""
    if not logger:
        return ""
    return str(logger.get("_target_", "") if hasattr(logger, "get") else getattr(logger, "_target_", ""))


def check_logger(logger) -> None:
    """W&B online (an API key configured, or logger.offline=false) with no way to its server: one line now, not
    wandb's own error minutes into the job. `logger`: the job's logger settings (or the composed config's node)."""
    if not _target(logger).endswith("WandbLogger"):
        return
    from ..tracking import offline_mode, server_unreachable

    offline = logger.get("offline") if hasattr(logger, "get") else logger.offline
    if offline_mode(offline) or (why := server_unreachable()) is None:
        return
    because = "logger.offline=false" if offline is False else "an API key is configured"
    raise ConfigError(f"logger=wandb runs online here ({because}), but the W&B server {why}: run "
                      f"offline with logger.offline=true (or WANDB_MODE=offline) and upload later with "
                      f"`wandb sync <output dir>/wandb/offline-run-*`")


def build_logger(job: Job):
    """The job's logger (`settings.logger`), False for none."""
    logger = job.settings.logger
    if not _target(logger):
        return False
    if _target(logger).endswith("WandbLogger"):
        from ..tracking import wandb_logger  # offline unless a key is configured, sweep group, override tags
        return wandb_logger(logger, job.resolved())
    return instantiate(logger)


def build_trainer(job: Job, logger=None, **overrides) -> L.Trainer:
    """The job's Trainer; its progress shown as tasks/progress.py says (one bar over all steps in a
    terminal, a line every N steps elsewhere). `logger`: None for the job's, False for none, or a logger."""
    shown, bar = progress.progress_callbacks(bool(overrides.pop("enable_progress_bar",
                                                                 job.settings.trainer.enable_progress_bar)))
    callbacks = [*overrides.pop("callbacks", []), *shown]
    return instantiate(job.trainer_arguments(), logger=build_logger(job) if logger is None else logger,
                       callbacks=callbacks, enable_progress_bar=bar, **overrides)


def available_memory() -> int:
    """Bytes this process may still allocate: the kernel's MemAvailable, or less where a cgroup (a SLURM
    job, a container) limits the process."""
    avail = None
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    for limit, used in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            room = int(Path(limit).read_text().split()[0]) - int(Path(used).read_text().split()[0])
        except (OSError, ValueError):  # no such cgroup file, or "max"
            continue
        avail = room if avail is None else min(avail, room)
    return avail if avail is not None else 1 << 62


def memory_line(parts: dict[str, int], available: int, where: str) -> str:
    total = sum(parts.values())
    detail = ", ".join(f"{k.replace('_', ' ')} {v / 2**30:.2f}" for k, v in parts.items())
    return f"needs about {total / 2**30:.1f} GiB ({detail}) and {where} has {available / 2**30:.1f} GiB available"


RUNTIME_BYTES = 1 << 30  # Python, torch and Lightning themselves, before any tensor


def check_fits(what: str, parts: dict[str, int], knobs: str, device: str = "cpu") -> None:
    """Refuse a job whose estimated peak (`parts`, bytes) exceeds the memory available, before anything is
    allocated; warn when it takes over half of it. `knobs`: the settings that lower it. On a GPU the
    dataset and the runtime stay in host memory and are left out."""
    if device in ("gpu", "cuda") and torch.cuda.is_available():
        parts = {k: v for k, v in parts.items() if k not in ("runtime", "dataset")}
        available, where = torch.cuda.mem_get_info()[0], "the GPU"
    else:
        available, where = available_memory(), "this machine"
    total = sum(parts.values())
    if total > available:
        raise ConfigError(f"{what} {memory_line(parts, available, where)}: {knobs}")
    if total > available / 2:
        console.print(f"[bold]distillscape: warning:[/bold] {what} {memory_line(parts, available, where)}; "
                      f"it may not fit beside other work ({knobs})")


def model_sizes(net, image_shape) -> tuple[int, int]:
    """(parameters, floats one example leaves in a forward) of a network: what memory estimates scale."""
    from ..models import activations_per_example

    return (sum(p.numel() for p in net.parameters()),
            activations_per_example(net, torch.zeros(1, *image_shape)))


def dataset_bytes(name: str) -> int:
    """A dataset in memory as every task holds it: raw and normalized float32 copies of every image."""
    from ..data import SHAPES

    n, c, h, w, _ = SHAPES[name]
    return 2 * n * c * h * w * 4


def peak_memory(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process so far (Linux reports KiB) and, on a GPU, peak allocated
    GPU memory, in MiB. Kept out of the task functions: joblib's launcher pickles those by value, and
    with `torch.cuda` read in `main` itself that failed ("cannot pickle '_Classes' object")."""
    out = {"train/peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["train/peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def build_policy(job: Job, obs_shape: tuple[int, ...], num_actions: int):
    """The job's policy network (arch=policy_mlp | atari_actor) for an environment's observation shape
    and action count; an image classifier is refused in one line."""
    from ..config import POLICY_ARCHS

    s = job.settings
    if s.arch._target_ not in POLICY_ARCHS:
        raise ConfigError(f"arch {s.arch._target_} is an image classifier; an RL task (env={s.env.name}) "
                          f"needs a policy network: arch=policy_mlp (flat observations) or arch=atari_actor (frames)")
    return build_net(s.arch, obs_shape, num_actions)


def certificate_line(precision: str, sample: str, worst: float, tolerance: float, passed: bool, where: str,
                     results: str, fp32_command: str) -> str:
    """The console line of a bf16 error certificate: how far `sample` was from fp32 against the tolerance, and
    where it is recorded; when it failed, a warning that names the command computing `results` in fp32."""
    line = f"{precision} against fp32 on {sample}: largest difference {worst:.2e}, tolerance {tolerance:g}"
    if passed:
        return f"{line}: passed ({where})"
    return "[bold]distillscape: warning:[/bold] " + escape(
        f"{line}: FAILED ({where}); {results} are not to be trusted to that tolerance: compute them in fp32 with "
        f"`{fp32_command}`")
