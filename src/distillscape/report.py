"""One self-contained HTML report of a study, laid out along its questions: does one step generalise,
do the distilled instances look like real data, where does one step land on the true task, what the
cost surfaces show, what the early-training reading says, and (given a multirun) how the answers move
with the swept settings. Settings, raw metric tables and versions go to an appendix.

It reads whatever the output directories hold and does not depend on which analyses ran. Figures are
embedded as base64; interactive surfaces are Plotly figures whose plotly.js is inlined once, so the page
is one file that works offline. The figures this module embeds but does not draw (the 2x2 grid, the 3-D
surfaces, the sweep plot) are made by the task from `plots` and handed in as `Made`. The page is the
Jinja2 template templates/report.html.j2 (autoescaped); this module hands it plain strings.
"""
from __future__ import annotations

import base64
import functools
import importlib.metadata
import json
import math
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import jinja2
import markupsafe
import numpy as np
import yaml

from .artifacts import ArtifactError
from .landing import STATS as LANDING_STATS

# json files that are not results, and keys inside results that are inputs or bulk, not metrics
NOT_RESULTS = {"distilled.json"}  # its metrics are metrics.json's
SKIP_KEYS = {"config", "settings", "groups", "per_image", "confusion_matrices", "normalization", "classes", "arch", "inner",
             "figures", "param_names", "format_version", "image_shape", "num_classes"}
# folders of a run dir that hold no report material
SKIP_DIRS = {"snapshots", "checkpoints", "csv", "wandb", "tensorboard", ".hydra", "lightning_logs"}
LIBRARIES = ("distillscape", "torch", "torchvision", "lightning", "torchmetrics", "hydra-core", "omegaconf",
             "numpy", "matplotlib", "safetensors", "scikit-learn", "wandb")


def binary_count(mean, std, n, known_rate: bool = False) -> int | None:
    """k when (mean, std, n) summarise n values that are all 0 or 1 with k ones (a rate: 9 of 10
    images), else None. For 0/1 values the std follows from the mean (Bessel-corrected, as
    stats.describe computes it), which tells a rate from a continuous statistic when 0 < k < n; all
    zeros or all ones (std 0) look like any constant, so they count only for a `known_rate`."""
    if not (_is_number(mean) and _is_number(std) and _is_number(n)) or n < 1 or n != int(n):
        return None
    n = int(n)
    k = round(mean * n)
    if abs(mean * n - k) > 1e-6 * n or not 0 <= k <= n or (not known_rate and k in (0, n)):
        return None
    p = k / n
    expected = math.sqrt(p * (1 - p) * n / (n - 1)) if n > 1 else 0.0
    return k if abs(std - expected) <= 1e-4 + 1e-3 * expected else None


def stat_text(d: dict | None, with_n: bool = True, known_rate: bool = False) -> str:
    """One summary ({"mean", "std", "n"}) as table text: "9/10" for a rate of 0/1 events, otherwise
    "0.873 ± 0.021" (and " (n=50)")."""
    if not isinstance(d, dict) or not _is_number(d.get("mean")):
        return "–"
    mean, std, n = d["mean"], d.get("std"), d.get("n")
    if (k := binary_count(mean, std, n, known_rate)) is not None:
        return f"{k}/{int(n)}"
    text = f"{mean:.4g}" + (f" ± {std:.3g}" if _is_number(std) else "")
    return text + (f" (n={int(n)})" if with_n and _is_number(n) else "")


@dataclass
class Row:
    metric: str
    mean: float | str
    std: float | None = None
    n: float | None = None
    range: tuple[float, float] | None = None

    def cells(self) -> list[str]:
        n = f"{int(self.n)}" if isinstance(self.n, (int, float)) else ""
        rng = f"{self.range[0]:.4g} .. {self.range[1]:.4g}" if self.range else ""
        binary = self.range is None or set(self.range) <= {0, 1}
        if binary and (k := binary_count(self.mean, self.std, self.n)) is not None:
            return [self.metric, f"{k}/{int(self.n)}", n, rng]
        mean = f"{self.mean:.4g}" if isinstance(self.mean, (int, float)) else str(self.mean)
        std = f" ± {self.std:.3g}" if self.std is not None else ""
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
    overrides: list[str] = field(default_factory=list)      # the job's command-line overrides
    sweep: Path | None = None                                # the multirun directory this job belongs to
    dataset: str | None = None
    arch: str | None = None
    varying: set[str] | None = None                          # a multirun's keys that differ between its jobs
    missing: list[str] = field(default_factory=list)         # parts that did not finish, said plainly

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
    surfaces = sorted(p for p in files if p.name == "surface.npz" and p.parent not in unfinished)
    dataset, arch = _identity(config, results, path)
    return Run(path, task, results, figures, surfaces, config, command, args, None, dataset, arch, missing=missing)


def missing_parts(path: Path, task: str | None) -> tuple[list[str], set[Path]]:
    """What a run directory shows was started and not finished: a sweep with its directions written but no
    merged surface.npz (shards missing, or a crash), a surface older than the directions beside it (a later
    sweep there failed), a landing analysis with parts but no statistics, a distillation with checkpoints but
    no batch. Returns the lines to show and the sweep directories whose figures are not to be trusted."""
    lines, unfinished = [], set()
    for directions in sorted(path.rglob("directions.safetensors")):
        sweep = directions.parent
        name = sweep.relative_to(path).as_posix()
        surface = sweep / "surface.npz"
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


