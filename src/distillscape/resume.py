"""Resumable work: one way to fingerprint what a piece of work was computed for, to mark it finished
and to skip it on a rerun; and what a distillation checkpoint needs beyond Lightning's own state.

Finished work. Every task that skips what it already did (a finished distillation job, a landscape
shard, a landing analysis's batch kind, a study stage) records it the same way: a `fingerprint` of
what the result depends on, stored with the result (a JSON marker beside it, or inside the result file)
and compared on the rerun by `finished`. A matching record means done: skip. A record of another
fingerprint means the directory holds other work: either refused (`on_mismatch="refuse"`: a sweep rerun
with other overrides into the same hydra.sweep.dir must not overwrite it) or recomputed
(`on_mismatch="redo"`: the landing analysis's parts of an older config).

A distillation draws fresh random inits every outer step from torch's global RNG and reads real
batches in shuffled order. Lightning's checkpoint already holds the synthetic batch (the module's
parameters), the optimizer state and the loop counters; to continue *exactly* where a run stopped
it also needs
- the RNG states at the moment of the checkpoint: `RngState`, a callback whose state is plain
  tensors / ints (so `torch.load(weights_only=True)` reads it), and
- the real batch of outer step k to depend on (seed, k) only, not on how many times the loader was
  re-created: `data.StepIndexedBatches`, the train loader's batch sampler.
A job killed before it finished resumes from `checkpoints/last.ckpt` with `ckpt_path=last`.
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
import numpy as np
import torch
from omegaconf import OmegaConf

from .artifacts import atomic_write, read_json, write_json
from .errors import ConfigError
from .job import Job

COMPLETE = "complete.json"
RECORD = "config_resolved.yaml"  # the job's record: its task, overrides and resolved config (`write_job_config`)
# Keys that say where or how visibly a job runs, not what it computes: a rerun may change them.
NOT_IDENTITY = ("paths", "ckpt_path", "skip_complete", "logger", "trainer.enable_progress_bar",
                "trainer.default_root_dir")
# what the identity held before a moved run counted as the same job: older complete.json markers carry it
_LEGACY_IDENTITY = "trainer.default_root_dir"


# -- fingerprints and finished work ----------------------------------------------------------------------
def fingerprint(*tensors: torch.Tensor, data: Any = None) -> str:
    """16 hex digits of sha256 over the tensors' bytes (in order) and then the JSON of `data`."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    if data is not None:
        h.update(json.dumps(data, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def matches(found: str | None, fp: str, on_mismatch: str, refusal: str) -> bool:
    """Whether a stored fingerprint `found` is this work's `fp`. None: nothing stored (not done). Another
    fingerprint: False with on_mismatch="redo", else ConfigError(refusal)."""
    if found is None:
        return False
    if str(found) == fp:
        return True
    if on_mismatch == "redo":
        return False
    raise ConfigError(refusal)


def finished(marker: Path, fp: str, on_mismatch: str = "refuse", refusal: str | None = None) -> dict | None:
    """The record written by `mark_finished(marker, fp, ...)` if the work was done for `fp`, else None
    (see `matches` for a record of another fingerprint)."""
    marker = Path(marker)
    if not marker.exists():
        return None
    record = read_json(marker)
    found = record.get("fingerprint", record.get("config_digest"))  # complete.json of earlier releases
    why = refusal or (f"{marker.parent} holds finished work of another config (fingerprint {found}, this one {fp}); "
                      f"give this run its own directory or delete {marker}")
    return record if matches(found, fp, on_mismatch, why) else None


def mark_finished(marker: Path, fp: str, **record) -> Path:
    return write_json(marker, {"fingerprint": fp, **record})


# -- one writer per run directory and per shard ---------------------------------------------------------
_CLAIMS: dict[str, int] = {}  # path -> the open descriptor holding its lock, for this process's lifetime


def claim(path: Path, lock_file: Path | None = None, what: str | None = None) -> None:
    """Lock `path` (a directory, or a work item through its `lock_file`) for this process, or refuse with
    one line: two processes writing one run directory or one landscape shard would interleave their files.
    An flock, so the kernel drops it when the holder dies (kill -9 included): no stale lock to clean up.
    Re-entrant within a process (the study and the tests call several tasks in one)."""
    key = str(Path(path).resolve())
    if key in _CLAIMS:
        return
    target = Path(lock_file) if lock_file is not None else Path(path)
    if lock_file is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_RDONLY | (os.O_CREAT if lock_file is not None else 0), 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(f"another distillscape process is writing {what or path} right now; wait for it to "
                          f"finish (its rerun then skips what it finished), or give this run its own directory "
                          f"(hydra.run.dir=...)") from None
    _CLAIMS[key] = fd


@contextlib.contextmanager
def holding(lock_file: Path):
    """Wait for, then hold, an flock on lock_file: for writes several jobs make into one place by design (the
    files of a sweep directory that every shard job of it writes or merges); the kernel drops it if the holder
    dies. Under it, a temporary file there that no holder is writing is left over from a killed job."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def release_claims() -> None:
    while _CLAIMS:
        os.close(_CLAIMS.popitem()[1])


# -- checkpoints written whole, metric history kept across a resume ----------------------------------------
class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, written to a temporary name beside the checkpoint and renamed into
    place: a kill or a full disk while `last.ckpt` is written leaves the previous checkpoint, never half of
    the new one. (Lightning's own save stages the file in the system's temporary directory, through fsspec,
    and copies it over: a full disk then named that other file, and filled /tmp on the way.)"""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        buffer = io.BytesIO()  # torch.save onto a full disk fails in its C++ writer without an OSError
        torch.save(checkpoint, buffer)
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getbuffer()))


