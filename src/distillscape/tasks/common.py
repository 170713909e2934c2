"""What every `distillscape-<task>` Hydra app shares: where the configs live, building the data,
the network, the trainer and the logger from config, and turning known failures into one clear line.

Each task module has a plain function `<task>(cfg) -> result` (what the study and the tests call) and a
thin Hydra `main` that wraps it with `task`: check the config first, then one line per known failure."""
from __future__ import annotations

import dataclasses
import difflib
import errno
import functools
import logging
import os
import re
import resource
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Callable

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape

from ..artifacts import atomic_write, remove_temporaries
from ..data import TensorDataModule
from ..errors import KNOWN_ERRORS, ConfigError
from ..resume import check_owner, claim, release_claims, write_job_config
from . import progress
from .submission import refuse_here, refused_here


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


def verbose() -> bool:
    """--verbose on a console script's command line, or HYDRA_FULL_ERROR=1 set by the user: tracebacks beside
    the one-line errors. (`console_script` sets HYDRA_FULL_ERROR=1 itself, so the user's wish travels in
    DISTILLSCAPE_VERBOSE, to the processes a run starts too.)"""
    return os.environ.get("DISTILLSCAPE_VERBOSE", os.environ.get("HYDRA_FULL_ERROR", "0")) == "1"


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
            progress.record(progress.plain_text(*objects))


def _the_console() -> Console:
    return console


console = _Console(stderr=False, highlight=False, **progress.console_options())
# every process that runs a task imports this module before Hydra composes its config: the console script,
# and a joblib worker unpickling its task; Hydra's and the libraries' notes a user cannot act on are dropped
# from the start (`task` drops them again, a test's warning filters being reset in between)
progress.quiet_libraries()

# exit statuses of a job stopped by a signal, as a shell reports a process killed by it (128 + signal)
SIGTERM_EXIT = 143
SIGINT_EXIT = 130
KEPT = ("What was finished is kept (checkpoints/last.ckpt of a distillation, finished landscape shards, "
        "landing parts and study stages): rerun the same command to go on (a distillation with ckpt_path=last)")
# errno values that mean "this place cannot be written", whatever the file
WRITE_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def fail(line: str, code: int = 2) -> None:
    """End the process with one line on stderr; the traceback too with --verbose or HYDRA_FULL_ERROR=1."""
    if verbose() and sys.exc_info()[0] is not None:
        traceback.print_exc()
    print(f"distillscape: {line}", file=sys.stderr)
    progress.record(line, logging.ERROR)  # the job log too, when the job had started
    sys.exit(code)


def write_error(e: OSError) -> str | None:
    """One line for a failed write (read-only or full disk, no permission), None for any other OSError."""
    if e.errno not in WRITE_ERRNOS:
        return None
    # a copy or a rename that failed on a full or read-only disk: the destination is the file not written
    where = getattr(e, "filename2", None) or e.filename or "the output directory"
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        advice = "free space there, or write elsewhere with hydra.run.dir=<dir> (hydra.sweep.dir=<dir> with -m)"
    else:
        advice = "make it writable, or write elsewhere with hydra.run.dir=<dir> (hydra.sweep.dir=<dir> with -m)"
    return (f"cannot write {where}: {e.strerror}. Nothing half-written is left (every file is written to a temporary "
            f"name and renamed); {advice}, then rerun the same command to go on")


class _Interrupted:
    """Ctrl-C seen during the task: Lightning catches the KeyboardInterrupt inside fit and exits 1 after its
    own shutdown, so the interrupt is remembered here to report it as one line and exit 130."""
    seen = False

    @classmethod
    def handler(cls, signum, frame):
        cls.seen = True
        raise KeyboardInterrupt


def _sigterm(signum, frame) -> None:
    """SIGTERM outside a Lightning run (reading data, a baseline, writing the artifacts, composing the config):
    the same stop as inside one. Lightning installs its own handler for fit/test/predict and calls this one
    from it; there it only sets its flag, and its loops stop between steps, so this one then does nothing."""
    if signal.getsignal(signal.SIGTERM) is _sigterm:
        raise SIGTERMException()