def read_runs(paths) -> list[Run]:
    """Every run of the given directories; a multirun directory stands for its jobs (in job order),
    each named by its overrides."""
    runs = []
    for path in paths:
        path = Path(path)
        if path.is_dir() and is_multirun(path):
            jobs = sorted((d for d in path.iterdir() if d.is_dir() and (d / ".hydra").is_dir()),
                          key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))
            if not jobs:
                raise ArtifactError(f"{path} is a multirun directory without finished jobs (no */.hydra/)")
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


# -- figures: what each shows and how to read it ---------------------------------------------------------
CAPTIONS = {
    "density": "The Hessian's spectral density on the true task (stochastic Lanczos quadrature, Gaussian-smoothed, "
               "log scale), averaged over the points of each group: init, landing, direct minimum. Read: mass left "
               "of 0 is negative curvature; the right edge is the sharpest direction.",
    "distilled": "The distilled batch: each learned image in pixel space beside its soft label (a bar per "
                 "class; red: the largest, which also titles the image). The title gives the learned inner "
                 "learning rate. Read: does each image show its class, and how soft are the labels?",
    "neighbours": "Each row: a distilled image, then its nearest real training images in pixel space (blue "
                  "frames) and in the direct model's feature space (green frames). A neighbour's class is "
                  "red when it is not the distilled image's class. Read: same-class neighbours mean the image "
                  "sits among real images of its class.",
    "likeness": "Likeness statistics (bar: mean, whisker: std over images) of the distilled batch against "
                "random real images and noise, which set the scale; right: every distilled image's cosine to "
                "each real class mean (rows sorted by label; red: similar). Read: distilled bars near the real "
                "ones and far from noise mean real-looking images.",
    "confusion": "Row-normalised test confusion matrices (true class down, predicted across; a dark diagonal "
                 "is a good classifier): the directly trained model, the one-step models pooled, and their "
                 "ensemble. Read: which classes one step confuses that direct training does not.",
    "trajectory": "The one-step landings against direct training on real data from the same inits: left, the "
                  "share of test predictions the landing shares with each direct-training checkpoint; middle, "
                  "the parameter distance to it; right, the run's test accuracy beside each kind's landing "
                  "accuracy (dashed). Step 0 is the init; the axis is symlog. Read: a peak of agreement at an "
                  "early step means one step mimics early training; a rise to the last step, a minimum.",
}


def caption_of(path: Path) -> str:
    stem = path.stem
    key = next((k for k in CAPTIONS if stem.startswith(k)), None)
    if key:
        return CAPTIONS[key]
    if (path.parent / "surface.npz").exists():
        return (f"{stem.replace('_', '/', 1)} over the plane around {path.parent.name} (contours; log10 for "
                f"losses), the marked points at their projections.")
    return f"A figure the run wrote ({stem.replace('_', ' ')})."


def _figure(run: Run, path: Path, caption: str | None = None) -> dict:
    rel = path.relative_to(run.path).as_posix()
    return {"src": _data_uri(path), "caption": caption or caption_of(path), "file": f"{run.label}/{rel}",
            "alt": f"{path.stem} of {run.identity}"}


def _by_stem(run: Run, prefix: str) -> list[Path]:
    return [p for p in run.figures if p.stem.startswith(prefix) and p.parent == run.path]


# -- the sections --------------------------------------------------------------------------------------
def _metrics(run: Run) -> dict:
    return run.results.get("metrics.json") or run.results.get("distilled.json", {}).get("metrics", {}) or {}


def _ms(m: dict, key: str) -> str:
    return f"{m[key + '_mean']:.4f} ± {m.get(key + '_std', float('nan')):.4f}"


def headline(runs: list[Run]) -> list[list[str]]:
    """One-step vs random real vs direct vs ensemble test accuracy (an RL run: episode returns), from
    whichever runs have them."""
    rows = []
    for run in runs:
        m = _metrics(run)
        if "test/onestep_acc_mean" in m:
            rows.append([f"one step on the distilled batch ({run.label})", _ms(m, "test/onestep_acc"),
                         f"{int(m.get('test/onestep_inits', 0))}"])
        if "test/onestep_random_init_acc_mean" in m:
            rows.append(["  same, from random inits", _ms(m, "test/onestep_random_init_acc"),
                         f"{int(m.get('test/onestep_random_init_inits', 0))}"])
        if "random_real/acc_mean" in m:
            rows.append([f"one step on random real images (lr {m.get('random_real/lr', float('nan')):g})",
                         _ms(m, "random_real/acc"), f"{int(m.get('random_real/inits', 0))}"])
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
            rows.append([f"ensemble of {k} one-step models ({run.label})", f"{inst['ensemble_acc']:.4f}", f"{k}"])
            rows.append([f"  its members: mean (best {inst['best_member_acc']:.4f})",
                         f"{inst['member_acc']['mean']:.4f} ± {inst['member_acc']['std']:.4f}", f"{k}"])
    return rows


