"""The atlas's cross-method table (experiment=atlas, issue 24): one row per job of a multirun of studies
(method, dataset, architecture, evaluation protocol) with, each beside its 95% interval, the protocol's
test accuracy over held-out inits, the curvature certificate's verdict counts of the landings, the
straight-line barrier from the landing to the direct minimum and the early-training reading (the
accuracy-matched controls of analysis.early=[controls]); sentences comparing the jobs, each stating its
statistic and interval and "inconclusive" where the intervals overlap; and the jobs or stages that are
missing, listed.

It only reads what the jobs wrote (distill/metrics.json, landing/landing_stats.json, landing/certificate.json,
landing/early.json, config_resolved.yaml); `distillscape-report` on the multirun directory writes the page
(tasks/report.py), its figures come from `plots.interval_figure`.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..resume import read_refused
from ..stats import interval_of, separated, wilson_interval
from .figures import _data_uri
from .page import _environment
from .text import ci_text

GRID_KEYS = ("study.method", "study.dataset", "study.arch", "study.protocol")  # what names a job of the atlas
VERDICTS = ("minimum", "saddle", "not_stationary")
COLUMNS = ["job", "method", "dataset", "arch", "protocol", "test accuracy [95%]", "inits",
           "landings: minima / saddles / not stationary (k/n [Wilson 95%] of minima)",
           "barrier landing → direct minimum [95%]", "early training: checkpoint − controls agreement [95%]"]


@dataclass
class AtlasJob:
    """What one job of the atlas shows; None where its stage did not run or write it (see `missing`)."""
    path: Path
    number: str
    method: str | None
    dataset: str | None
    arch: str | None
    protocol: str | None
    accuracy: dict | None = None      # {"mean", "lo", "hi", "n"}: the protocol's test accuracy over held-out inits
    onestep: dict | None = None       # the same for one step (beside another protocol, from the same inits)
    verdicts: dict | None = None      # verdict -> {"k", "n", "low", "high"}: the certified landings
    barrier: dict | None = None       # {"mean", "lo", "hi", "std", "n"}: barrier_to_direct over landings
    early: dict | None = None         # {"mean", "lo", "hi", "n"}: checkpoint − controls agreement
    missing: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "/".join(str(x) for x in (self.method, self.dataset, self.arch, self.protocol))


def _json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None  # absent or half-written: the job's row shows "–" and the missing list says which
    return data if isinstance(data, dict) else None


def is_atlas(path: Path) -> bool:
    """A multirun directory whose jobs are studies (each job directory holds study stages)."""
    path = Path(path)
    return (path / "multirun.yaml").exists() and any(
        (d / "study.json").exists() or (d / "distill").is_dir() for d in path.iterdir() if d.is_dir())


def _job_config(job: Path) -> dict:
    """The job's resolved config (config_resolved.yaml's `config`, or Hydra's .hydra/config.yaml)."""
    for path, key in ((job / "config_resolved.yaml", "config"), (job / ".hydra" / "config.yaml", None)):
        if path.exists():
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError:
                continue
            return (data.get(key) if key else data) or {}
    return {}


def _accuracy(metrics: dict, protocol: str) -> dict | None:
    """The test accuracy of `protocol` as distill wrote it: mean, its t-interval over the held-out inits, n."""
    name = "onestep" if protocol == "one_step" else protocol
    keys = [f"test/{name}_acc_{k}" for k in ("mean", "ci95_low", "ci95_high")] + [f"test/{name}_inits"]
    if not all(isinstance(metrics.get(k), (int, float)) for k in keys):
        return None
    return {"mean": metrics[keys[0]], "lo": metrics[keys[1]], "hi": metrics[keys[2]], "n": int(metrics[keys[3]])}


