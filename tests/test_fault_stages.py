"""A full disk and a read-only output directory at every stage of every task (distill, train, landscape,
landing, instances, report, study), through the console scripts' own code path (`cli()`, as in
test_faults.py), on a real tmpfs mounted for the test (root only).

The disk is made full at a chosen moment: just before the first write of a named file (the job record, a
checkpoint, a snapshot, a shard, the artifact, the final markers), a filler file takes every free page of
the tmpfs, so that write and every later one fail with ENOSPC as on a disk that ran full. Each case must end
in one line naming the path and what to do; every file written before the failure must still be there,
unchanged; nothing half-written is left. Then the same directory, made read-only, is refused in one line
and left byte for byte as it was; and once space is freed (the filler deleted), the same command (a
distillation with ckpt_path=last) finishes with the uninterrupted run's results, bit for bit."""
from __future__ import annotations

import errno
import fnmatch
import hashlib
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from distillscape.artifacts import read_json, read_tensors
from test_faults import TINY, cli, one_line


class Log(bytes):
    """A job log's content: the log only grows (its lines are appended), so it is kept if it starts the same."""

    def __eq__(self, other) -> bool:
        return isinstance(other, bytes) and (bytes(other).startswith(bytes(self)) or bytes(self).startswith(other))

    def __ne__(self, other) -> bool:
        return not self == other

    __hash__ = bytes.__hash__


def tree(path: Path) -> dict[str, str | Log]:
    """Every file under path: its hash, or for a job log its content."""
    return {str(p.relative_to(path)): Log(p.read_bytes()) if p.suffix == ".log" else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and p.name != "filler"}


class Disk:
    """A tmpfs of its own; `fill()` takes every free page; `free()` gives them back; `read_only(flag)`."""

    def __init__(self, where: Path):
        self.where, self.filler = where, where / "filler"

    def fill(self) -> None:
        with open(self.filler, "ab", buffering=0) as f:
            for chunk in (1 << 20, 1 << 12, 1):
                try:
                    while True:
                        f.write(b"\0" * chunk)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def read_only(self, flag: bool) -> None:
        subprocess.run(["mount", "-o", f"remount,{'ro' if flag else 'rw'}", str(self.where)], check=True,
                       capture_output=True)


@pytest.fixture
def disk(tmp_path):
    where = tmp_path / "disk"
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(where)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}): the disk faults need root")
    yield Disk(where)
    subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def full_before(monkeypatch):
    """full_before(disk, pattern): fill the disk just before the first file whose path (relative to the disk)
    matches pattern is written (every artifact, record and checkpoint is written through a temporary file
    made by tempfile.mkstemp beside it: artifacts.atomic_write). Returns a list that gets, when the disk is
    filled, the files on it and their hashes."""
    real = tempfile.mkstemp

    def arm(d: Disk, pattern: str) -> list[str]:
        hit: list[str] = []

        def mkstemp(*args, **kwargs):
            where, prefix = kwargs.get("dir"), kwargs.get("prefix", "")
            if not hit and where is not None and Path(where).resolve().is_relative_to(d.where.resolve()):
                rel = (Path(where).resolve() / prefix.removeprefix(".").rstrip(".")).relative_to(d.where.resolve())
                if fnmatch.fnmatch(str(rel), pattern):
                    hit.append(tree(d.where))  # what was written before the disk ran full
                    d.fill()
            return real(*args, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        return hit

    return arm


def fails_in_one_line_keeping_what_was_done(d: Disk, task: str, args: list[str], out: Path, hit: list[dict],
                                            monkeypatch, capsys) -> None:
    """The run ends with one line naming a path on the disk and what to do; nothing half-written is left;
    what was there before stays as it was."""
    code, err = cli(task, args, monkeypatch, capsys)
    assert hit, "the run never wrote the file the disk was to be full before"
    line = one_line(err)
    assert code == 2, err[-3000:]
    assert "No space left on device" in line and str(d.where) in line and "free space there" in line, line
    assert "rerun the same command" in line, line
    assert not [p for p in d.where.rglob("*.tmp")], "a temporary file was left behind"
    before, now = hit[0], tree(d.where)
    lost = {k for k in before if now.get(k) != before[k]}
    assert not lost, f"files written before the disk ran full were lost or changed: {sorted(lost)}"
    for p in out.rglob("*.safetensors"):
        read_tensors(p, finite=False)
    for p in out.rglob("*.json"):
        read_json(p)
    for p in out.rglob("*.ckpt"):
        torch.load(p, weights_only=True)


def close_job_logs(d: Disk) -> None:
    """Close the job log files on the disk that the run left open: a process of its own would have ended and
    closed them; in this one they would keep the tmpfs from being remounted read-only."""
    import logging
    for logger in [logging.getLogger(), *[logging.getLogger(n) for n in logging.root.manager.loggerDict]]:
        for h in list(getattr(logger, "handlers", [])):
            if isinstance(h, logging.FileHandler) and Path(h.baseFilename).is_relative_to(d.where):
                logger.removeHandler(h)
                try:
                    h.close()
                except OSError:  # its last lines, on the full disk: lost, as logging.shutdown loses them at exit
                    h.stream = None


def read_only_refused_untouched(d: Disk, task: str, args: list[str], monkeypatch, capsys) -> None:
    close_job_logs(d)
    before = tree(d.where)
    d.read_only(True)
    try:
        code, err = cli(task, args, monkeypatch, capsys)
    finally:
        d.read_only(False)
    line = one_line(err)
    assert code == 2 and "Read-only file system" in line and str(d.where) in line, line
    assert tree(d.where) == before


def same_tensor_files(a: Path, b: Path) -> None:
    ta, tb = read_tensors(a, finite=False), read_tensors(b, finite=False)
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), f"{b} differs from {a}"