def accuracy_summary(runs: list[Run]) -> list[str]:
    """What the accuracy table says, in a sentence per run, computed from it."""
    out = []
    for run in runs:
        m = _metrics(run)
        if "test/onestep_acc_mean" not in m or run.sweep is not None:  # a multirun's jobs: its own section
            continue
        a = m["test/onestep_acc_mean"]
        text = f"{run.identity}: one step on the distilled batch reaches {a:.3f} test accuracy " \
               f"({int(m.get('test/onestep_inits', 0))} inits)"
        parts = []
        if "random_real/acc_mean" in m:
            r = m["random_real/acc_mean"]
            parts.append(f"{a - r:+.3f} against one step on as many random real images ({r:.3f})")
        if _is_number(m.get("direct/acc")) and m["direct/acc"] > 0:
            parts.append(f"{a / m['direct/acc']:.0%} of direct training ({m['direct/acc']:.3f})")
        out.append(text + (": " + " and ".join(parts) if parts else "") + ".")
    for run in runs:
        inst = run.results.get("instances.json", {}).get("comparisons", {}).get("random_inits")
        if inst:
            e, mem = inst["ensemble_acc"], inst["member_acc"]["mean"]
            out.append(f"An ensemble of {inst['ensemble_members']} one-step models reaches {e:.3f} against "
                       f"{mem:.3f} for one member: averaging {'helps' if e > mem + 0.005 else 'does not help'}.")
    return out


def return_summary(runs: list[Run]) -> list[str]:
    """What the return table of an RL run says, in a sentence per run, computed from it."""
    out = []
    for run in runs:
        m = _metrics(run)
        if "test/onestep_return_mean" not in m or run.sweep is not None:
            continue
        a = m["test/onestep_return_mean"]
        text = (f"{run.identity}: one step on the distilled states reaches a mean episode return of {a:.1f} "
                f"(min {m.get('test/onestep_return_min', float('nan')):.1f} over {int(m.get('test/onestep_inits', 0))} inits)")
        parts = [f"{a - m[k + '_mean']:+.1f} against one step on {what} ({m[k + '_mean']:.1f})"
                 for k, what in (("random_states/return", "random states"), ("ppo_states/return", "PPO-visited states"))
                 if k + "_mean" in m]
        if _is_number(m.get("direct/return_mean")) and m["direct/return_mean"] > 0:
            parts.append(f"{a / m['direct/return_mean']:.0%} of PPO's return ({m['direct/return_mean']:.1f})")
        out.append(text + (": " + " and ".join(parts) if parts else "") + ".")
    return out


LIKENESS_RATES = ("pixel_nn_same_class", "feature_nn_same_class", "class_mean_nearest_is_own", "direct_agrees")
LIKENESS_STATS = {  # likeness statistic -> what it is, for the table and the sentences
    "pixel_nn_same_class": "nearest real image (pixels) has its class",
    "feature_nn_same_class": "nearest real image (direct-model features) has its class",
    "class_mean_nearest_is_own": "nearest real class mean is its class",
    "direct_agrees": "direct model predicts its class",
    "class_mean_cosine_own": "cosine to its class mean",
    "class_mean_cosine_best_other": "cosine to the nearest other class mean",
    "pixel_nn_rms": "RMS pixel distance to the nearest real image",
    "feature_nn_rms": "RMS feature distance to the nearest real image",
}


def likeness_pivot(instances: dict) -> tuple[list[str], list[list[str]]]:
    """Statistic x batch kind (distilled / random real / noise) table of an instances.json; rates of
    0/1 events as k/n."""
    lk = instances.get("likeness", {})
    kinds = list(lk)
    if not kinds:
        return [], []
    header = ["statistic"] + [f"{k} (n={next(iter(lk[k].values()))['n']})" for k in kinds]
    rows = [[f"{stat}: {LIKENESS_STATS[stat]}" if stat in LIKENESS_STATS else stat]
            + [stat_text(lk[k].get(stat), with_n=False, known_rate=stat in LIKENESS_RATES) for k in kinds]
            for stat in lk[kinds[0]]]
    return header, rows


def likeness_summary(instances: dict) -> list[str]:
    lk = instances.get("likeness", {})
    if "distilled" not in lk:
        return []
    others = [k for k in lk if k != "distilled"]
    out = []
    for stat in ("pixel_nn_same_class", "feature_nn_same_class", "direct_agrees"):
        d = lk["distilled"].get(stat)
        if not d:
            continue
        cmp = ", ".join(f"{k.replace('_', ' ')} {stat_text(lk[k].get(stat), with_n=False, known_rate=True)}"
                        for k in others if stat in lk[k])
        out.append(f"{LIKENESS_STATS[stat][0].upper() + LIKENESS_STATS[stat][1:]}: "
                   f"{stat_text(d, with_n=False, known_rate=True)} distilled images" + (f" ({cmp})." if cmp else "."))
    if all("pixel_nn_rms" in lk.get(k, {}) for k in ("distilled", "random_real", "noise")):
        d, r, z = (lk[k]["pixel_nn_rms"]["mean"] for k in ("distilled", "random_real", "noise"))
        if d <= r:
            where = "as close to real images as held-out real images are, or closer"
        elif d >= z:
            where = "as far from real images as noise is, or farther"
        else:
            where = f"between held-out real images and noise, nearer {'the real images' if d - r < z - d else 'noise'}"
        out.append(f"In pixel space the distilled images lie {where}: RMS distance to the nearest real training "
                   f"image {d:.3g} (random real {r:.3g}, noise {z:.3g}).")
    return out


def landing_kinds(stats: dict) -> dict[str, dict]:
    """kind -> stat -> {"mean", "std", "n"} of a landing_stats.json (its `kinds`; an older file kept
    the kinds at the top level)."""
    if isinstance(stats.get("kinds"), dict):
        return stats["kinds"]
    return {k: v for k, v in stats.items() if isinstance(v, dict) and v
            and all(isinstance(x, dict) and "mean" in x for x in v.values())}