def _catch_sigterm() -> object:
    """Install `_sigterm` (main thread only; a signal's handler cannot be set elsewhere); the previous one."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _sigterm)


def task(fn: Callable[[DictConfig], object]) -> Callable[[DictConfig], object]:
    """Wrap a task's plain function (which checks its config first: `config.settings`): print known
    errors as one line and exit 2, report a stop by SIGTERM (SLURM's scancel, a time limit) or Ctrl-C as
    one line saying what is kept and exit 143 / 130, and let go of the run directories it claimed."""
    @functools.wraps(fn)
    def wrapper(cfg: DictConfig):
        progress.quiet_libraries()
        progress.recording = False  # until start_job: a refused run writes no job log
        previous = signal.getsignal(signal.SIGINT)
        in_main_thread = threading.current_thread() is threading.main_thread()
        _Interrupted.seen = False  # a task called again in this process starts uninterrupted
        previous_term = _catch_sigterm()
        if in_main_thread:
            signal.signal(signal.SIGINT, _Interrupted.handler)
        try:
            if (reason := refused_here()) is not None:  # its line was printed when the multirun was submitted
                console.print(f"skipped, refused at submission: {reason}")
                return None
            check_logger(cfg)
            return fn(cfg)
        except KNOWN_ERRORS as e:
            if not refuse_here(f"{type(e).__name__}: {e}"):  # a multirun's other jobs go on
                fail(f"{type(e).__name__}: {e}")
        except SIGTERMException:
            # Lightning turns SIGTERM into this SystemExit between steps; bare, it would exit with 0
            fail(f"stopped by SIGTERM. {KEPT}", SIGTERM_EXIT)
        except KeyboardInterrupt:
            fail(f"stopped by Ctrl-C. {KEPT}", SIGINT_EXIT)
        except SystemExit:
            if _Interrupted.seen:  # Lightning's exit after it caught the KeyboardInterrupt
                fail(f"stopped by Ctrl-C. {KEPT}", SIGINT_EXIT)
            raise
        except OSError as e:
            if (line := write_error(e)) is None:
                raise
            fail(line)
        except Exception as e:
            lost = getattr(torch.distributed, "DistNetworkError", ())
            if _rank() > 0 and isinstance(e, lost):  # rank 0, whose store this was, stopped; it says why
                sys.exit(SIGTERM_EXIT)
            raise
        finally:
            release_claims()
            if in_main_thread:
                signal.signal(signal.SIGINT, previous)
                if previous_term is not None:
                    signal.signal(signal.SIGTERM, previous_term)
    return wrapper


def die_with_parent() -> None:
    """In a process that a multi-device run started beside rank 0 (Lightning runs the same command again, with
    LOCAL_RANK set): end when rank 0 ends. Killed with kill -9, rank 0 tells no one, and the others waited
    for it (in the rendezvous, up to its half-hour timeout) long after the run was gone. Linux only."""
    if _rank() == 0 or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # rank 0 was gone before the line above
        os._exit(SIGTERM_EXIT)


def console_script(hydra_main: Callable[[], object], config_name: str) -> Callable[[], None]:
    """The `distillscape-<task>` entry point: the task's Hydra main, with what fails before the task starts
    (composing the config: a mistyped key, a YAML syntax error, an unknown group option; creating the output
    directory; the launcher) also told in one line, exit 2. Hydra is told to raise (HYDRA_FULL_ERROR=1)
    rather than print its own report, whose advice to prepend `+` to a mistyped key is wrong here."""
    def entry() -> None:
        args = sys.argv[1:]
        os.environ["DISTILLSCAPE_VERBOSE"] = "1" if "--verbose" in args or verbose() else "0"
        sys.argv = [sys.argv[0], *(a for a in args if a != "--verbose")]
        os.environ["HYDRA_FULL_ERROR"] = "1"
        die_with_parent()
        _catch_sigterm()
        # a job log that cannot be written (a full or read-only disk) loses its line quietly rather than
        # printing logging's own traceback beside ours: the failed write of the job's files is the one line
        raise_before, logging.raiseExceptions = logging.raiseExceptions, False
        try:
            hydra_main()
        except KeyboardInterrupt:
            fail(f"stopped by Ctrl-C. {KEPT}", SIGINT_EXIT)
        except SIGTERMException:  # while the config was composed, or the output directory made
            fail(f"stopped by SIGTERM. {KEPT}", SIGTERM_EXIT)
        except Exception as e:  # noqa: BLE001 (a bug keeps its traceback: explain returns None for it)
            line = explain(e, config_name, sys.argv[1:])
            if line is None:
                raise
            fail(line)
        finally:
            logging.raiseExceptions = raise_before
    return entry


SLURM_COMMANDS = ("sbatch", "srun", "scancel", "sacct", "squeue", "scontrol")


def bad_group_overrides(overrides: list[str]) -> list[str]:
    """The overrides that give a config group (a folder of conf/) something other than an option's name."""
    out = []
    for o in overrides:
        key, _, value = o.partition("=")
        key = key.lstrip("+~")
        name = re.fullmatch(r"[A-Za-z_][\w.-]*(,[A-Za-z_][\w.-]*)*", value.strip())
        parsed_as_other = value.strip().lower() in ("nan", "inf", "true", "false", "null")  # Hydra's float/bool/None
        if value and (Path(CONF_DIR) / key).is_dir() and (not name or parsed_as_other):
            out.append(o)
    return out


def _chain(e: BaseException):
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


def _config_dirs() -> list[Path]:
    """Where config files are looked up: --config-dir (or -cd) from the command line first, then conf/."""
    args, dirs = sys.argv[1:], []
    for i, a in enumerate(args):
        if a in ("--config-dir", "-cd") and i + 1 < len(args):
            dirs.append(Path(args[i + 1]))
        elif a.startswith("--config-dir="):
            dirs.append(Path(a.split("=", 1)[1]))
    return [*dirs, Path(CONF_DIR)]


def config_file_line(e: BaseException) -> str | None:
    """A config file that composes wrong ("In 'dataset/mine': ValidationError raised while composing config:"
    and the reason on the next line): the file, the key and what is wrong with it, in one line."""
    text = str(e)
    m = re.match(r"In '([^']+)': (\w+) raised while composing config", text)
    if m is None:
        return None
    source, cause = m.group(1), e.__cause__
    path = next((str(p) for d in _config_dirs() if (p := d / f"{source}.yaml").is_file()), f"the config {source}")
    detail = (str(cause).splitlines() or [""])[0] if cause is not None else " ".join(text.splitlines()[1:2])
    key = getattr(cause, "full_key", None) or getattr(cause, "key", None)
    hint = ""
    if (k := re.match(r"Key '([^']+)' not in '(\w+)'", detail)) is not None:
        from .. import config as schemas

        schema = getattr(schemas, k.group(2), None)
        names = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else []
        close = difflib.get_close_matches(k.group(1), names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else (f" (its keys: {', '.join(names)})" if names else "")
    where = f"{key}: " if key and str(key) not in detail else ""
    return f"{path}: {where}{detail or m.group(2)}{hint}; fix that file"


def explain(e: BaseException, config_name: str, overrides: list[str]) -> str | None:
    """One line for a failure outside the task function, or None for a bug (which keeps its traceback)."""
    import yaml
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException

    for c in _chain(e):
        if isinstance(c, KNOWN_ERRORS):
            return f"{type(c).__name__}: {c}"
        if isinstance(c, yaml.YAMLError):
            mark = getattr(c, "problem_mark", None)
            where = f"{mark.name} line {mark.line + 1} column {mark.column + 1}" if mark else "a config file"
            return (f"YAML syntax error in {where}: {getattr(c, 'problem', None) or str(c).splitlines()[0]}; "
                    f"fix that file (--config-dir files are read as YAML)")
        if isinstance(c, OSError) and (line := write_error(c)):
            return line
        missing = (c.filename if isinstance(c, FileNotFoundError) and c.filename in SLURM_COMMANDS
                   else (m.group(1) if (m := re.search(r'Could not detect "(\w+)"', str(c))) else None))
        if missing:  # submitit looks for srun/sbatch before it submits anything
            return (f"hydra/launcher=submitit_slurm runs SLURM's {missing}, which is not installed here: launch from a "
                    f"SLURM login node, or choose another launcher (hydra/launcher=submitit_local or "
                    f"hydra/launcher=joblib)")
    text = str(e)
    first = text.splitlines()[0] if text else type(e).__name__
    groups = bad_group_overrides(overrides)
    if groups and (isinstance(e, (AttributeError, TypeError)) or
                   (isinstance(e, ValueError) and text.startswith("Config group override"))):
        # logger=-1, env={a: 1}, env=[1,2]: Hydra and OmegaConf fail on these deep inside, in their own words
        return (f"{', '.join(groups)}: a config group takes the name of one of its options "
                f"(conf/<group>/<option>.yaml), not a number, a list or a mapping")
    if isinstance(e, HydraException) and (line := config_file_line(e)):
        return line
    if isinstance(e, HydraException) and (m := re.match(r"Could not override '([^']+)'", text)):
        return unknown_key_line(m.group(1), config_name, overrides)
    if isinstance(e, MissingConfigException):
        listing = text.split("Config search path")[0].splitlines()[1:]
        options = [o.strip() for o in listing if o.startswith("\t") and not o.strip().endswith("_schema")]
        return f"{first}" + (f"; available: {', '.join(options)}" if options else "")
    if isinstance(e, OverrideParseException):
        return f"cannot parse an override: {first} (key=value; quote values with spaces or brackets)"
    if isinstance(e, HydraException):
        cause = e.__cause__
        return f"{first}" + (f": {str(cause).splitlines()[0]}" if cause and str(cause) else "")
    return None


def unknown_key_line(key: str, config_name: str, overrides: list[str]) -> str:
    """A mistyped key: the nearest key the config does have (composed without that override)."""
    key = key.lstrip("+~")
    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key and not o.startswith("hydra")]
    known: list[str] = []
    try:
        cfg = compose_task(config_name, rest)
        known = sorted(_dotted_keys(OmegaConf.to_container(cfg, resolve=False)))
        parent = OmegaConf.select(cfg, key.rpartition(".")[0]) if "." in key else None
    except Exception:  # noqa: BLE001 (the suggestion is a courtesy; the line below stands without it)
        parent = None
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if isinstance(parent, DictConfig) and parent._metadata.object_type in (None, dict):
        # a mapping of the schema (Dict[...], e.g. study.tasks), not a settings dataclass: its entries are the user's
        siblings = difflib.get_close_matches(key, [k for k in known if k.startswith(key.rpartition(".")[0] + ".")],
                                             n=1, cutoff=0.6)
        near = f"did you mean {siblings[0]}? " if siblings else ""
        return (f"{key} is not an entry of the mapping {key.rpartition('.')[0]}: {near}a new entry is added with "
                f"+{key}=... (only a mapping's entries take a `+`; other keys are checked against the schemas)")
    hint = f"did you mean {close[0]}?" if close else f"`distillscape-{config_name} --cfg job` lists the keys"
    return f"unknown key {key}: {hint} (keys are checked against the config's schemas; none is added by a typo)"


def _dotted_keys(node, prefix: str = ""):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "hydra":
                continue
            yield from _dotted_keys(v, f"{prefix}{k}.")
            yield f"{prefix}{k}"


def compose_task(config_name: str, overrides: list[str]) -> DictConfig:
    """conf/<config_name>.yaml with overrides, as the task's command line would compose it, inside a
    running Hydra app (the study) or outside one (tests, scripts). A value of the wrong type (Hydra
    refuses it while composing) is a ConfigError naming the key."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException, HydraException

    try:
        if GlobalHydra.instance().is_initialized():
            return compose(config_name=config_name, overrides=list(overrides))
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose(config_name=config_name, overrides=list(overrides))
    except ConfigCompositionException as e:
        if m := re.match(r"Could not override '([^']+)'", str(e)):
            raise ConfigError(unknown_key_line(m.group(1), config_name, overrides)) from None
        if line := config_file_line(e):
            raise ConfigError(line) from None
        cause = e.__cause__ or e
        key = getattr(cause, "full_key", None)
        detail = str(cause).splitlines()[0]
        raise ConfigError(f"{key + ': ' if key else ''}{str(e).splitlines()[0]}: {detail}") from None
    except (HydraException, ValueError, AttributeError, TypeError) as e:  # a bad override, a bad option of a group
        line = explain(e, config_name, overrides)
        if line is None:
            raise
        raise ConfigError(line) from None


def start_job(cfg: DictConfig, out: Path | None = None, exclusive: bool = True) -> Path:
    """The job's output directory, claimed for this process and with the job's record written (Hydra's
    `.hydra/` files and config_resolved.yaml). Called only once the config is checked and nothing refuses
    the run: a refused or invalid run leaves an existing directory exactly as it was (Hydra's own early
    write of `.hydra/` is switched off in conf/hydra/default.yaml for this reason). The processes a
    multi-device run starts beside rank 0 neither claim nor record. `exclusive=False`: jobs that share the
    directory by design (landscape shards: each claims its own shard instead). A directory holding another
    job's records is refused here at the latest (`check_owner`; the tasks check it before their work)."""
    out = Path(out if out is not None else cfg.paths.output_dir)
    check_owner(cfg, out)
    if _rank() > 0:
        return out
    out.mkdir(parents=True, exist_ok=True)
    if exclusive:
        claim(out)
        remove_temporaries(out)  # half-written files of a killed run of this directory
    write_hydra_record(cfg, out)
    write_job_config(cfg, out)
    progress.recording = True  # from here on the job log holds our messages
    return out


def _rank() -> int:
    return max(int(os.environ.get(k, 0) or 0) for k in ("RANK", "LOCAL_RANK"))


def write_hydra_record(cfg: DictConfig, out: Path) -> None:
    """What Hydra's run_job writes to `<output_subdir>/` before the task starts (config, hydra config,
    overrides), written here after the checks instead; nothing when not run from a Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    app_out = OmegaConf.select(hc, "runtime.output_dir", default=None, throw_on_missing=False)
    if app_out is None or Path(app_out).resolve() != out.resolve():  # a study's stage: the study records it
        return
    record = {"config.yaml": OmegaConf.to_yaml(cfg), "hydra.yaml": OmegaConf.to_yaml({"hydra": hc}),
              "overrides.yaml": OmegaConf.to_yaml(list(hc.overrides.task))}
    for name, text in record.items():
        atomic_write(out / ".hydra" / name, lambda tmp, text=text: Path(tmp).write_text(text))


def build_datamodule(cfg: DictConfig) -> TensorDataModule:
    """The config's dataset, set up (every split in memory)."""
    dm = instantiate(cfg.dataset)
    dm.setup()
    return dm


def build_net(cfg: DictConfig, dm: TensorDataModule):
    c, h, w = dm.image_shape
    return instantiate(cfg.arch)(in_channels=c, height=h, width=w, num_classes=dm.num_classes)


def check_logger(cfg: DictConfig) -> None:
    """W&B online (an API key configured, or logger.offline=false) with no way to its server: one line now, not
    wandb's own error minutes into the job."""
    logger = cfg.get("logger") if isinstance(cfg, DictConfig) else None
    if not isinstance(logger, DictConfig) or not str(logger.get("_target_", "")).endswith("WandbLogger"):
        return
    from ..tracking import offline_mode, server_unreachable

    if offline_mode(logger.get("offline")) or (why := server_unreachable()) is None:
        return
    because = "logger.offline=false" if logger.get("offline") is False else "an API key is configured"
    raise ConfigError(f"logger=wandb runs online here ({because}), but the W&B server {why}: run "
                      f"offline with logger.offline=true (or WANDB_MODE=offline) and upload later with "
                      f"`wandb sync <output dir>/wandb/offline-run-*`")


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


def build_policy(cfg: DictConfig, obs_shape: tuple[int, ...], num_actions: int):
    """The config's policy network (arch=policy_mlp | atari_actor) for an environment's observation shape
    and action count."""
    from ..config import POLICY_ARCHS
    if cfg.arch.get("_target_") not in POLICY_ARCHS:
        raise ConfigError(f"arch {cfg.arch.get('_target_')} is an image classifier; an RL task (env={cfg.env.name}) "
                          f"needs a policy network: arch=policy_mlp (flat observations) or arch=atari_actor (frames)")
    if len(obs_shape) == 1:
        return instantiate(cfg.arch)(obs_dim=obs_shape[0], num_actions=num_actions)
    c, h, w = obs_shape
    return instantiate(cfg.arch)(obs_dim=c * h * w, num_actions=num_actions, in_channels=c, height=h, width_px=w)


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
