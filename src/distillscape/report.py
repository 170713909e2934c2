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
from .resume import read_refused
from .landing import STATS as LANDING_STATS
from .stats import interval_of, separated

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
    curves = next(iter(sorted((path / "csv").rglob("metrics.csv"))), None) if (path / "csv").is_dir() else None
    return Run(path, task, results, figures, surfaces, config, command, args, None, dataset, arch, missing=missing,
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
    "likeness": "Likeness statistics (bar: mean over images; whisker: for a rate its 95% Wilson interval, which "
                "stays within 0..1, else the std) of the distilled batch against "
                "random real images and noise, which set the scale; right: every distilled image's cosine to "
                "each real class mean (rows sorted by label; red: similar). Read: distilled bars near the real "
                "ones and far from noise mean real-looking images.",
    "confusion": "Row-normalised test confusion matrices (true class down, predicted across; a dark diagonal "
                 "is a good classifier): the directly trained model, the one-step models pooled, and their "
                 "ensemble. Read: which classes one step confuses that direct training does not.",
    "controls": "Left: test accuracy of networks trained from the landings' inits on random subsets of the training "
                "data, per subset size, beside the landings' interval (band). Right: agreement of the landing with "
                "its accuracy-matched direct-training checkpoint, with the subset networks, of those networks among "
                "themselves, and of the checkpoint with them (95% intervals over inits). Read: early training is "
                "encoded only if the first exceeds the second.",
    "mixing": "One-step test accuracy with k real images per class added to the distilled batch, and of the same "
              "real images alone (95% intervals over inits). Read: where the lines meet, the distilled batch adds "
              "nothing the real images do not carry.",
    "fair_baselines": "Train and test accuracy after one step on random real images with hard labels, with learned "
                      "soft labels and rates, on the distilled batch, and of direct training (95% intervals). Read: "
                      "the gap hard -> learned labels is what the labels carry, learned labels -> distilled what "
                      "the images carry.",
    "recognition": "Accuracy on the distilled images, each labelled by its label's argmax: left, of direct training "
                   "from the held-out inits, step by step, beside its test accuracy; right, of other architectures "
                   "trained directly, by epochs (95% intervals). Read: recognition that peaks early and falls later "
                   "marks an early-training summary.",
    "influence": "Change of test loss when the one step is taken without each distilled image (95% intervals over "
                 "inits), sorted. Read: above 0 the image helps.",
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


# what a run's figure was drawn from, by the figure's name (beside it in the run directory)
FIGURE_DATA = {"distilled": ("distilled.safetensors", "distilled.json"),
               "likeness": ("instances.json",), "neighbours": ("instances.json",), "confusion": ("instances.json",),
               "trajectory": ("landing_stats.json", "landing_stats.csv")}


def data_files(run: Run, path: Path) -> list[Path]:
    """The files a run's figure shows the numbers of, where they exist: a surface's surface.npz, the
    distilled batch's tensors, the instances' or the landing's results."""
    if (path.parent / "surface.npz").exists():
        return [path.parent / "surface.npz"]
    names = next((v for k, v in FIGURE_DATA.items() if path.stem.startswith(k)), ())
    here = [run.path / n for n in names if (run.path / n).exists()]
    source = run.results.get("instances.json", {}).get("source")
    if not here and isinstance(source, str):  # the instances' pages of the batch: the batch's own files
        here = [Path(source) / n for n in names if (Path(source) / n).exists()]
    return here


def _figure(run: Run, path: Path, caption: str | None = None) -> dict:
    rel = path.relative_to(run.path).as_posix()
    return {"src": _data_uri(path), "caption": caption or caption_of(path), "file": f"{run.label}/{rel}",
            "alt": f"{path.stem} of {run.identity}", "data": data_files(run, path)}


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


def class_coverage(instances: dict) -> tuple[list[str], list[str]]:
    """(every class, the classes no distilled image stands for) of an instances.json: an image stands for
    its soft label's most likely class (per_image[i].label); the classes are those of the batch's
    distilled.json (its `source`), else those its confusion matrices span."""
    meta = _read_json(Path(instances["source"]) / "distilled.json") if isinstance(instances.get("source"), str) else None
    classes = [str(c) for c in (meta or {}).get("classes") or []]
    if not classes and instances.get("confusion_matrices"):
        size = len(next(iter(instances["confusion_matrices"].values())))
        classes = [str(c) for c in range(size)]
    stood_for = {str(p.get("label")) for p in instances.get("per_image") or [] if isinstance(p, dict)}
    return classes, [c for c in classes if c not in stood_for]


def one_step_recall(instances: dict) -> dict[str, float]:
    """class -> recall of the pooled one-step models (the diagonal of their row-normalised test confusion
    matrix), where instances.json holds it."""
    matrices = instances.get("confusion_matrices") or {}
    key = next((k for k in matrices if "one-step models, pooled" in k), None)
    if key is None:
        return {}
    m = np.asarray(matrices[key], dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        return {}
    classes, _ = class_coverage(instances)
    names = classes if len(classes) == len(m) else [str(i) for i in range(len(m))]
    rows = m.sum(1)
    return {names[i]: float(m[i, i] / rows[i]) for i in range(len(m)) if rows[i] > 0}


def class_coverage_summary(instances: dict) -> list[str]:
    """Which classes no distilled image stands for, and how one step does on them."""
    classes, missing = class_coverage(instances)
    if not classes:
        return []
    if not missing:
        return [f"Every class has a distilled image that stands for it (its soft label's most likely class): "
                f"{len(classes)} of {len(classes)}."]
    recall = one_step_recall(instances)
    text = (f"No distilled image stands for class{'es' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(no image's soft label has {'them' if len(missing) > 1 else 'it'} as its most likely class): "
            f"{len(classes) - len(missing)} of {len(classes)} classes are covered.")
    if recall:
        others = [v for c, v in recall.items() if c not in missing]
        text += (" One step's test recall on " + ", ".join(f"{c}: {recall[c]:.2f}" for c in missing if c in recall)
                 + (f", against {np.mean(others):.2f} on the other classes." if others else "."))
    return [text]


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
    # certificates written before `objective` was recorded are all on the true task
    on = s.get("objective") or f"the true task ({s.get('examples')} training examples)"
    rule = (f"(a point is a minimum when ‖∇L‖ ≤ {s.get('grad_tol')} and none of its {s.get('certificate_eigs')} lowest "
            f"Ritz values θ has θ < −(residual + {s.get('negative_tol')} λ_max); Lanczos on the Hessian of {on})")
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
    if (estimate := s.get("return_estimate")):  # an RL run's: what of the return is certified
        out.append(f"Return estimate certified: {estimate}.")
    for key, what in (("lambda_max", "The top Hessian eigenvalue λ_max"), ("abs_ratio", "|λ_min| / λ_max")):
        d = (cert.get("landing_minus_init") or {}).get(key)
        if not d or not _is_number(d.get("low")) or not math.isfinite(d["low"]):
            continue
        differs = d["low"] > 0 or d["high"] < 0
        out.append(f"{what} at the landing minus at its init: {d['mean']:.3g} (95% interval [{d['low']:.3g}, "
                   f"{d['high']:.3g}], {d['n']} pairs): " + (("higher" if d["low"] > 0 else "lower") + " at the landing."
                                                          if differs else "no clear difference."))
    return out


def ci_text(d: dict | None, pct: bool = False) -> str:
    """A {"mean", "lo", "hi", "n"} summary as "0.873 [0.85, 0.90] (n=5)" (percent with pct)."""
    if not isinstance(d, dict) or not _is_number(d.get("mean")) or not math.isfinite(d["mean"]):
        return "–"
    f = (lambda v: f"{v:.1%}") if pct else (lambda v: f"{v:.3g}")
    lo, hi = d.get("lo"), d.get("hi")
    spread = f" [{f(lo)}, {f(hi)}]" if _is_number(lo) and math.isfinite(lo) else " [no interval]"
    return f"{f(d['mean'])}{spread}" + (f" (n={int(d['n'])})" if _is_number(d.get("n")) else "")


def _ci(d: dict | None) -> dict | None:
    """The 95% t-interval of a {"mean", "std", "n"} summary (a stat of landing_stats.json)."""
    if not isinstance(d, dict) or not all(_is_number(d.get(k)) for k in ("mean", "std", "n")) or not d["n"]:
        return None
    return interval_of(d["mean"], d["std"], int(d["n"]))


def trajectory_reading(stats: dict, kind: str = "distilled") -> dict | None:
    """Where a kind's landings agree most with direct training from their inits, from the per-landing
    statistics the landing table shows (agreement_peak_step, agreement_peak, agreement_last, agreement_drop),
    each with its 95% interval: {"text", "verdict"} with verdict early / not early / unlike / inconclusive."""
    st = landing_kinds(stats).get(kind, {})
    step, peak, last = _ci(st.get("agreement_peak_step")), _ci(st.get("agreement_peak")), _ci(st.get("agreement_last"))
    if not (step and peak and last):
        return None
    steps = (stats.get("trajectory") or {}).get("steps") or []
    last_step = steps[-1] if steps else None
    drop = _ci(st.get("agreement_drop"))
    text = (f"{kind.replace('_', ' ')}: per landing, agreement with direct training from the same init peaks at step "
            f"{ci_text(step)} with {ci_text(peak, True)} of test predictions, and is {ci_text(last, True)} at the last "
            f"checkpoint" + (f" (step {last_step})" if last_step is not None else "") + " (means with 95% intervals, "
            "the statistics of the landing table): ")
    falls = separated(drop, 0.0) > 0 if drop else separated(peak, last) > 0
    before_end = last_step is not None and separated(step, float(last_step)) < 0
    if _is_number(peak["hi"]) and peak["hi"] < 0.5:
        verdict, text = "unlike", text + "it shares few predictions with any checkpoint, so the landing is unlike direct training."
    elif falls and before_end:
        verdict = "early"
        text += ("the peak lies before the last checkpoint and agreement falls after it" +
                 (f" (by {ci_text(drop, True)})" if drop else "") + ", both beyond their intervals: the landing resembles "
                 "an earlier point of training than its end. Agreement is bounded by accuracy, so this alone cannot tell "
                 "an early point from any network of equal accuracy (the accuracy-matched controls can).")
    else:
        verdict = "inconclusive"
        why = [] if before_end else ["the peak step's interval reaches the last checkpoint"]
        why += [] if falls else ["the fall after the peak" + (f" ({ci_text(drop, True)})" if drop else "") + " does not exclude 0"]
        text += "inconclusive: " + " and ".join(why) + "."
    match = _ci(st.get("steps_to_match"))
    if match and match["mean"] > 0:
        text += f" Direct training needs {ci_text(match)} steps to reach the landing's train loss."
    return {"text": text, "verdict": verdict}


def trajectory_summary(stats: dict) -> list[str]:
    """trajectory_reading of every kind that has the trajectory statistics."""
    return [r["text"] for kind in landing_kinds(stats) if (r := trajectory_reading(stats, kind))]


def early_training(stats: dict, early: dict) -> tuple[list[str], list[list[str]]]:
    """The early-training section of one landing run (landing_stats.json, early.json): sentences and a table
    that use the same statistics. A reading is stated only where an interval separates it from its
    alternative; otherwise the sentence says inconclusive and why."""
    out, rows = [], []

    def row(name, d, what, pct=False):
        rows.append([name, ci_text(d, pct), what])

    traj = trajectory_reading(stats) if stats else None
    st = landing_kinds(stats or {}).get("distilled", {})
    for name in ("agreement_peak_step", "agreement_peak", "agreement_last", "agreement_drop"):
        if _ci(st.get(name)):
            row(f"trajectory: {name}", _ci(st[name]), LANDING_STATS.get(name, ""), pct=name != "agreement_peak_step")
    if traj:
        out.append(traj["text"])

    c = early.get("controls")
    control_verdict = None
    if c:
        ag, diff = c["agreement"], c["difference"]
        row("controls: landing test accuracy", c["landing_test_acc"], "one step on the distilled batch", True)
        row(f"controls: subset {c['chosen']:g} test accuracy", next(f["test_acc"] for f in c["fractions"] if f["fraction"] == c["chosen"]),
            f"{c['controls_per_init']} networks per init trained on random subsets (the size nearest the landings' accuracy)", True)
        row("controls: matched checkpoint step", c["checkpoint_step"], "the direct-training checkpoint nearest the landing's test accuracy")
        for k, what in (("landing_checkpoint", "landing vs that checkpoint (same init)"),
                        ("landing_controls", "landing vs the subset controls (same init)"),
                        ("controls_controls", "the controls among themselves"),
                        ("checkpoint_controls", "that checkpoint vs the controls")):
            row(f"controls: agreement {k.replace('_', ' vs ')}", ag[k], what, True)
        d = diff["checkpoint_minus_controls"]
        row("controls: checkpoint − controls", d, "landing's agreement with its checkpoint minus with the controls", True)
        control_verdict = {1: "early", -1: "not early"}.get(separated(d, 0.0), "inconclusive")
        acc_gap = separated(c["landing_test_acc"], next(f["test_acc"] for f in c["fractions"] if f["fraction"] == c["chosen"]))
        text = (f"Against accuracy-matched controls ({c['inits']} inits): the landing agrees with its accuracy-matched "
                f"direct-training checkpoint (step {ci_text(c['checkpoint_step'])}) on {ci_text(ag['landing_checkpoint'], True)} "
                f"of test predictions, with networks trained on {c['chosen']:g} of the training data from the same init on "
                f"{ci_text(ag['landing_controls'], True)}, and those networks agree among themselves on "
                f"{ci_text(ag['controls_controls'], True)}; the difference checkpoint − controls is {ci_text(d, True)}: ")
        text += {"early": "the landing shares more with early training than accuracy alone explains.",
                 "not early": "the landing shares more with networks of equal accuracy that are not early training than "
                              "with early training.",
                 "inconclusive": "the interval includes 0, so agreement does not tell early training from equal accuracy."}[control_verdict]
        if acc_gap:
            text += (" Caution: the controls' accuracy interval does not overlap the landings' "
                     "(analysis.control_fractions can bring it closer).")
        out.append(text)

    m = early.get("mixing")
    if m:
        for r in m["rows"]:
            row(f"mixing k={r['per_class']}: distilled + real test accuracy", r["mixed"]["test_acc"],
                f"{r['real_images']} real images added (scaled one-hot labels, the distilled rate)", True)
            if r.get("real_alone"):
                row(f"mixing k={r['per_class']}: real alone", r["real_alone"]["test_acc"], f"hard labels, rate {r['real_lr']:.3g} tuned on val", True)
                row(f"mixing k={r['per_class']}: difference", r["mixed_minus_alone"]["test_acc"], "distilled + real minus real alone", True)
        parts = []
        for r in m["rows"]:
            if r.get("mixed_minus_alone"):
                d = r["mixed_minus_alone"]["test_acc"]
                word = {1: "adds to", -1: "takes from", 0: "makes no difference beyond its interval to"}[separated(d, 0.0)]
                parts.append(f"at {r['per_class']} per class the distilled batch {word} the real images ({ci_text(d, True)})")
        if parts:
            out.append("Mixing real images into the distilled batch: " + "; ".join(parts) + ".")

    f = early.get("fair_baselines")
    if f:
        for arm, d in f["arms"].items():
            row(f"fair: {arm.replace('_', ' ')} train accuracy", d["train_acc"], "", True)
            row(f"fair: {arm.replace('_', ' ')} test accuracy", d["test_acc"], "", True)
        for split in ("train_acc", "test_acc"):
            dd = f["direct"][split]
            rows.append([f"fair: direct training {split.replace('_', ' ')}", f"{dd['mean']:.1%} ± {dd['std']:.1%} "
                         f"(mean ± std, {dd['n']} seeds); 95% {ci_text(dd, True)}", "trained on the whole training split"])
        row("fair: what the labels carry", f["labels_carry"]["test_acc"], "learned − hard labels, same real images (test accuracy)", True)
        row("fair: what the images carry", f["images_carry"]["test_acc"], "distilled − learned labels on real images (test accuracy)", True)
        lab, img = f["labels_carry"]["test_acc"], f["images_carry"]["test_acc"]
        say = {1: "raise", -1: "lower", 0: "do not change beyond their interval"}
        out.append(f"Fair baselines ({f['images']} random real images): learned soft labels and rates {say[separated(lab, 0.0)]} "
                   f"one-step test accuracy over hard labels ({ci_text(lab, True)}); the distilled images "
                   f"{say[separated(img, 0.0)]} it over real images with learned labels ({ci_text(img, True)}). Direct "
                   f"training: {f['direct']['test_acc']['mean']:.1%} ± {f['direct']['test_acc']['std']:.1%} test accuracy "
                   f"over {f['direct_seeds']} seeds.")

    r = early.get("recognition")
    if r:
        along = r["along_training"]
        for a in along:
            row(f"recognition: step {a['step']} on the distilled images", a["distilled_acc"], f"test set: {ci_text(a['test_acc'], True)}", True)
        for a in r["archs"]:
            row(f"recognition: {a['arch']} after {a['epochs']} epochs", a["distilled_acc"], f"test set: {ci_text(a['test_acc'], True)}", True)
        best = max(along, key=lambda a: a["distilled_acc"]["mean"] if _is_number(a["distilled_acc"]["mean"]) else -1)
        last = along[-1]
        falls = separated(best["distilled_acc"], last["distilled_acc"])
        out.append(f"Recognition (labels' argmax): along direct training the distilled images are recognised best at step "
                   f"{best['step']} ({ci_text(best['distilled_acc'], True)}) and at {ci_text(last['distilled_acc'], True)} "
                   f"at the last checkpoint (step {last['step']}): " +
                   ("recognition falls as training goes on, beyond the intervals (as an early-training summary would)."
                    if falls > 0 else "no fall after the best step beyond the intervals: later networks recognise them as "
                    "well as earlier ones."))

    i = early.get("influence")
    if i:
        n = len(i["images"])
        rows.append(["influence: images that help / harm", f"{i['helpful']} / {i['harmful']} of {n}",
                     "test loss without the image rises / falls beyond its 95% interval"])
        out.append(f"Leave-one-out influence ({i['inits']} inits): removing {i['helpful']} of the {n} distilled images raises "
                   f"test loss beyond its interval, removing {i['harmful']} lowers it.")

    # the reading: from the analysis that separates early training from equal accuracy
    if control_verdict == "early" and (traj is None or traj["verdict"] == "early"):
        out.insert(0, "Reading: distilled data encodes early training — the landing agrees with its accuracy-matched "
                      "early checkpoint more than with accuracy-matched networks that are not early training, beyond "
                      "the 95% intervals.")
    elif control_verdict == "not early":
        out.insert(0, "Reading: not early training — the landing agrees less with its accuracy-matched checkpoint than "
                      "with accuracy-matched networks trained on random subsets, beyond the 95% intervals.")
    else:
        why = ("no accuracy-matched controls were run (analysis.early=[controls]), and agreement with checkpoints alone "
               "cannot tell an early point from any network of equal accuracy" if control_verdict is None else
               "the landing's agreement with its accuracy-matched checkpoint is not separated from its agreement with "
               "accuracy-matched controls" if control_verdict == "inconclusive" else
               "the controls point to early training but the trajectory's peak is not separated from the end of training")
        out.insert(0, f"Reading: inconclusive — {why}.")
    return out, rows


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
    curves: dict[str, Path] = field(default_factory=dict)        # run directory -> its learning curves figure
    out: Path | None = None                                      # the report's directory (vtk paths are relative to it)


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("distillscape", "templates"),
                              autoescape=jinja2.select_autoescape(("html", "html.j2"), default=True),
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _data_uri(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:{MIME[path.suffix.lower()]};base64,{data}"


def _plain_figure(path: Path, caption: str, name: str, data: list[Path] | None = None) -> dict:
    return {"src": _data_uri(path), "caption": caption, "file": name, "alt": caption.split(":")[0],
            "data": list(data or [])}


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
    refused = [f"{sweep.name}: {line}" for sweep in dict.fromkeys(r.sweep for r in runs if r.sweep is not None)
               for line in refused_jobs(sweep)]
    if refused or any(r.missing for r in runs):
        sec = _section("missing", "Missing or failed parts",
                       "Parts of these runs that were started and did not finish, and jobs of a multirun that were "
                       "refused: they are not in the sections below.")
        sec["summary"] = refused + [f"{r.label}: {line}" for r in runs for line in r.missing]
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
        for run in runs:
            if str(run.path) in made.curves:
                sec["figures"] += take([_plain_figure(
                    made.curves[str(run.path)], f"Learning curves of the distillation {run.identity}: every "
                    "logged metric against the outer step, a panel per kind (losses, accuracies, the learned inner "
                    "learning rate, the rest). Read: a validation accuracy still rising at the end means more "
                    "outer steps would help.", f"{run.label}/{run.curves.relative_to(run.path).as_posix()} "
                    "(drawn by the report)", [run.curves])])
            elif run.task == "distill" and "test/onestep_acc_mean" in _metrics(run):
                sec["notes"].append(f"No learning curves of {run.identity}: the distillation ran without a "
                                    "metrics logger (logger=csv, in a study study.logger=csv, keeps them in "
                                    "csv/metrics.csv).")
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
                                                 "real training split, mean ± std over images; rates as images/total. "
                                                 "An image's class (\"its class\") is its soft label's most likely "
                                                 "class: the red bar beside it in the distilled batch's figure.",
                                      "header": header, "rows": rows})
                sec["summary"] += likeness_summary(inst) + class_coverage_summary(inst)
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
                    "points off it (legend: the share of the point's offset from the centre that lies off the plane); "
                    "a point more than half off the plane is not drawn but named under the panel's title.",
                    f"{g.key} (drawn by the report)", list(g.surfaces.values()))])
            for c, p in g.surfaces.items():
                if str(p) in made.interactive:
                    vtk = made.vtk.get(str(p))
                    sec["interactive"].append({
                        "id": f"surface-{len(sec['interactive']) + 1}", "figure": made.interactive[str(p)],
                        "caption": f"Interactive: the surface around {c} of {g.run.identity} in 3-D (drag to turn, "
                                   "scroll to zoom; the menu switches the cost; the legend names the marked "
                                   "points, which sit on the surface at their projections).",
                        "data": [p] + ([made.out / vtk] if vtk and made.out else [])})
        out.append(sec)

    # 5 early training
    sec = _section("trajectory", "Does the distilled data only encode early training?",
                   "The landing against direct training from the same init, against networks of equal accuracy "
                   "trained on small real subsets, with real images mixed in, against fair baselines, and image by "
                   "image (Yang et al., ICML 2024, in one step). Every number: mean [95% interval] (n).")
    for run in runs:
        stats, early = run.results.get("landing_stats.json"), run.results.get("early.json") or {}
        if (stats and stats.get("trajectory")) or early:
            lines, rows = early_training(stats or {}, early)
            sec["summary"] += [f"{run.identity}: {line}" if len(runs) > 1 else line for line in lines]
            if rows:
                sec["tables"].append({"caption": f"The early-training statistics of {run.identity}: the sentences above "
                                                 "use these values (mean [95% interval] (n)).",
                                      "header": ["statistic", "value", "what it is"], "rows": rows})
        sec["figures"] += take([_figure(run, p, f"{CAPTIONS[k]} ({run.identity})")
                                for k in ("trajectory", "controls", "mixing", "fair_baselines", "recognition", "influence")
                                for p in _by_stem(run, k)])
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