def landing_pivot(stats: dict) -> tuple[list[str], list[list[str]]]:
    """Statistic x kind (distilled, random real, random synthetic) of a landing_stats.json: mean ± std
    with n, rates of 0/1 events as k/n; the direct minimum's value where it has the statistic."""
    kinds = landing_kinds(stats)
    if not kinds:
        return [], []
    names = list(kinds)
    direct = stats.get("direct_minimum", {}) or {}
    header = ["statistic"] + [k.replace("_", " ") for k in names] + (["direct minimum"] if direct else []) + ["what it is"]
    rows, seen = [], []
    for kind in names:
        seen += [s for s in kinds[kind] if s not in seen]
    for stat in seen:
        row = [stat] + [stat_text(kinds[k].get(stat)) for k in names]
        if direct:
            # landing_train_loss -> train_loss, top_eig_landing -> top_eig: the direct minimum's own value
            key = stat.removeprefix("landing_").removesuffix("_landing")
            row.append(f"{direct[key]:.4g}" if "landing" in stat and key != stat and _is_number(direct.get(key)) else "")
        rows.append(row + [LANDING_STATS.get(stat, "")])
    return header, rows


def landing_summary(stats: dict) -> list[str]:
    out = []

    def mean(kind, stat):
        v = landing_kinds(stats).get(kind, {}).get(stat, {})
        return v.get("mean") if _is_number(v.get("mean")) and math.isfinite(v["mean"]) else None

    loss, direct_loss = mean("distilled", "landing_train_loss"), (stats.get("direct_minimum") or {}).get("train_loss")
    if loss is not None and _is_number(direct_loss):
        out.append(f"The distilled landing's train loss is {loss:.3g}, against {direct_loss:.3g} at the direct "
                   f"minimum" + (f" and {mean('random_real', 'landing_train_loss'):.3g} after one step on random real "
                                 f"images" if mean("random_real", "landing_train_loss") is not None else "") + ".")
    if (b := mean("distilled", "barrier_to_direct")) is not None:
        ref = max(loss or 0.0, 1e-12)
        verdict = "linearly connected" if b <= 0.05 * ref else "not linearly connected"
        out.append(f"The landing's barrier to the direct minimum is {b:.3g}: {verdict} "
                   f"(threshold: 5% of the landing's train loss).")
    ratio = landing_kinds(stats).get("distilled", {}).get("grad_norm_ratio", {})
    if (g := mean("distilled", "grad_norm_ratio")) is not None:
        low, high = mean_interval(ratio)
        # a gradient norm says how far a point is from stationary, not how flat the surface is there
        if math.isfinite(low) and (high < 1 or low > 1):
            verdict = ("the landing is closer to stationary than the init" if high < 1 else
                       "the landing is further from stationary than the init")
        else:
            verdict = "no clear difference from the init in how far from stationary it is"
        interval = f" (95% interval [{low:.3g}, {high:.3g}] over {ratio.get('n')} landings)" if math.isfinite(low) else ""
        out.append(f"The gradient norm at the landing is {g:.3g}× the gradient norm at the init{interval}: {verdict}. "
                   "(A gradient norm measures distance from stationarity, not flatness; curvature is in \"Is the "
                   "landing a minimum?\".)")
    if (r := mean("distilled", "polish_distance_ratio")) is not None and (drop := mean("distilled", "polish_loss_drop")) is not None:
        out.append(f"Polishing on real data moves {r:.3g}× the step's length further and removes {drop:.3g} train loss: "
                   + ("the landing is close to where training on real data settles." if r < 1 and drop < 0.1 * max(loss or 1, 1e-12) else
                      "training on real data still moves it and lowers its loss."))
    return out


def mean_interval(d: dict, level: float = 0.95) -> tuple[float, float]:
    """The t interval of a mean from its {"mean", "std", "n"} summary; (nan, nan) for n < 2."""
    from scipy.stats import t as student_t

    n = d.get("n")
    if not (_is_number(d.get("mean")) and _is_number(d.get("std")) and _is_number(n)) or n < 2:
        return math.nan, math.nan
    half = student_t.ppf(0.5 + level / 2, n - 1) * d["std"] / math.sqrt(n)
    return d["mean"] - half, d["mean"] + half


VERDICT_NAMES = {"minimum": "minima", "saddle": "saddles", "not_stationary": "not stationary"}
CERTIFIED = {"lambda_max": "λ_max", "lambda_min": "λ_min", "abs_ratio": "|λ_min| / λ_max", "grad_norm": "‖∇L‖",
             "trace_slq": "trace (SLQ)"}


def certificate_pivot(cert: dict) -> tuple[list[str], list[list[str]]]:
    """Group (init, landing, direct minimum) x verdict counts (k/n with Wilson 95% interval) and the mean ±
    std of the certified statistics."""
    header = ["points", *VERDICT_NAMES.values(), *CERTIFIED.values()]
    rows = []
    for group, d in (cert.get("groups") or {}).items():
        c, st = d.get("counts", {}), d.get("stats", {})
        rows.append([group.replace("_", " ")]
                    + [f"{c[v]['k']}/{c[v]['n']} [{c[v]['low']:.2f}, {c[v]['high']:.2f}]" if v in c else "" for v in VERDICT_NAMES]
                    + [stat_text(st.get(k), with_n=False) for k in CERTIFIED])
    return header, rows


