"""distillscape-report: the output directories of a study (or a multirun directory, standing for its
jobs) -> one self-contained HTML file, and the same content to the configured logger (W&B: figures, a
table of every metric, the distilled artifact; other loggers: the scalar metrics).

Besides reading the runs (`report`), it draws what the page shows but no run drew (`plots`): each
landscape job's surfaces as one grid with a colour scale per cost, each surface as an interactive 3-D
figure and as VTK files for ParaView, a distillation's learning curves (its csv/metrics.csv, logger=csv), and a
multirun's headline metric against its swept setting."""
from __future__ import annotations

import json
from pathlib import Path

import hydra
import matplotlib.pyplot as plt
from omegaconf import DictConfig, OmegaConf

from ..artifacts import atomic_write, write_json
from ..config import ConfigError, settings
from ..plots import interval_figure, learning_curves_figure, surface_3d, surface_grid_figure, surface_vtk, sweep_figure
from ..report import atlas
from ..report import (Made, all_rows, cost_metrics, read_runs, read_surface, render, surface_groups,
                      sweep_groups, swept_keys)
from ..resume import check_owner
from ..tracking import log_report
from .common import console_script, CONF_DIR, build_logger, console, start_job, task



def draw(runs, out: Path) -> Made:
    """The report's own figures, written under <out>/figures and <out>/vtk."""
    made = Made(out=out)
    for run in runs:
        if run.task == "distill" and run.curves is not None:
            path = out / "figures" / f"curves_{run.path.name}.png"
            plt.close(learning_curves_figure(run.curves, f"learning curves: {run.identity}", path))
            made.curves[str(run.path)] = path
    for i, group in enumerate(surface_groups(runs), 1):
        loaded = {centre: read_surface(p) for centre, p in group.surfaces.items()}
        # the costs only (losses; an RL task's return): the 2x2 of centres x costs; accuracies are in the
        # 3-D figures' menus
        metrics = list(dict.fromkeys(m for s in loaded.values() for m in cost_metrics(s)))
        stem = f"surfaces_{i:02d}_{group.run.path.name}" + (f"_{group.name.replace('/', '_')}" if group.name else "")
        title = f"cost surfaces: {group.run.identity}" + (f" / {group.name}" if group.name else "")
        if metrics:  # a surface of accuracies only has no grid of costs (its 3-D view below has them)
            fig = surface_grid_figure(loaded, metrics, title, out / "figures" / f"{stem}.png")
            plt.close(fig)
            made.surface_grids[group.key] = out / "figures" / f"{stem}.png"
        for centre, path in group.surfaces.items():
            if "axis1" not in loaded[centre]:  # a line (sweep=line, sweep.lines): drawn in the grid figure only
                continue
            made.interactive[str(path)] = json.loads(
                surface_3d(loaded[centre], f"{title}: around {centre}").to_json())
            vtu = surface_vtk(loaded[centre], out / "vtk" / f"{stem}_{centre}.vtu")
            made.vtk[str(path)] = vtu.relative_to(out).as_posix()
    for sweep, groups in sweep_groups(runs).items():
        keys = swept_keys(groups)
        if keys and any("test/onestep_acc_mean" in g["stats"] for g in groups):
            jobs = [r for r in runs if r.sweep == sweep]
            ident = " / ".join(sorted({r.dataset for r in jobs if r.dataset})) + (
                " / " + " / ".join(sorted({r.arch for r in jobs if r.arch})) if len({r.arch for r in jobs}) == 1 else "")
            path = out / "figures" / f"sweep_{sweep.name}.png"
            fig = sweep_figure(groups, keys[0], "test/onestep_acc_mean",
                               f"one-step test accuracy vs {keys[0]} ({ident}, multirun {sweep.name})", path)
            plt.close(fig)
            made.sweep_figures[str(sweep)] = path
    return made


def atlas_report(sweep: Path, out: Path, file: str, title: str) -> Path:
    """An atlas multirun (experiment=atlas: each job a study) -> its cross-method page (distillscape.report.atlas) with
    a figure per question, and atlas.json with the table's numbers; returns the page's path."""
    jobs, missing = atlas.read_atlas(sweep)
    figures = []
    for stem, get, ylabel, percent, caption in (
            ("accuracy", lambda j: j.accuracy, "test accuracy", True,
             "test accuracy per method and protocol, mean over held-out inits with its 95% t-interval"),
            ("minima", atlas.minima_rate, "fraction certified minima", False,
             "fraction of certified landings that are minima, with its 95% Wilson interval"),
            ("barrier", lambda j: j.barrier, "barrier to direct minimum", False,
             "straight-line barrier from the landing to the direct minimum, mean over landings with its 95% t-interval")):
        if any(get(j) for j in jobs):
            xs, series = atlas.figure_series(jobs, get)
            path = interval_figure(xs, series, ylabel, f"atlas: {caption.split(',')[0]}",
                                   out / "figures" / f"atlas_{sweep.name}_{stem}.png", percent)
            figures.append((path, caption))
    write_json(out / f"atlas_{sweep.name}.json", atlas.as_json(jobs, missing))
    page = atlas.render(sweep, jobs, missing, figures, title)
    path = atomic_write(out / file, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    console.print(f"atlas: {path} ({len(jobs)} jobs, {len(missing)} missing items, {len(figures)} figures)")
    return path


def report(cfg: DictConfig) -> Path:
    """The report task without Hydra: read the run dirs, write the page, log it; returns the page's path."""
    if OmegaConf.is_missing(cfg, "runs") or not cfg.runs:
        raise ConfigError("runs=??? : give the output directories to report on, runs=[<distill dir>,<instances dir>,...]")
    s = settings(cfg)
    check_owner(cfg, Path(cfg.paths.output_dir))
    dirs = [s.runs] if isinstance(s.runs, str) else list(s.runs)
    atlases = [Path(d) for d in dirs if Path(d).is_dir() and atlas.is_atlas(Path(d))]
    dirs = [d for d in dirs if Path(d) not in atlases]
    runs = read_runs(dirs)
    out = start_job(cfg)
    pages = [atlas_report(a, out, s.report.file if not dirs and len(atlases) == 1 else f"atlas_{a.name}.html",
                          s.report.title) for a in atlases]
    if not dirs:  # only atlases: their pages are the report
        return pages[0]
    made = draw(runs, out)
    page = render(runs, s.report.title, s.report.max_figures, made, out_dir=out)
    path = atomic_write(out / s.report.file, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    rows = all_rows(runs)
    logger = build_logger(cfg)
    if logger:
        log_report(logger, runs, path, rows, made)
    n_figs = sum(len(r.figures) for r in runs) + len(made.surface_grids) + len(made.sweep_figures) + len(made.curves)
    msg = (f"report: {path} ({len(page) / 1e6:.1f} MB, {n_figs} figures, {len(made.interactive)} interactive "
           f"surfaces, {len(rows)} metrics from {len(runs)} runs)")
    console.print(msg)
    return path


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="report")
@task
def main(cfg: DictConfig) -> Path:
    return report(cfg)


cli = console_script(main, "report")

if __name__ == "__main__":  # python -m: the module under its own name runs (tasks.entry.run)
    from .entry import run
    run("report")