def keep_csv_history(logger, up_to_step: int) -> int:
    """On a resume, carry the CSV logger's rows of the steps before the checkpoint into the new run's file
    (Lightning's CSV writer deletes an existing metrics.csv when it opens): rows logged after the checkpoint
    are dropped, since those steps are done again, and so is the test's row. Returns the number of rows kept."""
    if not isinstance(logger, CSVLogger):
        return 0
    path = Path(logger.log_dir) / "metrics.csv"
    if not path.exists():
        return 0
    with open(path, newline="") as f:  # values stay the text they were written as
        rows = [{k: v for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
    # the test follows the fit, so a resume always does it again: its row, if the stopped run got that far, goes
    rows = [r for r in rows if float(r.get("step", math.inf)) < up_to_step and not any(k.startswith("test/") for k in r)]
    logger.experiment.metrics[:0] = rows  # opening the writer deletes the old file; these rows go first
    logger.experiment.save()
    return len(rows)


# -- RNG state in the checkpoint ---------------------------------------------------------------------
class RngState(L.Callback):
    """Saves the torch (CPU and CUDA), numpy and Python RNG states with every checkpoint and restores
    them on resume, so the inits drawn after a resume are the ones an uninterrupted run draws."""

    def state_dict(self) -> dict[str, Any]:
        np_kind, np_keys, np_pos, np_gauss, np_cached = np.random.get_state()
        py_version, py_state, py_gauss = random.getstate()
        state = {"torch": torch.get_rng_state(),
                 "numpy": {"kind": np_kind, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                           "has_gauss": int(np_gauss), "cached_gaussian": float(np_cached)},
                 "python": {"version": py_version, "state": list(py_state),
                            "gauss": py_gauss}}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Applied just before the first step after the resume, not now: setup between here and that
        # step (on_train_start hooks, loaders) may draw random numbers, as it did once at step 0 of
        # the uninterrupted run, whose state at step k+1 is the one saved at step k.
        self._pending = state

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        state, self._pending = getattr(self, "_pending", None), None
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                             n["cached_gaussian"]))
        p = state["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


# -- the job's config beside its outputs, and skipping finished jobs --------------------------------------
# Settings added after jobs had finished with this code, one tuple per change that added some, oldest first. A job
# before a key existed ran as the key's schema default says (a new setting keeps the old behaviour by default), so
# the digest leaves a key out while it holds that default: a job finished before it existed is still this job,
# one that sets it otherwise is another. Markers written in between hold the keys known then: `recognised_digests`
# tries each cut of this list. A new setting of any task goes into a new last tuple (tests/test_resume.py checks
# that every key here has a schema default).
ADDED_SETTINGS: tuple[tuple[str, ...], ...] = (
    ("env", "rl"),  # RL tasks
    ("distill.method", "distill.eval", "distill.dm", "distill.gm", "distill.mtt", "distill.imported"),  # other distillers
    ("direct.converge", "direct.converge_grad_tol", "direct.converge_max_steps"),  # direct.converge
    # bf16 evaluation and landing statistics, direct training's snapshots, Hessian / trajectory planes, curved
    # paths, curvature along early training
    ("distill.eval.precision", "distill.eval.precision_tolerance", "distill.eval.precision_inits", "distill.eval.path",
     "direct.snapshot_every", "sweep.hessian_pair", "sweep.hessian_examples", "sweep.lanczos_steps", "sweep.trajectory",
     "sweep.range_unit", "analysis.precision", "analysis.precision_tolerance", "analysis.precision_inits",
     "analysis.eval_path", "analysis.curve", "analysis.curve_inits", "analysis.curve_steps", "analysis.curve_lr",
     "analysis.curve_points", "analysis.early_curvature_probes", "analysis.early_curvature_lanczos_steps"),
)
_NO_DEFAULT = object()


def schema_default(task: str, key: str) -> Any:
    """The default a task's schema gives the dotted `key` (a section's: all of its defaults, as resolved config
    data), or `_NO_DEFAULT` where the task has no such key or it has no default."""
    import typing
    from dataclasses import MISSING as NO_VALUE, asdict, fields, is_dataclass

    from .config import JOBS

    schema: Any = JOBS.get(task)
    *parents, leaf = key.split(".")
    for name in [*parents, leaf]:
        if not (isinstance(schema, type) and is_dataclass(schema)):
            return _NO_DEFAULT
        found = next((f for f in fields(schema) if f.name == name), None)
        if found is None:
            return _NO_DEFAULT
        hint = typing.get_type_hints(schema).get(name)
        args = [a for a in typing.get_args(hint) if a is not type(None)]  # Optional[X] -> X
        kind = args[0] if len(args) == 1 else hint
        if name != leaf:
            schema = kind
            continue
        if found.default is not NO_VALUE:
            value = found.default
        elif found.default_factory is not NO_VALUE:
            value = found.default_factory()
        elif isinstance(kind, type) and is_dataclass(kind):
            value = kind()
        else:
            return _NO_DEFAULT
        return asdict(value) if is_dataclass(value) else value
    return _NO_DEFAULT


def identity(job: Job, legacy: bool = False, known: int = 0) -> dict:
    """The resolved config without the keys that do not change what a job computes (a run directory moved
    elsewhere is the same job), and without the `ADDED_SETTINGS` that hold their default. `legacy`: as it was
    computed before, the run's own directory in. `known`: as computed when only the first `known` tuples of
    `ADDED_SETTINGS` existed and every key counted (markers written then); 0: every added key at its default
    left out (markers written now)."""
    data = job.resolved()
    data.pop("hydra", None)
    for key in (k for added in ADDED_SETTINGS[known:] for k in added):
        default = schema_default(job.task, key)
        if default is not _NO_DEFAULT and _at(data, key) == default:
            _without(data, [key])
    return _without(data, [k for k in NOT_IDENTITY if not (legacy and k == _LEGACY_IDENTITY)])


def _at(data: dict, key: str) -> Any:
    """The value at a dotted key of resolved config data, or `_NO_DEFAULT` where it is absent."""
    node: Any = data
    for k in key.split("."):
        if not isinstance(node, dict) or k not in node:
            return _NO_DEFAULT
        node = node[k]
    return node


def _without(data: dict, keys) -> dict:
    """`data` (a resolved config, changed in place) without Hydra's node and the dotted `keys`."""
    data.pop("hydra", None)
    for key in keys:
        *parents, leaf = key.split(".")
        node = data
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return data


def config_digest(job: Job) -> str:
    """What complete.json records of a finished job (`mark_complete`)."""
    return fingerprint(data=identity(job))


def recognised_digests(job: Job) -> list[str]:
    """Every digest a finished job of this config may have been marked with: this release's (`config_digest`),
    each earlier one's (the keys of `ADDED_SETTINGS` known then counted), and each of those with the run's own
    directory in (before a moved run counted as the same job)."""
    return list(dict.fromkeys(fingerprint(data=identity(job, legacy, known)) for legacy in (False, True)
                              for known in range(len(ADDED_SETTINGS) + 1)))


def write_job_config(job: Job, out: Path | None = None) -> None:
    """The resolved config and the command-line overrides beside the job's outputs (Hydra's .hydra/
    keeps the unresolved config; this one has every interpolation, e.g. the data path, filled in)."""
    out = job.out if out is None else Path(out)
    # the task first: it marks the directory as this task's from the moment the job starts (`check_owner`)
    text = OmegaConf.to_yaml(OmegaConf.create({"task": job.task, "overrides": list(job.overrides),
                                               "config": job.resolved()}))
    atomic_write(out / RECORD, lambda tmp: Path(tmp).write_text(text))


def finished_metrics(job: Job, out: Path | None = None) -> dict | None:
    """The metrics of this very job if it already finished in `out` (the job's directory by default), else None.

    A `complete.json` of a job with a different config means the directory is being reused for
    another job (e.g. a sweep rerun with other overrides into the same hydra.sweep.dir): refused."""
    if not job.skip_complete:
        return None
    out = job.out if out is None else Path(out)
    marker = out / COMPLETE
    record = read_json(marker) if marker.exists() else {}
    before = record.get("overrides")
    refusal = (f"{out} holds a finished job with another config (overrides {before}, now {list(job.overrides)}); "
               f"give this run its own directory (hydra.run.dir / hydra.sweep.dir) or pass skip_complete=false "
               f"to overwrite it")
    found, fp = record.get("fingerprint", record.get("config_digest")), config_digest(job)
    if found in recognised_digests(job):
        fp = found  # a job finished by an earlier release, whose digest counted other keys
    if finished(marker, fp, "refuse", refusal) is None:
        return None
    return read_json(out / "metrics.json")


def mark_complete(job: Job, out: Path | None = None) -> None:
    mark_finished((job.out if out is None else Path(out)) / COMPLETE, config_digest(job), overrides=list(job.overrides))


# -- whose work a directory holds ----------------------------------------------------------------------------
# What only each task's job writes into its own directory (globs), the file that marks it finished first.
# Used where a directory has no readable record (a run of a release before the record named its task):
# checked in this order, since a distillation also writes a direct minimum and a study's root holds stages.
TASK_FILES = {
    "study": ("study.json", "*/study_stage.json"),
    "distill": (COMPLETE, "distilled.safetensors", "checkpoints/last.ckpt", "metrics.json", "snapshots"),
    "landing": ("landing_stats.json", "landing_parts"),
    "instances": ("instances.json", "distilled_p*.png", "likeness.png", "neighbours_p*.png", "confusion.png"),
    "report": ("*.html", "figures", "vtk"),
    "landscape": ("*/surface.npz", "*/directions.safetensors", "*/shards"),
    "train": ("direct_minimum.json", "direct_minimum.safetensors"),
}
# keys a task's jobs may differ in and still share one directory, by design: the shards of one landscape sweep
SHARED_BY = {"landscape": ("shard",)}
# tasks whose rerun with other settings into their directory is theirs to handle: a study reruns the stages
# whose overrides changed (each stage then checks its own directory)
ANY_CONFIG = ("study",)
OWN_DIRECTORY = ("give this run its own directory (hydra.run.dir=..., or hydra.sweep.dir=... with -m), or pass "
                 "skip_complete=false to overwrite it")


@dataclass
class RecordedJob:
    """The job whose records a directory holds: its task, its resolved config (None when only the files tell
    the task) and command-line overrides, and whether it finished."""
    path: Path
    task: str
    config: dict | None
    overrides: list | None
    finished: bool

    def __str__(self) -> str:
        return f"a finished {self.task} job" if self.finished else f"an unfinished {self.task} job (stopped, or running now)"

    @property
    def command(self) -> str:
        return f"distillscape-{self.task}" + "".join(f" {o}" for o in self.overrides or [])


def command_with(out: Path, override: str) -> str:
    """The command of the job recorded in `out` with `override` (key=value) in place of its own value of that
    key: what to run to redo the job another way (e.g. in fp32); without a record, "the same command with"
    the override."""
    key = override.split("=", 1)[0]
    found = recorded_job(Path(out))
    if found is None or found.overrides is None:
        return f"the same command with {override}"
    kept = [o for o in found.overrides if o.split("=", 1)[0].lstrip("+~") != key]
    return RecordedJob(found.path, found.task, found.config, [*kept, override], found.finished).command


def _read_yaml(path: Path, kind: type = dict):
    """The YAML file's content if it is a `kind`, else None (missing, unreadable or of another shape)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, kind) else None


def _has(path: Path, pattern: str) -> bool:
    return any(True for _ in path.glob(pattern))


def recorded_job(path: Path) -> RecordedJob | None:
    """Whose work `path` holds, or None (no such directory, or nothing of a job in it). The task comes from the
    job's record (config_resolved.yaml: its `task`, or the config's task_name in a record of an earlier
    release), else Hydra's (.hydra/config.yaml), else the files only that task writes (`TASK_FILES`)."""
    path = Path(path)
    if not path.is_dir():
        return None
    record = _read_yaml(path / RECORD) or {}
    config = record.get("config") if isinstance(record.get("config"), dict) else None
    task = record.get("task") or (config or {}).get("task_name")
    if not task:
        task = (_read_yaml(path / ".hydra" / "config.yaml") or {}).get("task_name")
    if not task:
        task = next((t for t, files in TASK_FILES.items() if any(_has(path, f) for f in files)), None)
    if not task:
        return None
    finished = bool(TASK_FILES.get(task)) and _has(path, TASK_FILES[task][0])
    overrides = record.get("overrides")
    if overrides is None:
        overrides = _read_yaml(path / ".hydra" / "overrides.yaml", list)
    return RecordedJob(path, str(task), config, overrides, finished)


