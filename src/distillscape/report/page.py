"""The page: its sections in order of the research questions, the appendix, and rendering the Jinja2
template (templates/report.html.j2, package data) into one self-contained HTML file."""
from __future__ import annotations

import functools
import importlib.metadata
import json
import platform
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import jinja2
import markupsafe
import yaml

from ..surface import SURFACE_FILE, read_surface
from .basins import basin_pivot, basin_sentences
from .certificate import certificate_pivot, certificate_summary
from .early import early_training
from .figures import CAPTIONS, Made, _by_stem, _figure, _plain_figure, plotly_js
from .generalise import accuracy_summary, headline, return_summary
from .instances import class_coverage_summary, likeness_pivot, likeness_summary
from .landing import landing_pivot, landing_summary
from .reading import RunRecord, _is_path_override, _metrics, _override_kv, _quote, refused_jobs
from .surfaces import cost_agreement, surface_groups, surface_summary
from .sweeps import SWEEP_METRICS, sweep_groups, swept_keys
from .tables import nested_rows
from .text import stat_text


LIBRARIES = ("distillscape", "torch", "torchvision", "lightning", "torchmetrics", "hydra-core", "omegaconf",
             "numpy", "matplotlib", "safetensors", "scikit-learn", "wandb")


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


TEMPLATE = "report.html.j2"  # in the package's templates/ (package data)


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("distillscape", "templates"),
                              autoescape=jinja2.select_autoescape(("html", "html.j2"), default=True),
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _section(id: str, title: str, question: str) -> dict:
    return {"id": id, "title": title, "question": question, "summary": [], "tables": [], "figures": [],
            "interactive": [], "notes": []}


def sections(runs: list[RunRecord], made: Made, max_figures: int) -> list[dict]:
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
                   "and the spectral density (stochastic Lanczos quadrature); and whether a curved low-loss path "
                   "joins the landing and the direct minimum (one basin or two).")
    for run in runs:
        if (cert := run.results.get("certificate.json")) and cert.get("groups"):
            header, rows = certificate_pivot(cert)
            sec["tables"].append({"caption": f"Curvature certificate of {run.identity}: verdicts as k/n [Wilson 95% "
                                             "interval]; the statistics as mean ± std over the points.",
                                  "header": header, "rows": rows})
            sec["summary"] += certificate_summary(cert)
            sec["figures"] += take([_figure(run, p, f"{CAPTIONS['density']} ({run.identity})")
                                    for p in _by_stem(run, "density")])
        if (curve := (run.results.get("landing_stats.json") or {}).get("curve")):
            header, rows = basin_pivot(curve)
            sec["tables"].append({"caption": f"One basin or two ({run.identity}): loss barriers landing -> direct "
                                             "minimum along the straight line and the trained curve, mean [95% "
                                             "interval] (n landings).", "header": header, "rows": rows})
            sec["summary"] += basin_sentences(curve)
            sec["figures"] += take([_figure(run, p, f"{CAPTIONS['curve']} ({run.identity})")
                                    for p in _by_stem(run, "curve")])
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
                sec["summary"] += surface_summary(f"{c} ({g.key})", surf) + cost_agreement(f"{c} ({g.key})", surf)
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
                   "trained on small real subsets, with real images mixed in, against fair baselines, image by "
                   "image, and by the true task's curvature along direct training (Yang et al., ICML 2024, in one step). Every number: mean [95% interval] (n).")
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
                                for k in ("trajectory", "controls", "mixing", "fair_baselines", "recognition", "influence",
                                          "curvature")
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


def _appendix_run(run: RunRecord, shown: set[Path]) -> dict:
    results = [{"name": name, "rows": [r.cells() for r in rows]}
               for name, data in run.results.items() if (rows := nested_rows(data))]
    settings = []
    for name, data in run.results.items():
        if isinstance(data.get("settings"), dict):
            settings.append({"name": name, "rows": [[k, json.dumps(v) if not isinstance(v, str) else v]
                                                     for k, v in data["settings"].items()]})
    rest = [p for p in run.figures if p not in shown and not (p.parent / SURFACE_FILE).exists()]
    return {"task": run.task, "label": run.label, "identity": run.identity, "path": str(run.path),
            "command": run.command, "results": results, "settings": settings, "config": run.config,
            "surfaces": [[str(p.relative_to(run.path)), f"{p.stat().st_size / 1024:.1f} KiB"] for p in run.surfaces
                         if "shards" not in p.relative_to(run.path).parts],
            "other_figures": [str(p.relative_to(run.path)) for p in rest]}


def study_command(runs: list[RunRecord]) -> str | None:
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


def render(runs: list[RunRecord], title: str, max_figures: int = 80, made: Made | None = None,
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
