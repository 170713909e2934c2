"""Every task run into every other task's directory, finished and interrupted (issue 26, part 2): a directory
holding a job's records is that job's. Any other task there, or the same task with another config, ends in one
line (exit 2) before any work, and every file there keeps its bytes and mtime; a resume from a checkpoint of
another arch is refused the same way. What shares a directory by design still does: the same job goes on where
it stopped, the shards of one sweep meet in one directory, a study reruns a stage whose overrides changed, and
runs of an earlier release (their records name no task) are still told apart by their files.

Each owner directory is built once per session, by the console script's own code path (`cli()`, in this
process), and an interrupted one is the finished one without what its job writes last. The whole cross product
is `slow`; the default run takes one case per task as intruder and per kind of directory."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from conftest import DIGITS_RUN_OVERRIDES, REPO
from distillscape.artifacts import read_json
from distillscape.resume import RECORD, TASK_FILES, recorded_job
from test_faults import TINY, cli, one_line, tree

TASKS = ("distill", "train", "landscape", "landing", "instances", "report", "study")


def study_args() -> list[str]:
    """A study of two stages (a tiny distillation and its report): the others are left out, for time."""
    from test_study import as_list

    return ["study.arch=mlp", as_list("study.overrides.distill", [a for a in TINY if not a.startswith("dataset=")]),
            "+study.tasks.landscape=none", "+study.tasks.landing=none", "+study.tasks.instances=none"]


def task_args(task: str, run: Path) -> list[str]:
    """A valid command line of `task` (analyses read the distillation `run`): one that nothing but the directory
    it is pointed at refuses."""
    from test_landing import SMALL

    return {
        "distill": [*TINY, "logger=none"],
        "train": ["dataset=digits", "arch=mlp", "direct.epochs=1", "logger=none", "trainer.enable_progress_bar=false"],
        "landscape": [f"distilled={run}", "sweep=line", "sweep.resolution=[3]", "sweep.costs=[train]", "logger=none",
                      "trainer.enable_progress_bar=false"],
        "landing": [f"distilled={run}", "logger=none", *SMALL],
        "instances": [f"distilled={run}", "instances.models=3", "instances.neighbours=2", "instances.test_limit=100",
                      "logger=none"],
        "report": [f"runs=[{run}]", "logger=none"],
        "study": study_args(),
    }[task]


# what a job writes last, removed to leave its directory as a job stopped before it leaves it
LAST_WRITTEN = {
    "distill": ["complete.json", "metrics.json", "distilled.*"],
    "train": ["direct_minimum.*"],
    "landscape": ["*/surface.npz", "*/summary.json", "*/*.png"],
    "landing": ["landing_stats.*", "trajectory.png"],
    "instances": ["instances.json"],
    "report": ["*.html"],
    "study": ["study.json", "report"],
}


class Owners:
    """The session's owner directories, built on first use: <task>/finished and <task>/interrupted, each with the
    tree (bytes and mtimes) it had when built."""

    def __init__(self, base: Path, digits_run: Path):
        self.base, self.run, self.built = base, digits_run, {}

    def get(self, task: str, state: str, monkeypatch, capsys) -> tuple[Path, dict]:
        if (task, state) not in self.built:
            where = self.base / task / state
            finished = self.get(task, "finished", monkeypatch, capsys)[0] if state == "interrupted" else None
            if finished is not None:
                shutil.copytree(finished, where)
                for pattern in LAST_WRITTEN[task]:
                    for p in where.glob(pattern):
                        shutil.rmtree(p) if p.is_dir() else p.unlink()
            elif task == "distill":  # the session's distillation (its own config), by the same code path
                shutil.copytree(self.run, where)
            else:
                code, err = cli(task, [*task_args(task, self.run), f"hydra.run.dir={where}"], monkeypatch, capsys)
                assert code == 0, err[-3000:]
            time.sleep(0.01)  # a rewrite of the same bytes would show in the mtimes
            self.built[(task, state)] = where, tree(where)
        return self.built[(task, state)]


@pytest.fixture(scope="session")
def owners(digits_run, tmp_path_factory) -> Owners:
    return Owners(tmp_path_factory.mktemp("owners"), digits_run)


# one case per task as intruder, and per kind of directory, in the default run; every pair in the slow one
DEFAULT = {("train", "distill", "finished"), ("landing", "distill", "interrupted"), ("landscape", "train", "finished"),
           ("train", "train", "interrupted"), ("report", "landscape", "interrupted"),
           ("instances", "report", "finished"), ("study", "distill", "finished"), ("distill", "landscape", "finished")}


def cases():
    for intruder in TASKS:
        for owner in TASKS:
            for state in ("finished", "interrupted"):
                if intruder == owner == "study":
                    continue  # a study reruns the stages whose overrides changed, by design (test below)
                marks = () if (intruder, owner, state) in DEFAULT else (pytest.mark.slow,)
                yield pytest.param(intruder, owner, state, id=f"{intruder}-into-{state}-{owner}", marks=marks)


@pytest.mark.parametrize("intruder,owner,state", list(cases()))
def test_a_task_into_another_jobs_directory_is_one_line_and_touches_nothing(owners, digits_run, monkeypatch, capsys,
                                                                            intruder, owner, state):
    where, before = owners.get(owner, state, monkeypatch, capsys)
    args = task_args(intruder, digits_run)
    if intruder == owner:
        args = [*args, "seed=7"]  # the same task with another config
    t0 = time.perf_counter()
    code, err = cli(intruder, [*args, f"hydra.run.dir={where}"], monkeypatch, capsys)
    seconds = time.perf_counter() - t0
    line = one_line(err)
    assert code == 2, err[-3000:]
    assert str(where) in line and ("skip_complete=false" in line), line
    if intruder != owner:
        assert f"{'a finished' if state == 'finished' else 'an unfinished'} {owner} job" in line, line
        assert "hydra.run.dir=" in line, line
    else:
        assert "another config" in line and "seed" in line, line
    assert tree(where) == before
    assert seconds < 20, f"refused after {seconds:.1f} s: the check must come before the work"


# -- a resume checks what the checkpoint was written for ------------------------------------------------------------
def _with_arch(arch: str) -> list[str]:
    return [*(a for a in DIGITS_RUN_OVERRIDES if not a.startswith("arch=")), f"arch={arch}"]


def test_resume_with_another_arch_is_one_line_before_any_work(owners, tmp_path, monkeypatch, capsys):
    """issue 26: `arch=lenet ckpt_path=last` on an mlp run retrained and overwrote its direct minimum, cut its
    metrics.csv and crashed. Now one line naming the arch, nothing touched; also where overwriting is allowed
    (skip_complete=false: the checkpoint itself still does not fit), and from another directory (ckpt_path=<file>)."""
    where, before = owners.get("distill", "interrupted", monkeypatch, capsys)
    for extra in ([], ["skip_complete=false"]):
        code, err = cli("distill", [*_with_arch("lenet"), "ckpt_path=last", *extra, f"hydra.run.dir={where}"],
                        monkeypatch, capsys)
        line = one_line(err)
        assert code == 2 and "arch._target_" in line and "LeNet" in line and "MLP" in line, line
        assert tree(where) == before
    elsewhere = tmp_path / "elsewhere"
    code, err = cli("distill", [*_with_arch("lenet"), f"ckpt_path={where / 'checkpoints' / 'last.ckpt'}",
                                f"hydra.run.dir={elsewhere}"], monkeypatch, capsys)
    line = one_line(err)
    assert code == 2 and "arch._target_" in line and "ckpt_path" in line, line
    assert not [p for p in elsewhere.rglob("*") if p.is_file()] and tree(where) == before


def test_the_same_job_goes_on_in_its_interrupted_directory(owners, tmp_path, monkeypatch, capsys):
    """The refusal's other side: the job whose directory it is (the same overrides, ckpt_path=last) resumes there,
    from its checkpoint (its snapshots and direct minimum kept as they were, not computed again)."""
    where = tmp_path / "run"
    shutil.copytree(owners.get("distill", "interrupted", monkeypatch, capsys)[0], where)
    kept = {k: v for k, v in tree(where).items() if k.startswith(("snapshots", "direct_minimum"))}
    code, err = cli("distill", [*DIGITS_RUN_OVERRIDES, "ckpt_path=last", f"hydra.run.dir={where}"], monkeypatch, capsys)
    assert code == 0, err[-3000:]
    assert (where / "complete.json").exists() and read_json(where / "metrics.json")["test/onestep_inits"] == 8
    assert kept and {k: v for k, v in tree(where).items() if k in kept} == kept


def test_shards_of_one_sweep_share_a_directory(digits_run, tmp_path, monkeypatch, capsys):
    """Landscape jobs differing only in their shard are one sweep: both run into one directory, the second merges."""
    where = tmp_path / "sweep"
    args = [*task_args("landscape", digits_run), "sweep.resolution=[4]", "num_shards=2"]
    for shard in (1, 0):
        code, err = cli("landscape", [*args, f"shard={shard}", f"hydra.run.dir={where}"], monkeypatch, capsys)
        assert code == 0, err[-3000:]
    assert (where / "minimum" / "surface.npz").exists()


def test_surfaces_are_not_written_into_another_tasks_directory(owners, digits_run, tmp_path, monkeypatch, capsys):
    """landscape.out_dir is shared by the shards of a sweep, not by other tasks: a distillation's directory there is
    refused like the job's own directory."""
    where, before = owners.get("distill", "finished", monkeypatch, capsys)
    code, err = cli("landscape", [*task_args("landscape", digits_run), f"landscape.out_dir={where}",
                                  f"hydra.run.dir={tmp_path / 'job'}"], monkeypatch, capsys)
    line = one_line(err)
    assert code == 2 and "a finished distill job" in line, line
    assert tree(where) == before