def _comparable(config: dict, task: str) -> dict:
    """A resolved config's identity, its own output directory written as <output_dir> (a key resolved from it,
    e.g. landscape.out_dir, is the same for a moved directory)."""
    out = str((config.get("paths") or {}).get("output_dir") or "")
    text = json.dumps(config, default=str)  # a copy, whatever its leaves
    if out:
        text = text.replace(json.dumps(out)[1:-1], "<output_dir>")
    return _without(json.loads(text), (*NOT_IDENTITY, *SHARED_BY.get(task, ())))


def _differences(before, now, prefix: str = ""):
    """(dotted key, recorded value, value now) where two configs differ. A key that only one of two mappings has
    (a setting added by a later release) is not compared; a mapping against a value (env: null, now an env) is."""
    if isinstance(before, dict) and isinstance(now, dict):
        for key in before:
            if key in now:
                yield from _differences(before[key], now[key], f"{prefix}{key}.")
    elif before != now:
        yield prefix[:-1], before, now


def _first(differences: list[str], n: int = 3) -> str:
    return "; ".join(differences[:n]) + (f"; {len(differences) - n} more" if len(differences) > n else "")


def config_differences(before: dict, now: dict, task: str, within: tuple[str, ...] | None = None) -> list[str]:
    """'key: recorded value, now value' for each identity key of the two configs (or, `within`, under those keys)
    that differs."""
    return [f"{k}: {a!r}, now {b!r}" for k, a, b in _differences(_comparable(before, task), _comparable(now, task))
            if within is None or any(k == w or k.startswith(w + ".") for w in within)]