def read_job(job: Path) -> AtlasJob:
    cfg = _job_config(job)
    study = cfg.get("study") or {}
    out = AtlasJob(job, job.name, study.get("method"), study.get("dataset"), study.get("arch"), study.get("protocol"))
    stages = list((study.get("stages") or {}).keys()) or ["distill", "landing"]
    for stage in stages:
        if (study.get("tasks") or {}).get(stage) == "none":
            continue
        if not (job / stage / "study_stage.json").exists():
            out.missing.append(f"{stage} not finished (still running, or stopped: rerunning the command resumes it)"
                               if (job / stage).is_dir() else f"{stage} did not run")
    if (metrics := _json(job / "distill" / "metrics.json")) is not None and out.protocol:
        out.accuracy = _accuracy(metrics, out.protocol)
        out.onestep = _accuracy(metrics, "one_step")
        if out.accuracy is None:
            out.missing.append(f"distill/metrics.json has no test accuracy for protocol {out.protocol}")
    stats = _json(job / "landing" / "landing_stats.json")
    if stats is not None:
        b = ((stats.get("kinds") or {}).get("distilled") or {}).get("barrier_to_direct")
        if isinstance(b, dict) and all(isinstance(b.get(k), (int, float)) for k in ("mean", "std", "n")):
            out.barrier = interval_of(b["mean"], b["std"], int(b["n"]))
        else:
            out.missing.append("landing: no barrier to the direct minimum")
    cert = _json(job / "landing" / "certificate.json")
    if cert is not None:
        counts = ((cert.get("groups") or {}).get("landing") or {}).get("counts") or {}
        # the interval from k and n here (not copied from the file): the table's one rule for a rate
        out.verdicts = {v: {"k": int(c["k"]), "n": int(c["n"]), **dict(zip(("low", "high"), wilson_interval(c["k"], c["n"])))}
                        for v, c in counts.items() if v in VERDICTS}
    elif stats is not None:
        out.missing.append("certificate: not run (analysis.certificate=true in the landing's overrides runs it)")
    early = _json(job / "landing" / "early.json")
    controls = (early or {}).get("controls")
    if controls:
        d = controls["difference"]["checkpoint_minus_controls"]
        out.early = {k: d[k] for k in ("mean", "lo", "hi", "n")}
        chosen = next((f["test_acc"] for f in controls.get("fractions", []) if f.get("fraction") == controls.get("chosen")), None)
        if chosen and controls.get("landing_test_acc"):
            # the controls stand for "equal accuracy": where their accuracy interval misses the landings', say so
            out.early["matched"] = separated(controls["landing_test_acc"], chosen) == 0
    elif stats is not None:
        out.missing.append("early training: no controls (analysis.early=[controls] in the landing's overrides runs them)")
    return out


def expected_grid(sweep: Path) -> list[dict[str, str]]:
    """The jobs the multirun was asked for: its sweeper's parameters, with the command line's own values of the
    same keys (they replace the experiment's), as one dict of GRID_KEYS values per job."""
    multirun = yaml.safe_load((sweep / "multirun.yaml").read_text()) or {}
    hydra = multirun.get("hydra") or {}
    params = {k: str(v) for k, v in ((hydra.get("sweeper") or {}).get("params") or {}).items()}
    for o in (hydra.get("overrides") or {}).get("task") or []:
        key, _, value = str(o).partition("=")
        if key in GRID_KEYS:
            params[key] = value
    study = multirun.get("study") or {}
    values = [params.get(k, str(study.get(k.split(".", 1)[1], ""))).split(",") for k in GRID_KEYS]
    return [dict(zip(GRID_KEYS, combo)) for combo in itertools.product(*values)]


