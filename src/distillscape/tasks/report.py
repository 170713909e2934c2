"""distillscape-report: the output directories of a study -> one self-contained HTML file, and the same
content to the configured logger (W&B: figures, a table of every metric, the distilled artifact;
other loggers: the scalar metrics)."""
from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from ..artifacts import atomic_write
from ..config import ConfigError, settings
from ..report import all_rows, read_run, render
from ..tracking import log_report
from .common import console_script, CONF_DIR, build_logger, console, start_job, task


def report(cfg: DictConfig) -> Path:
    """The report task without Hydra: read the run dirs, write the page, log it; returns the page's path."""
    if OmegaConf.is_missing(cfg, "runs") or not cfg.runs:
        raise ConfigError("runs=??? : give the output directories to report on, runs=[<distill dir>,<instances dir>,...]")
    s = settings(cfg)
    dirs = [s.runs] if isinstance(s.runs, str) else list(s.runs)
    runs = [read_run(d) for d in dirs]
    out = start_job(cfg)
    page = render(runs, s.report.title, s.report.max_figures)
    path = atomic_write(out / s.report.file, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    rows = all_rows(runs)
    logger = build_logger(cfg)
    if logger:
        log_report(logger, runs, path, rows)
    console.print(f"report: {path} ({len(page) / 1e6:.1f} MB, {sum(len(r.figures) for r in runs)} figures, "
                  f"{len(rows)} metrics from {len(runs)} runs)")
    return path


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="report")
@task
def main(cfg: DictConfig) -> Path:
    return report(cfg)


cli = console_script(main, "report")

if __name__ == "__main__":
    cli()
