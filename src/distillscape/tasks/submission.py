"""Every job of a multirun checked at submission, before any of them runs (a Hydra callback, conf/hydra/default.yaml).

Without it a bad value in one job was found when that job started: with the basic launcher the earlier jobs
trained and the later ones never ran; with joblib the good jobs were aborted and left nothing. Now each job's
config is composed as its launcher will compose it and given the task's own checks (`<task>.check`: the
settings, the data it reads, the memory it needs, the directory it writes); a refused job is named by its
overrides in one line and recorded in <sweep dir>/refused_jobs.json, the others run, and the sweep then ends
with exit 2 and a line saying what is missing. A refused job skips itself where its launcher starts it
(`refused_here`), so its number and directory stay free for the fixed rerun; the report on the sweep lists it.
A sweep whose every job is refused is refused whole, before anything is written."""
from __future__ import annotations

import copy
import importlib
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from ..errors import KNOWN_ERRORS
from ..resume import REFUSED, read_refused, record_refused



def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """Each job's overrides, in job-number order, as Hydra's basic sweeper makes them (the sweeper's params,
    then the command line's overrides; the product of every swept key's values)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (OmegaConf.select(config, "hydra.sweeper.params") or {}).items()]
    given = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
    parsed = OverridesParser.create().parse_overrides([*params, *given])
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def job_config(config: DictConfig, overrides: list[str], num: int) -> DictConfig:
    """The config job `num` gets from its launcher (hydra node included, its output directory set), as
    hydra.core.utils.run_job makes it."""
    from hydra.core.global_hydra import GlobalHydra

    cfg = GlobalHydra.instance().config_loader().load_sweep_config(master_config=config, sweep_overrides=overrides)
    with open_dict(cfg):
        cfg.hydra.job.id, cfg.hydra.job.num = f"job_id_for_{num}", num
    HydraConfig.instance().set_config(cfg)  # the sweep dir and subdir interpolate the job's hydra node
    out = Path(str(OmegaConf.select(cfg, "hydra.sweep.dir"))) / str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
    with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = str(out.absolute())
    HydraConfig.instance().set_config(cfg)
    return cfg


def check_job(task: str, cfg: DictConfig) -> None:
    """The task's checks before work on a job's config: its settings, then `tasks.<task>.check` on its `Job`."""
    task_cfg = copy.deepcopy(cfg)
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    from .common import check_logger, job_of

    module = importlib.import_module(f"distillscape.tasks.{task}")
    job = job_of(task_cfg, getattr(module, "NEEDED", None))  # the settings, every value checked
    if (check := getattr(module, "check", None)) is not None:
        check(job)
    check_logger(job.settings.logger)


def refusal(e: BaseException, task: str, overrides: list[str]) -> str | None:
    """The one line for a refused job; None for a bug (which keeps its traceback)."""
    if isinstance(e, KNOWN_ERRORS):
        return f"{type(e).__name__}: {e}"
    from .cli import explain

    return explain(e, task, overrides)


def job_name(num: int, overrides: list[str], jobs: list[list[str]] | None = None) -> str:
    """A job by its number and the overrides that tell it from the sweep's other jobs (all of them, alone)."""
    def key(o: str) -> str:
        return o.split("=", 1)[0]

    if jobs and len(jobs) > 1:
        values = {key(o): {o2 for job in jobs for o2 in job if key(o2) == key(o)} for o in overrides}
        telling = [o for o in overrides if len(values[key(o)]) > 1 or sum(key(o) in map(key, j) for j in jobs) < len(jobs)]
        overrides = telling or overrides
    return f"job {num} ({' '.join(overrides) or 'no overrides'})"


def stop(line: str) -> None:
    """End the multirun with one line, exit 2. Hydra turns an exception from a callback into a warning and goes
    on; a SystemExit passes through."""
    from .cli import fail

    fail(line)


class CheckJobs(Callback):
    """Checks every job of a multirun when it is submitted; ends the sweep with exit 2 when jobs were refused."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        task = str(kwargs.get("config_name") or config.hydra.job.config_name)
        jobs = sweep_jobs(config)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        before = HydraConfig.instance().cfg
        refused, unlaunchable = [], []
        try:
            for num, overrides in enumerate(jobs):
                try:
                    check_job(task, job_config(config, overrides, num))
                except Exception as e:  # noqa: BLE001 (refusal() gives None for a bug, raised below)
                    if (line := refusal(e, task, overrides)) is None:
                        raise
                    # a job its launcher cannot even compose stops the sweeper before any job runs
                    (refused if isinstance(e, KNOWN_ERRORS) else unlaunchable).append(
                        {"num": num, "overrides": overrides, "reason": line})
        finally:
            HydraConfig.instance().cfg = before
        for j in refused + unlaunchable:
            print(f"distillscape: {job_name(j['num'], j['overrides'], jobs)}: {j['reason']}", file=sys.stderr)
        if unlaunchable or len(refused) == len(jobs):
            which = "every job" if len(refused) == len(jobs) else f"{len(unlaunchable)} job(s) cannot be composed"
            stop(f"{which} of this multirun refused (lines above), nothing was run or written: fix the "
                              f"values and run the same command again")
        (sweep_dir / REFUSED).unlink(missing_ok=True)  # an earlier sweep's record in this directory is stale
        for j in refused:
            record_refused(sweep_dir, {**j, "when": "submission"}, of=len(jobs))
        if refused:
            print(f"distillscape: {len(refused)} of {len(jobs)} jobs refused and skipped (listed in {sweep_dir / REFUSED}); "
                  f"the other {len(jobs) - len(refused)} run", file=sys.stderr)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        data, jobs = read_refused(sweep_dir), sweep_jobs(config)
        if data["jobs"]:
            names = "; ".join(job_name(j["num"], j["overrides"], jobs) for j in data["jobs"])
            stop(f"{len(data['jobs'])} of {len(jobs)} jobs of {sweep_dir} did not run ({names}): "
                              f"their reasons are in {sweep_dir / REFUSED}; fix them and run the same command again "
                              f"(finished jobs are kept)")


def this_job() -> tuple[Path, int, list[str]] | None:
    """(sweep dir, job number, overrides) of the multirun job running here; None outside one (a single run,
    a study's stage, a task called as a function)."""
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if str(OmegaConf.select(hc, "mode", default="")) != "RunMode.MULTIRUN":
        return None
    num = OmegaConf.select(hc, "job.num", default=None)
    if num is None:
        return None
    return Path(str(hc.sweep.dir)), int(num), [str(o) for o in hc.overrides.task]


def refused_here() -> str | None:
    """The reason this multirun job was refused at submission (it then skips itself), else None."""
    job = this_job()
    if job is None:
        return None
    sweep_dir, num, overrides = job
    return next((j["reason"] for j in read_refused(sweep_dir)["jobs"]
                 if j.get("num") == num and list(j.get("overrides", [])) == overrides), None)


def refuse_here(line: str) -> bool:
    """A multirun job refused where it started (what submission could not see there, e.g. its data): record it
    so the sweep's other jobs go on and its end says what is missing. False outside a multirun."""
    job = this_job()
    if job is None:
        return False
    sweep_dir, num, overrides = job
    print(f"distillscape: {job_name(num, overrides)}: {line}", file=sys.stderr)
    record_refused(sweep_dir, {"num": num, "overrides": overrides, "reason": line, "when": "start"})
    return True
