"""distillscape-report: the output directories of a study -> one self-contained HTML file, and the same
content to the configured logger (W&B: figures, a table of every metric, the distilled artifact;
other loggers: the scalar metrics)."""
from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from ..artifacts import atomic_write
from ..config import ConfigError
from ..report import all_rows, read_run, render
from .common import CONF_DIR, build_logger, console, output_dir, task


def log_report(logger, runs, html_path: Path) -> None:
    """The report's content for a logger: W&B gets images, one table and the distilled batch as an
    artifact; any other logger the numbers (`<run dir>/<file>/<metric>` means)."""
    rows = all_rows(runs)
    from lightning.pytorch.loggers import WandbLogger

    if isinstance(logger, WandbLogger):
        import wandb

        exp = logger.experiment
        exp.log({f"figures/{run.path.name}/{p.stem}": wandb.Image(str(p)) for run in runs for p in run.figures})
        exp.log({"metrics": wandb.Table(columns=["run", "file", "metric", "mean", "std", "n"], data=rows),
                 "report": wandb.Html(html_path.read_text())})
        for run in runs:
            if (run.path / "distilled.safetensors").exists():
                art = wandb.Artifact(f"distilled-{run.path.name}", type="distilled",
                                     metadata=run.results.get("metrics.json", {}))
                for name in ("distilled.safetensors", "distilled.json", "distilled.png"):
                    if (run.path / name).exists():
                        art.add_file(str(run.path / name))
                exp.log_artifact(art)
    else:
        logger.log_metrics({f"{r[0]}/{r[1].removesuffix('.json')}/{r[2]}": r[3] for r in rows})
    logger.save()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="report")
@task
def main(cfg: DictConfig) -> Path:
    if OmegaConf.is_missing(cfg, "runs") or not cfg.runs:
        raise ConfigError("runs=??? : give the output directories to report on, runs=[<distill dir>,<instances dir>,...]")
    dirs = [cfg.runs] if isinstance(cfg.runs, str) else list(cfg.runs)
    runs = [read_run(d) for d in dirs]
    out = output_dir(cfg)
    page = render(runs, cfg.report.title, cfg.report.max_figures)
    path = atomic_write(out / cfg.report.file, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    logger = build_logger(cfg)
    if logger:
        log_report(logger, runs, path)
    console.print(f"report: {path} ({len(page) / 1e6:.1f} MB, {sum(len(r.figures) for r in runs)} figures, "
                  f"{len(all_rows(runs))} metrics from {len(runs)} runs)")
    return path


if __name__ == "__main__":
    main()