def certificate_summary(cert: dict) -> list[str]:
    """Sentences of a certificate.json, each with the statistic it rests on."""
    out, groups, s = [], cert.get("groups") or {}, cert.get("settings") or {}
    rule = (f"(a point is a minimum when ‖∇L‖ ≤ {s.get('grad_tol')} and none of its {s.get('certificate_eigs')} lowest "
            f"Ritz values θ has θ < −(residual + {s.get('negative_tol')} λ_max); Lanczos over {s.get('examples')} "
            f"training examples)")
    for group, what in (("landing", "landings"), ("init", "inits")):
        if (c := groups.get(group, {}).get("counts")):
            n = next(iter(c.values()))["n"]
            parts = [f"{c[v]['k']} {name} (95% interval of the fraction [{c[v]['low']:.2f}, {c[v]['high']:.2f}])"
                     for v, name in VERDICT_NAMES.items() if v in c]
            neg = groups[group].get("negative_curvature")
            more = (f" {neg['k']} of {n} have certified negative curvature, whatever their gradient (95% interval "
                    f"[{neg['low']:.2f}, {neg['high']:.2f}])." if neg else "")
            out.append(f"Of {n} {what}, " + ", ".join(parts) + (f" {rule}." if group == "landing" else ".") + more)
    if (dm := groups.get("direct_minimum", {}).get("points")):
        p = dm[0]
        why = {"minimum": "it is certified as a minimum",
               "saddle": f"it is NOT a minimum but a saddle ({p['negative_count']} significantly negative eigenvalues)",
               "not_stationary": f"it is NOT a minimum: not stationary (‖∇L‖ = {p['grad_norm']:.3g} > {s.get('grad_tol')})"}
        out.append(f"The direct minimum: λ_max {p['lambda_max']:.4g}, λ_min {p['lambda_min']:.4g}, "
                   f"‖∇L‖ {p['grad_norm']:.3g}: {why.get(p['verdict'], p['verdict'])}.")
    for key, what in (("lambda_max", "The top Hessian eigenvalue λ_max"), ("abs_ratio", "|λ_min| / λ_max")):
        d = (cert.get("landing_minus_init") or {}).get(key)
        if not d or not _is_number(d.get("low")) or not math.isfinite(d["low"]):
            continue
        differs = d["low"] > 0 or d["high"] < 0
        out.append(f"{what} at the landing minus at its init: {d['mean']:.3g} (95% interval [{d['low']:.3g}, "
                   f"{d['high']:.3g}], {d['n']} pairs): " + (("higher" if d["low"] > 0 else "lower") + " at the landing."
                                                          if differs else "no clear difference."))
    return out


def trajectory_summary(stats: dict) -> list[str]:
    """Per batch kind, from the mean agreement curve over direct-training checkpoints: where it peaks,
    and whether it falls after the peak (an early-training point) or stays there to the last
    checkpoint (the landing behaves like trained networks)."""
    traj, kinds = stats.get("trajectory") or {}, landing_kinds(stats)
    steps, curves = traj.get("steps") or [], traj.get("agreement") or {}
    out = []
    for kind, curve in curves.items():
        if not steps or len(curve) != len(steps):
            continue
        peak = int(np.nanargmax(curve))
        drop = curve[peak] - curve[-1]
        text = (f"{kind.replace('_', ' ')}: agreement with direct training from the same inits peaks at step "
                f"{steps[peak]} ({curve[peak]:.1%} of test predictions) and is {curve[-1]:.1%} at the last "
                f"checkpoint (step {steps[-1]}): ")
        if curve[peak] < 0.5:
            text += "it shares few predictions with any checkpoint, so the landing is unlike direct training."
        elif drop >= 0.05:
            text += "it falls after the peak, so the landing resembles an early point of training."
        else:
            text += "it stays at its peak, so the landing resembles trained networks rather than an early point."
        match = kinds.get(kind, {}).get("steps_to_match", {})
        if _is_number(match.get("mean")) and match.get("n"):
            text += (f" Direct training needs {match['mean']:.3g} steps to reach the landing's train loss "
                     f"(mean of {match['n']})." if match["mean"] > 0 else
                     " The landing's train loss is no lower than the init's.")
        out.append(text)
    return out


def surface_summary(name: str, surface: dict) -> list[str]:
    """Per loss metric of a surface: is the centre the lowest point of the plane?"""
    out = []
    metrics = [str(m) for m in surface.get("metrics", [])]
    for metric in metrics:
        if not metric.endswith("/loss"):
            continue
        v = surface[metric]
        axes = [surface[f"axis{i}"] for i in range(v.ndim)]
        origin = tuple(int(abs(a).argmin()) for a in axes)
        best = tuple(int(i) for i in np.unravel_index(np.nanargmin(v), v.shape))
        step = max(float(np.abs(np.diff(a)).min()) for a in axes) if all(len(a) > 1 for a in axes) else 1.0
        where = ", ".join(f"{(x if abs(x) > 1e-6 * step else 0.0):.3g}" for x in (axes[i][best[i]] for i in range(v.ndim)))
        at, low = float(v[origin]), float(v[best])
        if best == origin:
            out.append(f"Around {name}, {metric} is lowest at the centre ({at:.3g}).")
        else:
            out.append(f"Around {name}, {metric} is {at:.3g} at the centre and lowest at ({where}): {low:.3g}, "
                       f"{(at - low) / abs(at) if at else 0:.0%} lower, so the centre is not this plane's minimum "
                       f"of {metric} on this grid.")
    return out


# -- cost surfaces ---------------------------------------------------------------------------------
@dataclass
class SurfaceGroup:
    """The surfaces one landscape job swept (same directions): centre name -> surface.npz."""
    run: Run
    name: str                   # the group's directory relative to the run ("" for the run dir itself)
    surfaces: dict[str, Path]

    @property
    def key(self) -> str:
        return f"{self.run.label}/{self.name}".rstrip("/")