def check_owner(job: Job, out: Path | None = None, config: bool = True) -> None:
    """Refuse, in one line and before anything is written, a job in a directory `out` (its own by default) that holds the
    records of another task's job, or (`config`) of the same task's job with another config, finished or
    not: it would overwrite them. skip_complete=false means to overwrite. (A distillation's finished job of
    another config is refused earlier by `finished_metrics`, in its own words.)"""
    if not job.skip_complete:
        return
    out = job.out if out is None else Path(out)
    found = recorded_job(out)
    task = job.task
    if found is None:
        return
    if found.task != task:
        raise ConfigError(f"{out} holds {found}, run as `{found.command}`: a {task} job there would overwrite its "
                          f"files; {OWN_DIRECTORY}")
    if not config or found.config is None or task in ANY_CONFIG:
        return
    differ = config_differences(found.config, job.resolved(), task)
    if differ:
        again = " ckpt_path=last" if task == "distill" and "ckpt_path=last" not in (found.overrides or []) else ""
        resume = "" if found.finished else f"to go on with it, run its own command here (`{found.command}{again}`); else "
        raise ConfigError(f"{out} holds {found} of another config ({_first(differ)}): this one would overwrite its files; "
                          f"{resume}{OWN_DIRECTORY}")


# what a distillation checkpoint's tensors and loop counters depend on: a job that differs in one of these cannot
# go on from it (its weights do not fit, or they mean something else)
CHECKPOINT_IDENTITY = ("task_name", "arch", "dataset.name", "env.name", "distill.images_per_class", "distill.label_mode",
                       "distill.inner_loss", "distill.inner_steps", "distill.lr_per_param", "distill.init_mode",
                       "rl.critic_hidden")