def read_atlas(sweep: Path) -> tuple[list[AtlasJob], list[str]]:
    """Every job of an atlas directory (in job order) and the lines naming what is missing: jobs asked for
    that have no directory, jobs refused at submission, and each job's unfinished stages and absent analyses."""
    sweep = Path(sweep)
    dirs = sorted((d for d in sweep.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name))
    jobs = [read_job(d) for d in dirs]
    missing = [f"job {j.number} ({j.name}): {m}" for j in jobs for m in j.missing]
    have = {(j.method, j.dataset, j.arch, j.protocol) for j in jobs}
    for want in expected_grid(sweep):
        if tuple(want[k] for k in GRID_KEYS) not in have:
            missing.append(f"{'/'.join(want[k] for k in GRID_KEYS)}: no job directory (not run yet, or it failed "
                           f"before starting; rerun the command with hydra.sweep.dir={sweep})")
    missing += [f"job {r.get('num')} refused: {r.get('reason')}" for r in read_refused(sweep)["jobs"]]
    return jobs, missing


# -- text ---------------------------------------------------------------------------------------------
def ci(d: dict | None, pct: bool = False) -> str:
    """"0.873 [0.85, 0.90]" (percent with pct); "–" where there is no value. The table's n has its own column."""
    return ci_text({k: v for k, v in (d or {}).items() if k != "n"} or None, pct)


def minima_rate(job: AtlasJob) -> dict | None:
    """The fraction of certified landings that are minima as {"mean", "lo", "hi", "n"} (Wilson interval)."""
    c = (job.verdicts or {}).get("minimum")
    return {"mean": c["k"] / c["n"], "lo": c["low"], "hi": c["high"], "n": c["n"]} if c and c["n"] else None


def verdict_text(job: AtlasJob) -> str:
    if not job.verdicts:
        return "–"
    counts = " / ".join(str(job.verdicts[v]["k"]) if v in job.verdicts else "–" for v in VERDICTS)
    m = job.verdicts.get("minimum")
    return f"{counts} of {m['n']} [{m['low']:.2f}, {m['high']:.2f}]" if m else counts


def early_text(d: dict | None) -> str:
    if not d:
        return "–"
    word = {1: "early", -1: "not early", 0: "inconclusive"}[separated(d, 0.0)]
    return f"{ci(d, pct=True)}: {word}" + (" (controls' accuracy not matched)" if d.get("matched") is False else "")


def table_rows(jobs: list[AtlasJob]) -> list[list[str]]:
    return [[j.number, str(j.method), str(j.dataset), str(j.arch), str(j.protocol), ci(j.accuracy, pct=True),
             str(j.accuracy["n"]) if j.accuracy else "–", verdict_text(j), ci(j.barrier), early_text(j.early)]
            for j in jobs]


def _compare(a: tuple[str, dict], b: tuple[str, dict], what: str, pct: bool, higher: str, lower: str) -> str:
    """One sentence on two labelled intervals: which is higher where they are separated, else inconclusive."""
    (na, da), (nb, db) = a, b
    side = separated(da, db)
    if side == 0:
        return f"{what}: {na} {ci(da, pct)} and {nb} {ci(db, pct)}: inconclusive, the 95% intervals overlap."
    return f"{what}: {na} {ci(da, pct)} is {higher if side > 0 else lower} than {nb} {ci(db, pct)}, beyond the 95% intervals."


