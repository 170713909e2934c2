"""Reading run directories: what one output directory (or a multirun's jobs) holds, as a `RunRecord`
(its results, figures, surfaces, config, command, what did not finish). Named RunRecord, not Run: `run.Run`
is an opened distillation (nets, data), this is only what a directory holds."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..artifacts import ArtifactError
from ..resume import read_refused
from ..surface import SURFACE_FILE


# json files that are not results, and keys inside results that are inputs or bulk, not metrics
NOT_RESULTS = {"distilled.json"}  # its metrics are metrics.json's


# folders of a run dir that hold no report material
SKIP_DIRS = {"snapshots", "checkpoints", "csv", "wandb", "tensorboard", ".hydra", "lightning_logs"}


@dataclass
class RunRecord:
    """What one output directory holds."""
    path: Path
    task: str
    results: dict[str, dict] = field(default_factory=dict)  # json file name -> its content
    figures: list[Path] = field(default_factory=list)
    surfaces: list[Path] = field(default_factory=list)      # *.npz cost surfaces
    config: str | None = None                                # resolved config (yaml)
    command: str | None = None
    overrides: list[str] = field(default_factory=list)      # the job's command-line overrides
    sweep: Path | None = None                                # the multirun directory this job belongs to
    dataset: str | None = None
    arch: str | None = None
    varying: set[str] | None = None                          # a multirun's keys that differ between its jobs
    missing: list[str] = field(default_factory=list)         # parts that did not finish, said plainly
    curves: Path | None = None                               # Lightning's csv/**/metrics.csv (logger=csv)

    @property
    def label(self) -> str:
        """The run's name in tables and figure titles: a multirun job is named by its overrides that
        differ between the sweep's jobs (not by its number), any other run by its directory."""
        if self.sweep is not None:
            keys = self.varying
            return " ".join(o for o in self.overrides if not _is_path_override(o)
                            and (keys is None or _override_kv(o)[0] in keys)) or self.path.name
        return self.path.name

    @property
    def identity(self) -> str:
        """dataset / architecture / run, for figure titles and captions."""
        return " / ".join(x for x in (self.dataset, self.arch, self.label) if x)


def _is_path_override(o: str) -> bool:
    return o.lstrip("+~").startswith(("hydra.", "paths.", "logger"))


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None  # a half-written or foreign file: the report shows what it can read
    return data if isinstance(data, dict) else None


def _figure_order(p: Path) -> tuple:
    order = ("distilled", "likeness", "neighbours", "confusion")
    rank = next((i for i, s in enumerate(order) if p.name.startswith(s)), len(order))
    return (rank, str(p))


def read_run(path) -> RunRecord:
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path} is not a directory: give the output directories of distillscape runs "
                            f"(runs=[dir1,dir2,...])")
    hydra_cfg = path / ".hydra" / "config.yaml"
    config = hydra_cfg.read_text() if hydra_cfg.exists() else None
    task = next((line.split(":", 1)[1].strip() for line in (config or "").splitlines()
                 if line.startswith("task_name:")), None)
    results = {}
    for js in sorted(path.glob("*.json")):
        if js.name not in NOT_RESULTS and (data := _read_json(js)) is not None:
            results[js.name] = data
    if "metrics.json" not in results and (meta := _read_json(path / "distilled.json")):
        results["distilled.json"] = {"step": meta.get("step"), "metrics": meta.get("metrics", {})}
    if task is None:  # no Hydra record: guess the task from what it wrote
        known = {"metrics.json": "distill", "distilled.json": "distill", "instances.json": "instances",
                 "landing_stats.json": "landing", "direct_minimum.json": "train"}
        task = next((t for f, t in known.items() if f in results), "landscape" if any(path.rglob("*.npz")) else "?")
    if config is None:
        embedded = next((r["config"] for r in results.values() if isinstance(r.get("config"), dict)), None)
        if embedded is None and (meta := _read_json(path / "distilled.json")):
            embedded = meta.get("config")
        if embedded:
            config = yaml.safe_dump(embedded, sort_keys=False)
    command, args = None, []
    overrides = path / ".hydra" / "overrides.yaml"
    if overrides.exists():
        args = [str(a) for a in yaml.safe_load(overrides.read_text()) or []]
        command = " ".join([f"distillscape-{task}", *(_quote(a) for a in args)])
    files = [p for p in path.rglob("*") if p.is_file() and not (set(p.relative_to(path).parts[:-1]) & SKIP_DIRS)]
    missing, unfinished = missing_parts(path, task)
    # a figure in a sweep that did not finish is from an earlier sweep there, or half a story: not shown
    figures = sorted((p for p in files if p.suffix.lower() in (".png", ".svg", ".jpg") and p.parent not in unfinished),
                     key=_figure_order)
    surfaces = sorted(p for p in files if p.name == SURFACE_FILE and p.parent not in unfinished)
    dataset, arch = _identity(config, results, path)
    curves = next(iter(sorted((path / "csv").rglob("metrics.csv"))), None) if (path / "csv").is_dir() else None
    return RunRecord(path, task, results, figures, surfaces, config, command, args, None, dataset, arch, missing=missing,
               curves=curves)