def surface_groups(runs: list[Run]) -> list[SurfaceGroup]:
    groups = []
    for run in runs:
        by_dir: dict[Path, dict[str, Path]] = {}
        for npz in run.surfaces:
            if npz.name == "surface.npz":
                by_dir.setdefault(npz.parent.parent, {})[npz.parent.name] = npz
        for d, surfaces in by_dir.items():
            name = d.relative_to(run.path).as_posix() if d != run.path else ""
            groups.append(SurfaceGroup(run, "" if name == "." else name, surfaces))
    return groups


def read_surface(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def cost_metrics(surface: dict) -> list[str]:
    """The costs a surface holds, losses first: every metric but accuracies (an RL surface's
    `episode/return` is its task's cost, read the other way up)."""
    metrics = [str(m) for m in surface.get("metrics", [])]
    return [m for m in metrics if m.endswith("/loss")] + [m for m in metrics if not m.endswith(("/loss", "/acc"))]


# -- across the jobs of a multirun ---------------------------------------------------------------------
SEED_KEYS = ("seed", "distill.seed", "distill.init_seed", "distill.eval_seed", "baseline.seed")
SWEEP_METRICS = {"test/onestep_acc_mean": "one-step test accuracy", "random_real/acc_mean": "random real one-step accuracy",
                 "direct/acc": "direct training accuracy"}


def _override_kv(o: str) -> tuple[str, str]:
    k, _, v = o.lstrip("+~").partition("=")
    return k, v


def sweep_groups(runs: list[Run]) -> dict[Path, list[dict]]:
    """Per multirun: its jobs grouped by their overrides other than seeds, each group with the settings
    that define it, its jobs and mean ± std across them (n = jobs) of the headline metrics."""
    out: dict[Path, list[dict]] = {}
    for sweep in dict.fromkeys(r.sweep for r in runs if r.sweep is not None):
        jobs = [r for r in runs if r.sweep == sweep]
        groups: dict[tuple, dict] = {}
        for run in jobs:
            settings = {k: v for k, v in map(_override_kv, run.overrides)
                        if k not in SEED_KEYS and not _is_path_override(k) and (run.varying is None or k in run.varying)}
            g = groups.setdefault(tuple(sorted(settings.items())), {"settings": settings, "jobs": [], "values": {}})
            g["jobs"].append(run)
            m = _metrics(run)
            for key in SWEEP_METRICS:
                if _is_number(m.get(key)):
                    g["values"].setdefault(key, []).append(float(m[key]))
        for g in groups.values():
            g["stats"] = {k: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                              "n": len(v)} for k, v in g["values"].items()}
            g["label"] = " ".join(f"{k}={v}" for k, v in g["settings"].items()) or "all jobs"
        out[sweep] = list(groups.values())
    return out


def swept_keys(groups: list[dict]) -> list[str]:
    """The settings whose value differs between groups (the axes of the sweep), numeric ones first."""
    keys = list(dict.fromkeys(k for g in groups for k in g["settings"]))
    varying = [k for k in keys if len({g["settings"].get(k) for g in groups}) > 1]

    def numeric(k):
        try:
            [float(g["settings"][k]) for g in groups if k in g["settings"]]
            return True
        except ValueError:
            return False
    return sorted(varying, key=lambda k: not numeric(k))


# -- writing ---------------------------------------------------------------------------------------
TEMPLATE = "report.html.j2"  # in the package's templates/ (package data)
MIME = {".png": "image/png", ".jpg": "image/jpeg", ".svg": "image/svg+xml"}