def without_paths(record: dict) -> dict:
    """A result record without where it was written and read from (the runs compared live in other places)."""
    return {k: v for k, v in record.items() if k not in ("config", "source", "distilled", "direct_minimum")}


def results(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not any(m in k for m in ("seconds", "per_second", "peak_"))}


# -- the cases: for each task, the files before whose first write the disk runs full ------------------------------
STAGES = {
    "distill": ["run/.hydra/config.yaml", "run/direct_minimum.safetensors", "run/snapshots/distilled_step000010*",
                "run/checkpoints/last.ckpt", "run/distilled.safetensors", "run/distilled.png", "run/metrics.json",
                "run/complete.json"],
    "train": ["run/.hydra/config.yaml", "run/direct_minimum.safetensors", "run/direct_minimum.json"],
    "landscape": ["run/.hydra/config.yaml", "surfaces/minimum/directions.safetensors", "surfaces/minimum/shards/*",
                  "surfaces/minimum/surface.npz", "surfaces/minimum/*.png", "surfaces/minimum/summary.json",
                  "surfaces/landing/shards/*"],
    "landing": ["run/.hydra/config.yaml", "run/landing_parts/trajectory.safetensors", "run/landing_parts/*.json",
                "run/trajectory.png", "run/landing_stats.json", "run/landing_stats.csv"],
    "instances": ["run/.hydra/config.yaml", "run/instances.json"],
    "report": ["run/.hydra/config.yaml", "run/figures/*", "run/report.html"],
    "study": ["run/.hydra/config.yaml", "run/distill/checkpoints/last.ckpt", "run/distill/study_stage.json",
              "run/landscape/*/surface.npz", "run/landing/landing_stats.json", "run/instances/instances.json",
              "run/report/report.html", "run/study.json"],
}
# in the default run (each pays a run and its rerun, so few): a distillation's checkpoint, the job record of the
# quick tasks; the rest is `slow`
FAST = {("distill", "run/checkpoints/last.ckpt"), ("train", "run/.hydra/config.yaml"),
        ("report", "run/.hydra/config.yaml")}


def cases():
    for task, patterns in STAGES.items():
        for pattern in patterns:
            marks = () if (task, pattern) in FAST else (pytest.mark.slow,)
            yield pytest.param(task, pattern, id=f"{task}-{pattern.removeprefix('run/')}", marks=marks)


def task_args(task: str, disk: Path, digits_run: Path, ref_base: Path) -> tuple[list[str], list[str]]:
    """The command line of a case (its output on the disk) and what the rerun adds to it."""
    out = f"hydra.run.dir={disk / 'run'}"
    if task == "distill":
        return [*TINY, "logger=csv", out], ["ckpt_path=last"]
    if task == "train":
        return ["dataset=digits", "arch=mlp", "direct.epochs=1", "logger=none", "trainer.enable_progress_bar=false",
                out], []
    if task == "landscape":
        return [f"distilled={digits_run}", "sweep=plane", "sweep.resolution=[4,4]", "sweep.costs=[train]",
                "sweep.centres=[minimum,landing]", "landscape.train_subsample=200", "landscape.batching=loop", "logger=none",
                f"landscape.out_dir={disk / 'surfaces'}", out], []
    if task == "landing":
        from test_landing import SMALL
        return [f"distilled={digits_run}", "logger=none", *SMALL, out], []
    if task == "instances":
        return [f"distilled={digits_run}", "instances.models=3", "instances.neighbours=2", "instances.test_limit=100",
                "logger=none", out], []
    if task == "report":
        return [f"runs=[{digits_run},{ref_base / 'surfaces_job'}]", out], []
    if task == "study":
        from test_fault_moments import study_args
        return [*study_args(), out], []
    raise AssertionError(task)