PLOTLY_BUNDLE = "vendor/plotly-gl3d.min.js"  # plotly.js's 3-D partial bundle, 1.8 of the full 4.8 MB (vendor/README.md)


@functools.lru_cache(maxsize=1)
def plotly_js() -> str:
    """The plotly.js the page inlines: the package's vendored gl3d bundle (every trace the report draws:
    surface, scatter3d)."""
    import importlib.resources

    return (importlib.resources.files("distillscape") / PLOTLY_BUNDLE).read_text(encoding="utf-8")


def study_command(runs: list[Run]) -> str | None:
    """The distillscape-study command line that made these runs, when they are the stages of one study: their
    common parent directory holds the study's Hydra record (.hydra/config.yaml with task_name: study)."""
    parents = {r.path.resolve().parent for r in runs}
    if len(parents) != 1:
        return None
    root = parents.pop() / ".hydra"
    try:
        config = yaml.safe_load((root / "config.yaml").read_text())
        overrides = yaml.safe_load((root / "overrides.yaml").read_text()) or []
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(config, dict) or config.get("task_name") != "study" or not isinstance(overrides, list):
        return None
    return " ".join(["distillscape-study", *(_quote(str(a)) for a in overrides)])


def _links(files: list[Path], out_dir: Path | None) -> list[dict]:
    """A figure's data files as links: relative to the page where it is written (the study directory moves
    as a whole), else absolute."""
    import os

    out = []
    names = [Path(f).name for f in files]
    for f in files:
        href = Path(os.path.relpath(Path(f).resolve(), Path(out_dir).resolve())).as_posix() if out_dir else \
            Path(f).resolve().as_uri()
        # two centres' surface.npz: named with their directory
        name = Path(f).name if names.count(Path(f).name) == 1 else f"{Path(f).parent.name}/{Path(f).name}"
        out.append({"href": href, "name": name})
    return out