def sentences(jobs: list[AtlasJob]) -> list[str]:
    """The comparisons the table supports, each with the statistics and 95% intervals it rests on."""
    out = []
    groups: dict[tuple, list[AtlasJob]] = {}
    for j in jobs:
        groups.setdefault((j.dataset, j.arch, j.protocol), []).append(j)
    for (dataset, arch, protocol), group in groups.items():
        for what, get, pct, hi, lo in (("test accuracy", lambda j: j.accuracy, True, "higher", "lower"),
                                       ("barrier to the direct minimum", lambda j: j.barrier, False, "higher", "lower"),
                                       ("fraction of landings certified minima", minima_rate, False, "higher", "lower")):
            have = sorted(((j.method, get(j)) for j in group if get(j)), key=lambda t: -t[1]["mean"])
            if len(have) >= 2:  # the top two: is the highest separated from the next?
                out.append(_compare(have[0], have[1], f"{what} ({dataset}, {arch}, {protocol}), the two highest methods",
                                    pct, hi, lo))
    by_method: dict[tuple, dict[str, AtlasJob]] = {}
    for j in jobs:
        by_method.setdefault((j.method, j.dataset, j.arch), {})[str(j.protocol)] = j
    for (method, dataset, arch), protocols in by_method.items():
        if "one_step" in protocols and len(protocols) > 1:
            for p, j in protocols.items():
                if p != "one_step" and j.accuracy and protocols["one_step"].accuracy:
                    out.append(_compare((p, j.accuracy), ("one step", protocols["one_step"].accuracy),
                                        f"test accuracy of {method} ({dataset}, {arch}) by protocol", True, "higher", "lower"))
    for j in jobs:
        if j.barrier and math.isfinite(j.barrier.get("lo", math.nan)):
            side = separated(j.barrier, 0.0)
            # a barrier is >= 0 by construction; 0 on every landing is a finding (each straight path stays on or
            # under the line joining its end losses), not an interval that merely reaches 0
            flat = j.barrier["mean"] == 0 and j.barrier["hi"] <= 0
            out.append(f"job {j.number} ({j.name}): barrier from the landing to the direct minimum {ci(j.barrier)} "
                       f"over {j.barrier['n']} landings: " + (
                           "0 on every landing: linearly connected (no straight path rises above its end losses)."
                           if flat else "above 0 beyond its 95% interval (not linearly connected)."
                           if side > 0 else "inconclusive, the interval reaches 0."
                           if side == 0 else "below 0 beyond its interval."))
        if j.early:
            word = {1: "more than accuracy-matched controls: early training",
                    -1: "less than accuracy-matched controls: not early training",
                    0: "not separated from the controls: inconclusive"}[separated(j.early, 0.0)]
            out.append(f"job {j.number} ({j.name}): agreement with its accuracy-matched direct-training checkpoint minus "
                       f"with the controls {ci(j.early, pct=True)} over {j.early['n']} inits, {word}."
                       + (" Caution: the controls' test accuracy interval does not overlap the landings', so they do not "
                          "stand for equal accuracy (analysis.control_fractions can bring it closer)."
                          if j.early.get("matched") is False else ""))
    return out


def figure_series(jobs: list[AtlasJob], get) -> tuple[list[str], dict[str, list[dict | None]]]:
    """(x labels: method per dataset/arch, protocol -> the interval of each x) for `plots.interval_figure`."""
    xs = list(dict.fromkeys(f"{j.method}\n{j.dataset}/{j.arch}" for j in jobs))
    series: dict[str, list[dict | None]] = {}
    for j in jobs:
        series.setdefault(str(j.protocol), [None] * len(xs))[xs.index(f"{j.method}\n{j.dataset}/{j.arch}")] = get(j)
    return xs, series


def as_json(jobs: list[AtlasJob], missing: list[str]) -> dict:
    """The table's numbers (atlas.json beside the page)."""
    keys = ("number", "method", "dataset", "arch", "protocol", "accuracy", "onestep", "verdicts", "barrier", "early", "missing")
    return {"jobs": [{k: getattr(j, k) for k in keys} | {"path": str(j.path)} for j in jobs], "missing": missing}


def render(sweep: Path, jobs: list[AtlasJob], missing: list[str], figures: list[tuple[Path, str]], title: str) -> str:
    """The atlas page (templates/atlas.html.j2): the table, what is missing, the sentences and the figures
    ((png path, caption), embedded), one self-contained file."""
    figs = [{"src": _data_uri(p), "caption": c} for p, c in figures]
    return _environment().get_template("atlas.html.j2").render(
        title=title, sweep=str(sweep), jobs=len(jobs), header=COLUMNS, rows=table_rows(jobs), missing=missing,
        sentences=sentences(jobs), figures=figs)