def check_checkpoint_origin(job: Job, ckpt: Path) -> None:
    """Refuse in one line, before any work, to resume from `ckpt` a job that differs from the one that wrote it
    in what the checkpoint holds (`CHECKPOINT_IDENTITY`: task, arch, dataset or env, the inner settings), as
    recorded beside it (<run>/config_resolved.yaml for <run>/checkpoints/*.ckpt). A checkpoint with no record
    beside it is not checked here (its loading still refuses a broken file)."""
    ckpt = Path(ckpt)
    found = recorded_job(ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent)
    if found is None or found.config is None:
        return
    differ = config_differences(found.config, job.resolved(), job.task, within=CHECKPOINT_IDENTITY)
    if differ:
        raise ConfigError(f"{ckpt} was written by {found} that differs from this one in what it holds ({_first(differ)}): this "
                          f"job cannot go on from it; run with the settings it was written with (`{found.command}`), "
                          f"or leave ckpt_path unset to start afresh")


# -- the jobs of a multirun refused before they ran (tasks/submission.py writes it, the report lists them) -----
REFUSED = "refused_jobs.json"  # in the sweep directory: {"jobs": [{"num", "overrides", "reason", "when"}], "of": n}


def read_refused(sweep_dir: Path) -> dict[str, Any]:
    path = Path(sweep_dir) / REFUSED
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"jobs": [], "of": None}
    return data if isinstance(data, dict) and isinstance(data.get("jobs"), list) else {"jobs": [], "of": None}


def record_refused(sweep_dir: Path, entry: dict[str, Any], of: int | None = None) -> None:
    """Add (or replace, by job number) a refused job in the sweep's record; jobs on other processes or
    machines add theirs one at a time (an flock on the record's lock file)."""
    with holding(Path(sweep_dir) / f".{REFUSED}.lock"):
        data = read_refused(sweep_dir)
        jobs = [j for j in data["jobs"] if j.get("num") != entry["num"]] + [entry]
        write_json(Path(sweep_dir) / REFUSED, {"jobs": sorted(jobs, key=lambda j: j["num"]),
                                              "of": of if of is not None else data.get("of")})
