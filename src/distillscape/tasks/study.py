"""distillscape-study: the chain of a study in one command, in-process and in order
(distill -> landscape -> landing -> instances -> report), one sub-directory per stage.

Each stage's config is composed from its own conf/<stage>.yaml with the study's overrides (as the
stage's command line would), and the task's plain function (`tasks.<task>.<task>`) runs on it. A stage
whose task module or config is not installed is skipped with the reason printed; a finished stage (its
`study_stage.json` records the fingerprint of the stage's task and overrides, `resume.finished`) is
skipped on a rerun into the same directory, so an interrupted study resumes; a stage whose overrides
changed since it finished runs again.
A stage runs the task of its own name, or the one `study.tasks.<stage>` names: that is how a study
sweeps several landscapes (e.g. a `surfaces` stage running the landscape task with other overrides).
"""
from __future__ import annotations

import importlib
import time
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from rich.markup import escape
from rich.table import Table

from ..artifacts import atomic_write, read_json, write_json
from ..errors import ConfigError
from ..job import Job
from ..resume import check_owner, finished, fingerprint, mark_finished
from .cli import CONF_DIR, compose_task, script
from .common import check_logger, console, start_job
from .progress import Heartbeat, eta_text, is_terminal

ANALYSES = ("landscape", "landing", "instances")  # stages that read the distillation run


def compose_stage(name: str, overrides: list[str]) -> DictConfig:
    """conf/<name>.yaml with overrides, inside a running Hydra app or outside one."""
    return compose_task(name, overrides)


def stage_task(job: Job, stage: str) -> str:
    """The task a stage runs: study.tasks.<stage> if given, else the stage's own name."""
    return str((job.settings.study.tasks or {}).get(stage, stage))


def stage_order(job: Job) -> list[str]:
    """The stages in the order they run: as listed, but the report (which reads every other stage)
    last, wherever an experiment's merge put it; a stage whose task is `none` is left out."""
    stages = [s for s in job.settings.study.stages if stage_task(job, s) != "none"]  # study.tasks.<stage>=none: left out
    return [s for s in stages if stage_task(job, s) != "report"] + [s for s in stages if stage_task(job, s) == "report"]


def given_overrides(job: Job, stage: str) -> list[str]:
    """The study's own overrides of a stage (study.stages.<stage>, then study.overrides.<stage>)."""
    study = job.settings.study
    return [*study.stages[stage], *(study.overrides or {}).get(stage, [])]


def stage_overrides(job: Job, stage: str, root: Path, done: list[str]) -> list[str]:
    """The study's overrides of a stage plus the wiring: its output dir and its inputs. A stage this study
    finished before (its study_stage.json is there) and now reruns, because its overrides changed or
    study.force, is run again from the start over its old files (skip_complete=false): the directory is this
    study's stage, and rerunning it is what the user asked for."""
    # the study's data directory reaches every stage (each composes its own config)
    wiring = [f"paths.output_dir={root / stage}", f"paths.data_dir={Path(job.settings.paths.data_dir).absolute()}"]
    if stage_task(job, stage) in ANALYSES:
        wiring.append(f"distilled={root / 'distill'}")
    if stage_task(job, stage) == "report":
        wiring.append("runs=[" + ",".join(str(root / s) for s in done) + "]")
    given = given_overrides(job, stage)
    if (root / stage / "study_stage.json").exists():
        return [*given, *wiring, "skip_complete=false"]
    if (stage_task(job, stage) == "distill" and (root / stage / "checkpoints" / "last.ckpt").exists()
            and not any(o.split("=", 1)[0].lstrip("+~") == "ckpt_path" for o in given)):
        # a distillation the study was stopped in goes on from its checkpoint (what the stop's line promises)
        wiring.append("ckpt_path=last")
    return [*given, *wiring]


def record(stage_dir: Path, stage: Job, overrides: list[str]) -> None:
    """What Hydra's CLI would leave in .hydra/: the config (resolved) and the command line of the stage's job (the
    report shows both)."""
    atomic_write(stage_dir / ".hydra" / "config.yaml",
                 lambda tmp: Path(tmp).write_text(OmegaConf.to_yaml(stage.resolved())))
    atomic_write(stage_dir / ".hydra" / "overrides.yaml",
                 lambda tmp: Path(tmp).write_text(yaml.safe_dump(list(overrides))))


def missing_reason(stage: str) -> str | None:
    if not (Path(CONF_DIR) / f"{stage}.yaml").exists():
        return f"conf/{stage}.yaml does not exist"
    try:
        importlib.import_module(f"distillscape.tasks.{stage}")
    except ModuleNotFoundError as e:
        if e.name == f"distillscape.tasks.{stage}":
            return f"distillscape.tasks.{stage} is not installed"
        raise
    return None