_REFS: dict[str, Path] = {}


def reference(task: str, digits_run: Path, base: Path, monkeypatch, capsys) -> Path:
    """The output of the case's command run uninterrupted, off the disk (made once per task)."""
    if task not in _REFS:
        where = base / task
        where.mkdir(parents=True)
        args, _ = task_args(task, where, digits_run, base)
        code, err = cli(task, args, monkeypatch, capsys)
        assert code == 0, err[-3000:]
        _REFS[task] = where
    return _REFS[task]


@pytest.fixture(scope="module")
def ref_base(digits_run, tmp_path_factory) -> Path:
    """Where the uninterrupted runs go; with a landscape job of the digits run for the report to read."""
    from conftest import compose_cfg
    from distillscape.tasks.landscape import landscape

    base = tmp_path_factory.mktemp("stage_refs")
    landscape(compose_cfg("landscape", [f"distilled={digits_run}", "sweep=line", "sweep.resolution=[5]",
                                        "sweep.costs=[train]", "logger=none",
                                        f"landscape.out_dir={base / 'surfaces_job'}"], base / "surfaces_job"))
    return base


def same_results(task: str, disk: Path, ref: Path) -> None:
    """The rerun's results equal the uninterrupted run's (bit for bit where they are tensors or numbers)."""
    run = disk / "run"
    if task == "distill":
        for name in ("distilled.safetensors", "direct_minimum.safetensors"):
            same_tensor_files(ref / "run" / name, run / name)
        assert results(read_json(run / "metrics.json")) == results(read_json(ref / "run" / "metrics.json"))
        assert (run / "complete.json").exists()
    elif task == "train":
        same_tensor_files(ref / "run" / "direct_minimum.safetensors", run / "direct_minimum.safetensors")
    elif task == "landscape":
        for centre in ("minimum", "landing"):
            with np.load(ref / "surfaces" / centre / "surface.npz") as a, np.load(disk / "surfaces" / centre / "surface.npz") as b:
                assert sorted(a.files) == sorted(b.files)
                assert not [k for k in a.files if not np.array_equal(a[k], b[k])], "surfaces differ"
            assert read_json(disk / "surfaces" / centre / "summary.json") == read_json(ref / "surfaces" / centre / "summary.json")
    elif task == "landing":
        a, b = read_json(ref / "run" / "landing_stats.json"), read_json(run / "landing_stats.json")
        assert a == b
        assert (run / "landing_stats.csv").read_text() == (ref / "run" / "landing_stats.csv").read_text()
    elif task == "instances":
        assert without_paths(read_json(run / "instances.json")) == without_paths(read_json(ref / "run" / "instances.json"))
    elif task == "report":
        assert (run / "report.html").exists() and sorted(p.name for p in (run / "figures").iterdir()) == sorted(
            p.name for p in (ref / "run" / "figures").iterdir())
    elif task == "study":
        from test_fault_moments import same_study
        same_study(run, ref / "run")


@pytest.mark.parametrize("task,pattern", list(cases()))
def test_full_then_read_only_disk_at_this_stage_then_space_again(task, pattern, disk, full_before, ref_base, digits_run,
                                                                  monkeypatch, capsys):
    args, resume = task_args(task, disk.where, digits_run, ref_base)
    hit = full_before(disk, pattern)
    fails_in_one_line_keeping_what_was_done(disk, task, args, disk.where / "run", hit, monkeypatch, capsys)
    # the same command on the same directory, now read-only: one line, nothing touched
    read_only_refused_untouched(disk, task, [*args, *resume], monkeypatch, capsys)
    # space again: the same command finishes where an uninterrupted run ends
    disk.free()
    code, err = cli(task, [*args, *resume], monkeypatch, capsys)
    assert code == 0, err[-3000:]
    assert not [p for p in disk.where.rglob("*.tmp")]
    same_results(task, disk.where, reference(task, digits_run, ref_base, monkeypatch, capsys))
