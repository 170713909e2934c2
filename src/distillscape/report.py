"""One self-contained HTML report of a study: everything the output directories of a distillation run
and its analyses hold (figures, every metric with mean +- std and the number of inits behind it, the
resolved configs, the command lines, the library versions), and the same content for a logger.

It reads whatever exists and does not depend on which analyses ran: each `*.json` is flattened into
metric rows, each figure is embedded as base64 (no external file, script or stylesheet). The page is
the Jinja2 template templates/report.html.j2 (autoescaped); this module hands it plain strings.
"""
from __future__ import annotations

import base64
import functools
import importlib.metadata
import json
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import jinja2
import yaml

from .artifacts import ArtifactError

# json files that are not results, and keys inside results that are inputs or bulk, not metrics
NOT_RESULTS = {"distilled.json"}  # its metrics are metrics.json's
SKIP_KEYS = {"config", "per_image", "confusion_matrices", "normalization", "classes", "arch", "inner",
             "figures", "param_names", "format_version", "image_shape", "num_classes"}
# folders of a run dir that hold no report material
SKIP_DIRS = {"snapshots", "checkpoints", "csv", "wandb", "tensorboard", ".hydra", "lightning_logs"}
LIBRARIES = ("distillscape", "torch", "torchvision", "lightning", "torchmetrics", "hydra-core", "omegaconf",
             "numpy", "matplotlib", "safetensors", "scikit-learn", "wandb")


@dataclass
class Row:
    metric: str
    mean: float | str
    std: float | None = None
    n: float | None = None
    range: tuple[float, float] | None = None

    def cells(self) -> list[str]:
        mean = f"{self.mean:.4g}" if isinstance(self.mean, (int, float)) else str(self.mean)
        std = f" ± {self.std:.3g}" if self.std is not None else ""
        n = f"{int(self.n)}" if isinstance(self.n, (int, float)) else ""
        rng = f"{self.range[0]:.4g} .. {self.range[1]:.4g}" if self.range else ""
        return [self.metric, mean + std, n, rng]


@dataclass
class Run:
    """What one output directory holds."""
    path: Path
    task: str
    results: dict[str, dict] = field(default_factory=dict)  # json file name -> its content
    figures: list[Path] = field(default_factory=list)
    surfaces: list[Path] = field(default_factory=list)      # *.npz cost surfaces
    config: str | None = None                                # resolved config (yaml)
    command: str | None = None


# -- reading ---------------------------------------------------------------------------------------
def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _find_n(base: str, flat: dict) -> float | None:
    """The number of inits behind `base`: `<base>_inits`/`_n`, or the same for a shorter prefix
    (test/onestep_acc -> test/onestep_inits; random_real/acc -> random_real/inits)."""
    head, _, tail = base.rpartition("/")
    parts = tail.split("_")
    for i in range(len(parts), 0, -1):
        stem = (head + "/" if head else "") + "_".join(parts[:i])
        for suffix in ("_inits", "_n"):
            if _is_number(flat.get(stem + suffix)):
                return flat[stem + suffix]
    for key in ("inits", "n"):
        if head and _is_number(flat.get(f"{head}/{key}")):
            return flat[f"{head}/{key}"]
    return None


def flat_rows(flat: dict) -> list[Row]:
    """Rows of a flat `name -> number` dict, folding `x_mean`, `x_std`, `x_min`, `x_max` into one row
    with the number of inits found beside them."""
    rows, used = [], set()
    for k, v in flat.items():
        if k.endswith("_mean") and _is_number(v):
            base = k[:-5]
            std = flat.get(base + "_std")
            lo, hi = flat.get(base + "_min"), flat.get(base + "_max")
            rows.append(Row(base, v, std if _is_number(std) else None, _find_n(base, flat),
                            (lo, hi) if _is_number(lo) and _is_number(hi) else None))
            used |= {k, base + "_std", base + "_min", base + "_max"}
    for k, v in flat.items():
        if k not in used and _is_number(v):
            # a plain number is a mean over inits only when it is an accuracy or a loss
            per_init = any(w in k.rsplit("/", 1)[-1] for w in ("acc", "loss"))
            rows.append(Row(k, v, None, _find_n(k, flat) if per_init else None))
    return rows