def stage_fingerprint(job: Job, stage: str) -> str:
    """What a stage's result depends on: its task and the study's overrides of it (not the wiring: a study
    directory moved elsewhere still resumes)."""
    return fingerprint(data={"task": stage_task(job, stage), "overrides": given_overrides(job, stage)})


def stage_done(marker: Path, fp: str) -> dict | None:
    if marker.exists() and "fingerprint" not in (record := read_json(marker)):
        return record  # a stage finished by a release before fingerprints: done, as it was then
    return finished(marker, fp, on_mismatch="redo")


def say(line: str) -> None:
    """A study line: `[study]` and any path in it printed as written, not read as rich markup."""
    console.print(escape(line))


def check(job: Job) -> list[str]:
    """Every stage's config composed and checked before the first stage runs (also for each job of a multirun
    at submission): a bad value in the landing stage was found after the distillation had run. The
    distillation gets its task's whole check (data, memory, its directory); an analysis, whose run does not
    exist yet, its settings. Returns the stages in their order."""
    stages = stage_order(job)
    if not stages or stage_task(job, stages[0]) != "distill":
        raise ConfigError(f"study.stages must start with distill (every analysis reads its run), got {stages}")
    root = job.out
    for i, stage in enumerate(stages):
        task_name = stage_task(job, stage)
        if missing_reason(task_name):
            continue
        module = importlib.import_module(f"distillscape.tasks.{task_name}")
        try:
            stage_job = Job.of(compose_stage(task_name, stage_overrides(job, stage, root, stages[:i])))
            if task_name == "distill":
                module.check(stage_job)
            check_logger(stage_job.settings.logger)
        except ConfigError as e:
            raise ConfigError(f"study stage {stage} ({task_name}): {e}") from None
    return stages


def study(cfg: DictConfig) -> dict:
    """distillscape-study: every stage in order. Returns the study log (study.json)."""
    job = Job.of(cfg)
    stages = check(job)
    root = start_job(job)
    log = {"stages": {}}
    done: list[str] = []
    started = time.perf_counter()
    for number, stage in enumerate(stages, 1):
        stage_dir = root / stage
        marker = stage_dir / "study_stage.json"
        fp = stage_fingerprint(job, stage)
        if not job.settings.study.force and (previous := stage_done(marker, fp)) is not None:
            say(f"[study] {stage}: finished before ({marker}), skipped (study.force=true reruns it)")
            log["stages"][stage] = {**{k: v for k, v in previous.items() if k != "fingerprint"}, "status": "finished before"}
            done.append(stage)
            continue
        task_name = stage_task(job, stage)
        reason = missing_reason(task_name)
        if reason:
            say(f"[study] {stage}: skipped, {reason}")
            log["stages"][stage] = {"status": "skipped", "reason": reason}
            continue
        overrides = stage_overrides(job, stage, root, done)
        stage_cfg = compose_stage(task_name, overrides)  # its Trainers show their progress (tasks/progress.py)
        stage_job = Job.of(stage_cfg)
        check_owner(stage_job, stage_dir)  # before the stage's record is written: another job's directory, refused
        record(stage_dir, stage_job, overrides)
        title = f"[study] {number}/{len(stages)} {stage}" + (f" ({task_name})" if task_name != stage else "")
        if is_terminal():
            console.rule(escape(title))
        say(f"{title}: started, {eta_text(time.perf_counter() - started)} into the study")
        t0 = time.perf_counter()
        run_task = getattr(importlib.import_module(f"distillscape.tasks.{task_name}"), task_name)
        with Heartbeat(f"[study] {stage}", job.settings.study.progress_every_s, say):
            run_task(stage_cfg)
        seconds = time.perf_counter() - t0
        say(f"[study] {stage}: done in {eta_text(seconds)}")
        entry = {"status": "ran", "task": task_name, "seconds": round(seconds, 1), "overrides": overrides}
        mark_finished(marker, fp, **entry)
        log["stages"][stage] = entry
        done.append(stage)
        write_json(root / "study.json", log)
    write_json(root / "study.json", log)
    t = Table(title=escape(f"study in {root}"))
    for col in ("stage", "status", "seconds"):
        t.add_column(col)
    for stage, e in log["stages"].items():
        t.add_row(*(escape(x) for x in (stage, e["status"] + (f": {e['reason']}" if "reason" in e else ""),
                                         str(e.get("seconds", "")))))
    console.print(t)
    if "report" in done:
        say(f"report: {root / 'report' / 'report.html'}")
    return log


main, cli = script(study, "study")

if __name__ == "__main__":  # python -m: the module under its own name runs (tasks.cli.run)
    from .cli import run
    run("study")