def render(runs: list[Run], title: str, max_figures: int = 80, made: Made | None = None,
           out_dir: Path | None = None) -> str:
    """The page. `out_dir`: where it is written (links to the figures' data files are relative to it)."""
    made = made or Made()
    body = sections(runs, made, max_figures)
    for sec in body:
        for fig in [*sec["figures"], *sec["interactive"]]:
            fig["data"] = _links(fig.get("data") or [], out_dir)
    shown_names = {f["file"] for sec in body for f in sec["figures"]}
    shown = {p for r in runs for p in r.figures if f"{r.label}/{p.relative_to(r.path).as_posix()}" in shown_names}
    appendix = [_appendix_run(r, shown) for r in runs]
    interactive = any(sec["interactive"] for sec in body)
    # the library's own code, inlined once: no network
    js = markupsafe.Markup(plotly_js()) if interactive else ""
    contents = [{"id": s["id"], "title": s["title"]} for s in body] + [{"id": "appendix", "title": "Appendix: runs, settings, raw numbers, versions"}]
    return _environment().get_template(TEMPLATE).render(
        title=title, written=datetime.now().isoformat(timespec="seconds"), runs=appendix, sections=body,
        contents=contents, plotly_js=js, max_figures=max_figures, study_command=study_command(runs),
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