def missing_parts(path: Path, task: str | None) -> tuple[list[str], set[Path]]:
    """What a run directory shows was started and not finished: a sweep with its directions written but no
    merged surface.npz (shards missing, or a crash), a surface older than the directions beside it (a later
    sweep there failed), a landing analysis with parts but no statistics, a distillation with checkpoints but
    no batch. Returns the lines to show and the sweep directories whose figures are not to be trusted."""
    lines, unfinished = [], set()
    for directions in sorted(path.rglob("directions.safetensors")):
        sweep = directions.parent
        name = sweep.relative_to(path).as_posix()
        surface = sweep / SURFACE_FILE
        shards = sorted((sweep / "shards").glob("shard_*_of_*.npz"))
        total = int(shards[0].stem.rsplit("_", 1)[1]) if shards else None
        if not surface.exists():
            unfinished.add(sweep)
            have = f"{len(shards)} of {total} shards computed" if total else "no shard computed"
            lines.append(f"surface {name}: missing, the sweep did not finish ({have}); rerun its landscape command "
                         f"(finished shards are kept)")
        elif surface.stat().st_mtime < directions.stat().st_mtime:
            unfinished.add(sweep)
            lines.append(f"surface {name}: stale, a later sweep into this directory did not finish; its figures "
                         f"are left out (rerun that sweep)")
    if (path / "landing_parts").is_dir() and not (path / "landing_stats.json").exists():
        lines.append("landing statistics: missing, the analysis did not finish (its finished batch kinds are kept "
                     "in landing_parts/; rerun the same command to go on)")
    if task == "distill" and (path / "checkpoints").is_dir() and not (path / "distilled.safetensors").exists():
        lines.append("distilled batch: missing, the distillation did not finish (resume it with ckpt_path=last)")
    return lines, unfinished


def _identity(config: str | None, results: dict, path: Path) -> tuple[str | None, str | None]:
    """(dataset, architecture) of a run: from its results, its config, or the distilled run it read."""
    try:
        cfg = yaml.safe_load(config) if config else {}
    except yaml.YAMLError:
        cfg = {}
    cfg = cfg if isinstance(cfg, dict) else {}
    # an RL run names its environment: its config still holds the default dataset group, unused
    dataset = next((r[k] for k in ("env", "dataset") for r in results.values() if isinstance(r.get(k), str)), None)
    arch = next((r["arch"] for r in results.values() if isinstance(r.get("arch"), str)), None)
    meta = _read_json(path / "distilled.json")
    if meta is None and isinstance(cfg.get("distilled"), str):
        meta = _read_json(Path(cfg["distilled"]) / "distilled.json")
    if meta:
        dataset = dataset or meta.get("env") or meta.get("dataset")
        arch = arch or (meta.get("arch") or {}).get("_target_")
    if isinstance(cfg.get("env"), dict):
        dataset = dataset or cfg["env"].get("name")
    if isinstance(cfg.get("dataset"), dict):
        dataset = dataset or cfg["dataset"].get("name")
    if isinstance(cfg.get("arch"), dict):
        arch = arch or cfg["arch"].get("_target_")
    return dataset, (arch.rsplit(".", 1)[-1] if isinstance(arch, str) else None)


def is_multirun(path: Path) -> bool:
    """A Hydra multirun directory: multirun.yaml, or numbered job directories each with .hydra/."""
    path = Path(path)
    return (path / "multirun.yaml").exists() or (
        not (path / ".hydra").exists() and any((d / ".hydra" / "overrides.yaml").exists()
                                               for d in path.iterdir() if d.is_dir() and d.name.isdigit()))


def read_runs(paths) -> list[RunRecord]:
    """Every run of the given directories; a multirun directory stands for its jobs (in job order),
    each named by its overrides."""
    runs = []
    for path in paths:
        path = Path(path)
        if path.is_dir() and is_multirun(path):
            jobs = sorted((d for d in path.iterdir() if d.is_dir() and (d / ".hydra").is_dir()),
                          key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))
            if not jobs:
                refused = refused_jobs(path)
                raise ArtifactError(f"{path} is a multirun directory without finished jobs (no */.hydra/)"
                                    + (f"; {len(refused)} were refused: {'; '.join(refused)}" if refused else ""))
            jobs = [read_run(job) for job in jobs]
            settings = [dict(map(_override_kv, run.overrides)) for run in jobs]
            keys = {k for st in settings for k in st}
            varying = {k for k in keys if len({st.get(k) for st in settings}) > 1}  # absent counts as a value
            for run in jobs:
                run.sweep, run.varying = path, varying
            runs += jobs
        else:
            runs.append(read_run(path))
    return runs


def refused_jobs(sweep: Path) -> list[str]:
    """The jobs of a multirun that did not run, refused when it was submitted or when they started
    (<sweep>/refused_jobs.json), each as a line: its number, overrides and reason."""
    return [f"job {j.get('num')} ({' '.join(map(str, j.get('overrides', [])))}) did not run: {j.get('reason')}"
            for j in read_refused(sweep)["jobs"]]


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in " []{}(),*$\"") else arg


def _metrics(run: RunRecord) -> dict:
    return run.results.get("metrics.json") or run.results.get("distilled.json", {}).get("metrics", {}) or {}


def _override_kv(o: str) -> tuple[str, str]:
    k, _, v = o.lstrip("+~").partition("=")
    return k, v