def nested_rows(data, prefix: str = "") -> list[Row]:
    """Rows of any JSON result: a dict with a numeric `mean` is one row (with `std` and `n`/`inits` if
    present), other dicts are walked, numbers at the same level are folded by `flat_rows`."""
    if not isinstance(data, dict):
        return []
    if _is_number(data.get("mean")):
        n = next((data[k] for k in ("n", "inits", "count") if _is_number(data.get(k))), None)
        std = data.get("std")
        lo, hi = data.get("min"), data.get("max")
        return [Row(prefix.rstrip("/") or "value", data["mean"], std if _is_number(std) else None, n,
                    (lo, hi) if _is_number(lo) and _is_number(hi) else None)]
    rows, flat = [], {}
    for k, v in data.items():
        if k in SKIP_KEYS:
            continue
        if isinstance(v, dict):
            rows += nested_rows(v, f"{prefix}{k}/")
        elif _is_number(v):
            flat[f"{prefix}{k}"] = v
        elif isinstance(v, list) and 0 < len(v) <= 8 and all(_is_number(x) for x in v):
            rows.append(Row(f"{prefix}{k}", ", ".join(f"{x:.4g}" for x in v)))
    return flat_rows(flat) + rows


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


def read_run(path) -> Run:
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
    command = None
    overrides = path / ".hydra" / "overrides.yaml"
    if overrides.exists():
        args = yaml.safe_load(overrides.read_text()) or []
        command = " ".join([f"distillscape-{task}", *(_quote(a) for a in args)])
    files = [p for p in path.rglob("*") if p.is_file() and not (set(p.relative_to(path).parts[:-1]) & SKIP_DIRS)]
    figures = sorted((p for p in files if p.suffix.lower() in (".png", ".svg", ".jpg")), key=_figure_order)
    surfaces = sorted(p for p in files if p.suffix == ".npz")
    return Run(path, task, results, figures, surfaces, config, command)


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in " []{}(),*$\"") else arg


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for lib in LIBRARIES:
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            out[lib] = "not installed"
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=Path(__file__).parent)
        if rev.returncode == 0:
            out["distillscape git commit"] = rev.stdout.strip() + (" (with local changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return out


# -- the headline numbers ------------------------------------------------------------------------------
def headline(runs: list[Run]) -> list[list[str]]:
    """One-step vs random real vs direct vs ensemble test accuracy (an RL run: episode returns), from
    whichever runs have them."""
    rows = []
    for run in runs:
        m = run.results.get("metrics.json") or run.results.get("distilled.json", {}).get("metrics", {})
        if "test/onestep_acc_mean" in m:
            rows.append([f"one step on the distilled batch ({run.path.name})",
                         f"{m['test/onestep_acc_mean']:.4f} ± {m.get('test/onestep_acc_std', float('nan')):.4f}",
                         f"{int(m.get('test/onestep_inits', 0))}"])
        if "test/onestep_random_init_acc_mean" in m:
            rows.append(["  same, from random inits", f"{m['test/onestep_random_init_acc_mean']:.4f} ± "
                         f"{m.get('test/onestep_random_init_acc_std', float('nan')):.4f}",
                         f"{int(m.get('test/onestep_random_init_inits', 0))}"])
        if "random_real/acc_mean" in m:
            rows.append([f"one step on random real images (lr {m.get('random_real/lr', float('nan')):g})",
                         f"{m['random_real/acc_mean']:.4f} ± {m.get('random_real/acc_std', float('nan')):.4f}",
                         f"{int(m.get('random_real/inits', 0))}"])
        if "direct/acc" in m:
            rows.append(["direct training", f"{m['direct/acc']:.4f}", "1"])
        # an RL run (env=...): episode returns instead of accuracies
        for key, label in (("test/onestep_return", f"one step on the distilled states: return ({run.path.name})"),
                           ("random_states/return", "one step on random states, random actions: return"),
                           ("ppo_states/return", "one step on PPO-visited states, PPO's actions: return"),
                           ("direct/return", "PPO (direct): return")):
            if f"{key}_mean" in m:
                n = m.get("test/onestep_inits" if key.startswith("test/") else key.split("/")[0] + "/inits", 1)
                rows.append([label, f"{m[key + '_mean']:.1f} ± {m.get(key + '_std', float('nan')):.1f}", f"{int(n)}"])
        inst = run.results.get("instances.json", {}).get("comparisons", {}).get("random_inits")
        if inst:
            k = inst["ensemble_members"]
            rows.append([f"ensemble of {k} one-step models ({run.path.name})", f"{inst['ensemble_acc']:.4f}", f"{k}"])
            rows.append([f"  its members: mean (best {inst['best_member_acc']:.4f})",
                         f"{inst['member_acc']['mean']:.4f} ± {inst['member_acc']['std']:.4f}", f"{k}"])
    return rows


def likeness_pivot(instances: dict) -> tuple[list[str], list[list[str]]]:
    """Statistic x batch kind (distilled / random real / noise) table of an instances.json."""
    lk = instances.get("likeness", {})
    kinds = list(lk)
    if not kinds:
        return [], []
    header = ["statistic"] + [f"{k} (n={next(iter(lk[k].values()))['n']})" for k in kinds]
    rows = [[stat] + [f"{lk[k][stat]['mean']:.3f} ± {lk[k][stat]['std']:.3f}" for k in kinds]
            for stat in lk[kinds[0]]]
    return header, rows


# -- writing ---------------------------------------------------------------------------------------
TEMPLATE = "report.html.j2"  # in the package's templates/ (package data)
MIME = {".png": "image/png", ".jpg": "image/jpeg", ".svg": "image/svg+xml"}


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("distillscape", "templates"),
                              autoescape=jinja2.select_autoescape(("html", "html.j2"), default=True),
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _data_uri(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:{MIME[path.suffix.lower()]};base64,{data}"


def _run_section(run: Run, figures: list[Path]) -> dict:
    """What the template shows of one run: plain strings and lists of table cells."""
    results = [{"name": name, "rows": [r.cells() for r in rows]}
               for name, data in run.results.items() if (rows := nested_rows(data))]
    return {"task": run.task, "path": str(run.path), "command": run.command, "results": results,
            "figures": [{"src": _data_uri(p), "name": p.name} for p in figures],
            "figures_left": len(run.figures) - len(figures),
            "surfaces": [[str(p.relative_to(run.path)), f"{p.stat().st_size / 1024:.1f} KiB"] for p in run.surfaces],
            "config": run.config}


def render(runs: list[Run], title: str, max_figures: int = 80) -> str:
    likeness = []
    for run in runs:
        if "instances.json" in run.results:
            header, rows = likeness_pivot(run.results["instances.json"])
            if rows:
                likeness.append({"name": run.path.name, "header": header, "rows": rows})
    sections, shown = [], 0
    for run in runs:
        figures = run.figures[:max(0, max_figures - shown)]
        shown += len(figures)
        sections.append(_run_section(run, figures))
    return _environment().get_template(TEMPLATE).render(
        title=title, written=datetime.now().isoformat(timespec="seconds"), runs=sections,
        headline=headline(runs), likeness=likeness, max_figures=max_figures,
        versions=[[k, v] for k, v in versions().items()], commands=[r.command for r in runs if r.command])


def all_rows(runs: list[Run]) -> list[list]:
    """Every metric as (run, file, metric, mean, std, n): the logger's table."""
    out = []
    for run in runs:
        for name, data in run.results.items():
            for r in nested_rows(data):
                if _is_number(r.mean):
                    out.append([run.path.name, name, r.metric, float(r.mean),
                                None if r.std is None else float(r.std), None if r.n is None else float(r.n)])
    return out