@dataclass
class Made:
    """What the report task drew for the page from the runs' files (with `plots`): keyed by
    SurfaceGroup.key / the surface.npz path / the multirun directory."""
    surface_grids: dict[str, Path] = field(default_factory=dict)
    interactive: dict[str, dict] = field(default_factory=dict)   # surface.npz path -> Plotly figure (JSON dict)
    vtk: dict[str, Path] = field(default_factory=dict)           # surface.npz path -> its .vtu
    sweep_figures: dict[str, Path] = field(default_factory=dict)


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("distillscape", "templates"),
                              autoescape=jinja2.select_autoescape(("html", "html.j2"), default=True),
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _data_uri(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:{MIME[path.suffix.lower()]};base64,{data}"


def _plain_figure(path: Path, caption: str, name: str) -> dict:
    return {"src": _data_uri(path), "caption": caption, "file": name, "alt": caption.split(":")[0]}


def _section(id: str, title: str, question: str) -> dict:
    return {"id": id, "title": title, "question": question, "summary": [], "tables": [], "figures": [],
            "interactive": [], "notes": []}


def sections(runs: list[Run], made: Made, max_figures: int) -> list[dict]:
    """The report's body: a section per research question that some run answers."""
    out, budget = [], [max_figures]

    def take(figs: list[dict]) -> list[dict]:
        kept = figs[:max(0, budget[0])]
        budget[0] -= len(kept)
        return kept

    # 0 what is missing: said first, so that no reader takes a gap for a result
    if any(r.missing for r in runs):
        sec = _section("missing", "Missing or failed parts",
                       "Parts of these runs that were started and did not finish: they are not in the sections below.")
        sec["summary"] = [f"{r.label}: {line}" for r in runs for line in r.missing]
        out.append(sec)

    # 1 does one step generalise (an RL run: episode returns, not accuracies)
    kinds = {k for r in runs for k, key in (("acc", "test/onestep_acc_mean"), ("rl", "test/onestep_return_mean"))
             if key in _metrics(r)}
    if rows := headline(runs):
        question = {"acc": "Test accuracy of a network after ONE gradient step on the distilled batch, against one "
                           "step on random real images and against training directly on the real data.",
                    "rl": "Episode return of a policy after ONE gradient step on the distilled states, against one "
                          "step on random states (random actions) and on states PPO visited (its actions), and "
                          "against PPO trained on the environment itself."}
        measure = " / ".join({"acc": "test accuracy", "rl": "episode return"}[k] for k in sorted(kinds)) or "test accuracy"
        sec = _section("generalise", "Does one step generalise?", " ".join(question[k] for k in sorted(kinds))
                       or question["acc"])
        sec["summary"] = accuracy_summary(runs) + return_summary(runs)
        sec["tables"].append({"caption": f"{measure[0].upper()}{measure[1:]}: mean ± std over the inits the models "
                                         "start from (n: how many).", "header": ["training", measure, "n (inits)"],
                              "rows": rows})
        out.append(sec)

    # 2 instances
    sec = _section("instances", "Do the distilled instances look like real data?",
                   "The distilled images one by one, their nearest real images, and likeness statistics against "
                   "random real images and noise.")
    # a batch that an instances run shows page by page is not shown again as its distill run's figure
    paged = {Path(r.results["instances.json"]["source"]).resolve() for r in runs
             if isinstance(r.results.get("instances.json", {}).get("source"), str)}
    for run in runs:
        figs = [] if run.path.resolve() in paged and "instances.json" not in run.results else \
            [_figure(run, p, f"{CAPTIONS['distilled']} ({run.identity})") for p in _by_stem(run, "distilled")]
        if "instances.json" in run.results:
            inst = run.results["instances.json"]
            header, rows = likeness_pivot(inst)
            if rows:
                sec["tables"].append({"caption": f"Likeness of {run.identity}: per-image statistics against the "
                                                 "real training split, mean ± std over images; rates as images/total.",
                                      "header": header, "rows": rows})
                sec["summary"] += likeness_summary(inst)
            figs += [_figure(run, p, f"{CAPTIONS[k]} ({run.identity})")
                     for k in ("likeness", "neighbours", "confusion") for p in _by_stem(run, k)]
        sec["figures"] += take(figs)
    if sec["tables"] or sec["figures"]:
        out.append(sec)

    # 3 landing
    sec = _section("landing", "Where does one step land on the true task?",
                   " ".join({"acc": "The same inits stepped once on the distilled batch, on random real images and "
                                    "on random synthetic images, measured on the true task (real data).",
                             "rl": "Inits stepped once on the distilled states, measured on the true task: episode "
                                   "returns in the environment and PPO's loss on experience of the PPO policy."}[k]
                            for k in sorted(kinds or {"acc"})))
    for run in runs:
        stats = run.results.get("landing_stats.json")
        if stats:
            header, rows = landing_pivot(stats)
            if rows:
                sec["tables"].append({"caption": f"Landing statistics of {run.identity}: mean ± std over landings "
                                                 "(n: finite values); rates as k/n. Settings: appendix.",
                                      "header": header, "rows": rows})
                sec["summary"] += landing_summary(stats)
    if sec["tables"]:
        out.append(sec)

    # 3b the curvature certificate
    sec = _section("certificate", "Is the landing a minimum?",
                   "Lanczos on the true task's Hessian at the inits, their landings and the direct minimum: the "
                   "extreme eigenvalues with their residuals, a verdict per point (minimum, saddle, not stationary) "
                   "and the spectral density (stochastic Lanczos quadrature).")
    for run in runs:
        if (cert := run.results.get("certificate.json")) and cert.get("groups"):
            header, rows = certificate_pivot(cert)
            sec["tables"].append({"caption": f"Curvature certificate of {run.identity}: verdicts as k/n [Wilson 95% "
                                             "interval]; the statistics as mean ± std over the points.",
                                  "header": header, "rows": rows})
            sec["summary"] += certificate_summary(cert)
            sec["figures"] += take([_figure(run, p, f"{CAPTIONS['density']} ({run.identity})")
                                    for p in _by_stem(run, "density")])
    if sec["tables"]:
        out.append(sec)

    # 4 surfaces
    groups = surface_groups(runs)
    if groups:
        sec = _section("surfaces", "What do the cost surfaces show?",
                       "Costs over planes through parameter space: the true task (train) and the distilled batch's "
                       "own cost, around the centres each landscape job swept.")
        for g in groups:
            loaded = {c: read_surface(p) for c, p in g.surfaces.items()}
            for c, surf in loaded.items():
                sec["summary"] += surface_summary(f"{c} ({g.key})", surf)
            if g.key in made.surface_grids:
                sec["figures"] += take([_plain_figure(
                    made.surface_grids[g.key],
                    f"Cost surfaces of {g.run.identity}{' / ' + g.name if g.name else ''}: a row per centre "
                    f"({', '.join(loaded)}), a column per cost, one colour scale per column (log10 for losses), so "
                    "rows compare by colour. Filled markers lie in the plane; hollow ones are projections of "
                    "points off it (legend: the share of the point's offset from the centre that lies off the plane).", f"{g.key} (drawn by the report)")])
            for c, p in g.surfaces.items():
                if str(p) in made.interactive:
                    vtk = made.vtk.get(str(p))
                    sec["interactive"].append({
                        "id": f"surface-{len(sec['interactive']) + 1}", "figure": made.interactive[str(p)],
                        "caption": f"Interactive: the surface around {c} of {g.run.identity} in 3-D (drag to turn, "
                                   "scroll to zoom; the menu switches the cost). Marked points sit on the surface "
                                   "at their projections." + (f" ParaView: {vtk}" if vtk else "")})
        out.append(sec)

    # 5 early training
    sec = _section("trajectory", "Does one step mimic early training?",
                   "The landing compared with direct training on real data from the same init, checkpoint by "
                   "checkpoint (the early-training reading).")
    for run in runs:
        if (stats := run.results.get("landing_stats.json")) and stats.get("trajectory"):
            sec["summary"] += trajectory_summary(stats)
        sec["figures"] += take([_figure(run, p, f"{CAPTIONS['trajectory']} ({run.identity})")
                                for p in _by_stem(run, "trajectory")])
    if sec["summary"] or sec["figures"]:
        out.append(sec)

    # 6 across runs
    for sweep, glist in sweep_groups(runs).items():
        sec = _section(f"sweep-{len(out)}", f"Across the runs of {sweep.name}",
                       f"The jobs of the multirun {sweep}, grouped by their overrides (seeds pooled): mean ± std "
                       "across a group's jobs (n: jobs).")
        keys = [k for k in SWEEP_METRICS if any(k in g["stats"] for g in glist)]
        sec["tables"].append({"caption": "Each group of jobs by its overrides; mean ± std over its jobs (seeds).",
                              "header": ["overrides", "jobs"] + [SWEEP_METRICS[k] for k in keys],
                              "rows": [[g["label"], str(len(g["jobs"]))] + [stat_text(g["stats"].get(k)) for k in keys]
                                       for g in glist]})
        jobs = [r for r in runs if r.sweep == sweep]
        common = [o for o in jobs[0].overrides if not _is_path_override(o) and _override_kv(o)[0] not in (jobs[0].varying or set())]
        if common:
            sec["notes"].append("every job: " + " ".join(common))
        best = max((g for g in glist if "test/onestep_acc_mean" in g["stats"]),
                   key=lambda g: g["stats"]["test/onestep_acc_mean"]["mean"], default=None)
        if best:
            sec["summary"].append(f"Highest one-step test accuracy: {stat_text(best['stats']['test/onestep_acc_mean'])} "
                                  f"with {best['label']}.")
        if str(sweep) in made.sweep_figures:
            axis = (swept_keys(glist) or ["?"])[0]
            sec["figures"].append(_plain_figure(
                made.sweep_figures[str(sweep)],
                f"One-step test accuracy against {axis}: a line per combination of the other overrides, each point "
                "the mean over its seeds with a ±1 std bar (n: jobs).", f"{sweep.name} (drawn by the report)"))
        out.append(sec)
    return out


def _appendix_run(run: Run, shown: set[Path]) -> dict:
    results = [{"name": name, "rows": [r.cells() for r in rows]}
               for name, data in run.results.items() if (rows := nested_rows(data))]
    settings = []
    for name, data in run.results.items():
        if isinstance(data.get("settings"), dict):
            settings.append({"name": name, "rows": [[k, json.dumps(v) if not isinstance(v, str) else v]
                                                     for k, v in data["settings"].items()]})
    rest = [p for p in run.figures if p not in shown and not (p.parent / "surface.npz").exists()]
    return {"task": run.task, "label": run.label, "identity": run.identity, "path": str(run.path),
            "command": run.command, "results": results, "settings": settings, "config": run.config,
            "surfaces": [[str(p.relative_to(run.path)), f"{p.stat().st_size / 1024:.1f} KiB"] for p in run.surfaces
                         if "shards" not in p.relative_to(run.path).parts],
            "other_figures": [str(p.relative_to(run.path)) for p in rest]}


def render(runs: list[Run], title: str, max_figures: int = 80, made: Made | None = None) -> str:
    made = made or Made()
    body = sections(runs, made, max_figures)
    shown_names = {f["file"] for sec in body for f in sec["figures"]}
    shown = {p for r in runs for p in r.figures if f"{r.label}/{p.relative_to(r.path).as_posix()}" in shown_names}
    appendix = [_appendix_run(r, shown) for r in runs]
    interactive = any(sec["interactive"] for sec in body)
    plotly_js = ""
    if interactive:
        from plotly.offline import get_plotlyjs

        plotly_js = markupsafe.Markup(get_plotlyjs())  # the library's own code, inlined once: no network
    contents = [{"id": s["id"], "title": s["title"]} for s in body] + [{"id": "appendix", "title": "Appendix: runs, settings, raw numbers, versions"}]
    return _environment().get_template(TEMPLATE).render(
        title=title, written=datetime.now().isoformat(timespec="seconds"), runs=appendix, sections=body,
        contents=contents, plotly_js=plotly_js, max_figures=max_figures,
        versions=[[k, v] for k, v in versions().items()], commands=[r.command for r in runs if r.command])


def all_rows(runs: list[Run]) -> list[list]:
    """Every metric as (run, file, metric, mean, std, n): the logger's table."""
    out = []
    for run in runs:
        for name, data in run.results.items():
            for r in nested_rows(data):
                if _is_number(r.mean):
                    out.append([run.label, name, r.metric, float(r.mean),
                                None if r.std is None else float(r.std), None if r.n is None else float(r.n)])
    return out