@pytest.mark.slow
def test_a_study_reruns_a_stage_whose_overrides_changed(owners, tmp_path, monkeypatch, capsys):
    """A study's directory holds its stages; a rerun with other overrides of a stage reruns that stage (the study's
    own design) instead of being refused as another config, and skips the others."""
    where = tmp_path / "study"
    shutil.copytree(owners.get("study", "finished", monkeypatch, capsys)[0], where)
    distilled = (where / "distill" / "distilled.safetensors").stat().st_mtime_ns
    code, err = cli("study", [*study_args(), '+study.overrides.report=["report.title=again"]',
                              f"hydra.run.dir={where}"], monkeypatch, capsys)
    assert code == 0, err[-3000:]
    log = read_json(where / "study.json")["stages"]
    assert log["distill"]["status"] == "finished before" and log["report"]["status"] == "ran", log
    assert "again" in (where / "report" / "report.html").read_text()
    assert (where / "distill" / "distilled.safetensors").stat().st_mtime_ns == distilled


# -- records of earlier releases ---------------------------------------------------------------------------------
OLD_RUN = REPO / "tests" / "data" / "run_v0_1"


def test_a_run_of_an_earlier_release_is_recognised_and_kept(tmp_path, monkeypatch, capsys):
    """tests/data/run_v0_1's record names no task (only its config's task_name): still a finished distillation, and
    still one with neither record (Hydra's .hydra/ then, or its files)."""
    run = tmp_path / "old"
    shutil.copytree(OLD_RUN, run)
    assert "task" not in (run / RECORD).read_text().split("config:")[0]
    found = recorded_job(run)
    assert (found.task, found.finished) == ("distill", True) and found.config["arch"]["_target_"].endswith("MLP")
    before = tree(run)
    time.sleep(0.01)
    code, err = cli("train", [*task_args("train", run), f"hydra.run.dir={run}"], monkeypatch, capsys)
    assert code == 2 and "a finished distill job" in one_line(err)
    assert tree(run) == before
    (run / RECORD).unlink()
    assert recorded_job(run).task == "distill"  # from .hydra/config.yaml
    shutil.rmtree(run / ".hydra")
    found = recorded_job(run)
    assert (found.task, found.config, found.finished) == ("distill", None, True)  # from its files


def _inferred_cases():
    for task in TASKS:
        for state in ("finished", "interrupted"):
            marks = () if task in ("distill", "train", "landscape", "report") else (pytest.mark.slow,)
            yield pytest.param(task, state, id=f"{state}-{task}", marks=marks)


@pytest.mark.parametrize("task,state", list(_inferred_cases()))
def test_without_records_the_files_tell_the_task(owners, tmp_path, monkeypatch, capsys, task, state):
    """Oracle: the task a directory's files tell (a run of a release whose record named no task, and no Hydra
    record) is the task its record names, finished or not alike."""
    where, _ = owners.get(task, state, monkeypatch, capsys)
    recorded = recorded_job(where)
    assert (recorded.task, recorded.finished) == (task, state == "finished")
    bare = tmp_path / "bare"
    shutil.copytree(where, bare, ignore=shutil.ignore_patterns(RECORD, ".hydra", "*.log"))
    found = recorded_job(bare)
    files = sorted(str(p.relative_to(bare)) for p in bare.rglob("*") if p.is_file())
    if not files:  # a job stopped before it wrote anything but its record: nothing there to keep
        assert found is None
        return
    assert found is not None and (found.task, found.finished) == (task, state == "finished"), (files, TASK_FILES[task])
