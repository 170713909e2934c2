"""Fault injection through the real console scripts: wrong input, kills, full and read-only disks, two
writers at once. Each fault either runs, or ends with one line naming the path or key and what to do (exit
2; 130 for Ctrl-C), never a traceback, and never a write into a directory that holds earlier work; an
interrupted run resumed with the same command ends where an uninterrupted one ends, bit for bit.

Most cases call a script's `cli()` in this process with sys.argv set (the console script's own code path,
without paying the import of torch per case); kills and concurrent writers use real child processes."""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from conftest import DIGITS_RUN_OVERRIDES, REPO, compose_cfg, make_mnist_like
from distillscape.artifacts import read_json, read_tensors, write_tensors
from test_config_properties import BAD_VALUES, KEYS, _typo

TINY = ["dataset=digits", "arch=mlp", "distill.steps=40", "distill.val_every=20", "distill.val_inits=2",
        "distill.eval_inits=4", "direct.epochs=1", "baseline.tune_inits=2", "baseline.lr_grid=[0.1]",
        "checkpoint_every=10", "snapshot_every=10", "seed=3", "distill.batching=vmap",
        "trainer.enable_progress_bar=false"]


def cli(task: str, args: list[str], monkeypatch, capsys, verbose: bool = False) -> tuple[int, str]:
    """Run `distillscape-<task> args` in this process; its exit status and what it printed on stderr."""
    module = importlib.import_module(f"distillscape.tasks.{task}")
    monkeypatch.setattr(sys, "argv", [f"distillscape-{task}", *args, *(["--verbose"] if verbose else [])])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # the script sets it to 1 for itself; restored afterwards
    monkeypatch.setenv("DISTILLSCAPE_VERBOSE", "0")
    monkeypatch.delenv("DISTILLSCAPE_VERBOSE")
    capsys.readouterr()
    try:
        module.cli()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        GlobalHydra.instance().clear()
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    """The script's own error line; asserts it is one line and no traceback came with it."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("distillscape:")]
    assert len(lines) == 1, err
    return lines[0]


def tree(path: Path) -> dict[str, tuple[int, str]]:
    """Every file under path with its modification time and content hash."""
    return {str(p.relative_to(path)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def finished_run(digits_run, tmp_path) -> Path:
    copy = tmp_path / "finished"
    shutil.copytree(digits_run, copy)
    return copy


# -- refused and invalid runs leave a finished run as it was ----------------------------------------------
@pytest.mark.parametrize("change,needle", [
    (["seed=1"], "holds a finished job with another config"),
    (["distill.lr_init=nan"], "distill.lr_init=nan must be a finite number"),
    (["trainer.max_steps=-5"], "must be >= 1"),
    (["distill.stpes=3"], "unknown key distill.stpes: did you mean distill.steps?"),
])
def test_refused_or_invalid_rerun_leaves_the_run_untouched(finished_run, monkeypatch, capsys, change, needle):
    before = tree(finished_run)
    code, err = cli("distill", [*DIGITS_RUN_OVERRIDES, *change, f"hydra.run.dir={finished_run}"], monkeypatch, capsys)
    assert code == 2
    assert needle in one_line(err)
    assert tree(finished_run) == before


def test_same_rerun_of_a_finished_run_writes_nothing(finished_run, monkeypatch, capsys):
    before = tree(finished_run)
    code, err = cli("distill", [*DIGITS_RUN_OVERRIDES, f"hydra.run.dir={finished_run}"], monkeypatch, capsys)
    assert code == 0, err
    assert tree(finished_run) == before


# every task: what it refuses (a wrong input, another sweep's shards) it refuses before writing its job record
@pytest.mark.parametrize("task,args,needle", [
    ("distill", [*[a for a in TINY if not a.startswith("dataset=")], "dataset=mnist", "paths.data_dir={tmp}/nothing"],
     "MNIST"),
    ("distill", ["env=cartpole", "arch=simple_convnet", "logger=none"], "arch=policy_mlp"),
    ("train", ["dataset=mnist", "paths.data_dir={tmp}/nothing"], "MNIST"),
    ("landscape", ["distilled={run}", "sweep=line", "sweep.resolution=[5]", "logger=none"], "belongs to a different sweep"),
    ("landscape", ["distilled={run}", "sweep=line", "sweep.resolution=[3]", "sweep.centres=[nowhere.safetensors]",
                   "logger=none"], "nowhere.safetensors"),
    ("landing", ["distilled={tmp}/nothing", "logger=none"], "nothing"),
    ("landing", ["distilled={run}", "dataset=mnist", "logger=none"], "add dataset=digits"),
    ("instances", ["distilled={tmp}/nothing", "logger=none"], "nothing"),
    ("study", ["+study.tasks.distill=none"], "must start with distill"),
], ids=["distill-no-data", "distill-rl-classifier-arch", "train-no-data", "landscape-another-sweep",
        "landscape-no-such-centre", "landing-no-run", "landing-other-dataset", "instances-no-run", "study-no-distill"])
def test_a_refusal_leaves_a_directory_holding_work_untouched(digits_run, tmp_path, monkeypatch, capsys, task, args,
                                                              needle):
    """The target: a directory holding a landscape job's surface (run into it first); a run of any task refused
    there must not rewrite its .hydra/ record, config_resolved.yaml, directions or job log. Each run is told to
    overwrite the directory (skip_complete=false), so that its own refusal is the one tested, not the refusal of
    another job's directory (test_owners.py)."""
    target = tmp_path / "work"
    code, err = cli("landscape", [f"distilled={digits_run}", "sweep=line", "sweep.resolution=[3]", "logger=none",
                                  "trainer.enable_progress_bar=false", f"hydra.run.dir={target}"], monkeypatch, capsys)
    assert code == 0, err
    (target / "checkpoints").mkdir()  # a stopped distillation's directory, for the distill cases: no complete.json
    before = tree(target)
    time.sleep(0.01)  # a rewrite of the same bytes would show in the mtimes
    fill = {"tmp": str(tmp_path), "run": str(digits_run)}
    code, err = cli(task, [a.format(**fill) for a in args] + ["skip_complete=false", f"hydra.run.dir={target}"],
                    monkeypatch, capsys)
    assert code == 2, err
    assert needle in one_line(err)
    assert tree(target) == before


# the property of test_config_properties.py through the console script, into a finished run: any wrong value or
# mistyped key is one line (or, where it does not change the job, the finished job's own result) and writes nothing
DISTILL_KEYS = [k for t, k in KEYS if t == "distill"
                and not k.startswith("paths.") and k != "skip_complete"]  # these two say: write elsewhere / overwrite


@pytest.fixture(scope="module")
def untouchable_run(digits_run, tmp_path_factory) -> tuple[Path, dict]:
    copy = tmp_path_factory.mktemp("untouchable") / "run"
    shutil.copytree(digits_run, copy)
    return copy, tree(copy)


def _bad_rerun(untouchable_run, monkeypatch, capsys, key, value, mistyped, i):
    run, before = untouchable_run
    override = f"{_typo(key, i)}=1" if mistyped and _typo(key, i) not in DISTILL_KEYS else f"{key}={value}"
    t0 = time.perf_counter()
    code, err = cli("distill", [*DIGITS_RUN_OVERRIDES, override, f"hydra.run.dir={run}"], monkeypatch, capsys)
    assert time.perf_counter() - t0 < 10, f"{override} took {time.perf_counter() - t0:.1f} s"
    assert code in (0, 2), (override, code, err)
    if code == 2:
        one_line(err)
    assert "Traceback" not in err, err
    assert tree(run) == before, override


def _bad_reruns():
    """A fresh hypothesis test of `_bad_rerun` (each test its own: settings and marks are set on the function)."""
    return given(key=st.sampled_from(DISTILL_KEYS), value=st.sampled_from(BAD_VALUES), mistyped=st.booleans(),
                 i=st.integers(0, 50))(_bad_rerun)


_PER_EXAMPLE = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]  # one run, checked unchanged throughout
test_any_bad_value_or_key_into_a_finished_run_is_one_line_and_writes_nothing = hsettings(
    max_examples=40, deadline=None, suppress_health_check=_PER_EXAMPLE)(_bad_reruns())
test_any_bad_value_or_key_into_a_finished_run_thorough = pytest.mark.slow(hsettings(
    max_examples=600, deadline=None, suppress_health_check=_PER_EXAMPLE)(_bad_reruns()))


def test_marker_of_the_previous_identity_is_still_a_finished_job(finished_run):
    """complete.json written before a moved run counted as the same job (its digest held the run's own
    directory, trainer.default_root_dir): the same config in that directory is still skipped, not refused."""
    from distillscape.job import Job
    from distillscape.resume import ADDED_SETTINGS, fingerprint, identity
    from distillscape.tasks.distill import distill

    cfg = compose_cfg("distill", DIGITS_RUN_OVERRIDES, finished_run)
    record = read_json(finished_run / "complete.json")
    (finished_run / "complete.json").write_text(json.dumps(
        {**record, "fingerprint": fingerprint(data=identity(Job.of(cfg), legacy=True, known=len(ADDED_SETTINGS)))}))
    before = tree(finished_run)
    assert distill(cfg) == read_json(finished_run / "metrics.json")
    assert tree(finished_run) == before


# -- one line for what fails before or outside the task --------------------------------------------------
def test_mistyped_key_suggests_the_nearest_not_a_plus(tmp_path, monkeypatch, capsys):
    code, err = cli("landscape", ["distilled=x", "sweep.resoluton=[3,3]", f"hydra.run.dir={tmp_path}"], monkeypatch, capsys)
    line = one_line(err)
    assert code == 2 and "did you mean sweep.resolution?" in line and "+sweep" not in err


def test_a_new_entry_of_a_mapping_is_told_its_plus(tmp_path, monkeypatch, capsys):
    """A mapping of the schema (study.tasks, study.stages) takes new entries, which Hydra adds with `+`: there
    the `+` is the right advice (and the nearest entry, for a typo of one), not the nearest key elsewhere."""
    code, err = cli("study", ["study.tasks.distill=none", f"hydra.run.dir={tmp_path / 'a'}"], monkeypatch, capsys)
    line = one_line(err)
    assert code == 2 and "+study.tasks.distill=" in line and "did you mean" not in line
    code, err = cli("study", ["study.stages.landscpe=[]", f"hydra.run.dir={tmp_path / 'b'}"], monkeypatch, capsys)
    line = one_line(err)
    assert code == 2 and "did you mean study.stages.landscape?" in line and "+study.stages.landscpe=" in line


def test_yaml_syntax_error_names_file_and_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "mine.yaml").write_text("# @package _global_\ndistill:\n  steps: [1,\n")
    code, err = cli("distill", ["--config-dir", str(tmp_path / "conf"), "experiment=mine",
                                f"hydra.run.dir={tmp_path / 'out'}"], monkeypatch, capsys)
    line = one_line(err)
    assert code == 2 and f"{tmp_path / 'conf' / 'experiment' / 'mine.yaml'} line 4" in line


def test_unknown_option_lists_the_options(tmp_path, monkeypatch, capsys):
    code, err = cli("distill", ["arch=resnet", f"hydra.run.dir={tmp_path}"], monkeypatch, capsys)
    line = one_line(err)
    options = line.split("available: ")[1].split(", ")
    assert code == 2 and "arch/resnet" in line and {"convnet", "lenet", "mlp", "simple_convnet"} <= set(options)
    assert not [o for o in options if o.endswith("_schema")]  # the schemas are not options a user picks


def test_verbose_shows_the_traceback_too(tmp_path, monkeypatch, capsys):
    code, err = cli("distill", ["arch=resnet", f"hydra.run.dir={tmp_path}"], monkeypatch, capsys, verbose=True)
    assert code == 2 and "Traceback" in err and err.rstrip().splitlines()[-1].startswith("distillscape:")


def test_memory_estimate_refuses_before_anything_starts(tmp_path, monkeypatch, capsys):
    t0 = time.perf_counter()
    code, err = cli("distill", ["distill.images_per_class=10000", f"hydra.run.dir={tmp_path / 'run'}"], monkeypatch, capsys)
    line = one_line(err)
    assert code == 2 and "needs about" in line and "GiB available" in line and "distill.images_per_class" in line
    assert time.perf_counter() - t0 < 30
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_memory_estimate_scales_with_what_a_step_holds():
    from distillscape.config import DistillConfig
    from distillscape.distill import memory_estimate
    from distillscape.models import MLP

    net = MLP(1, 8, 8, 10)
    est = {k: memory_estimate(net, (1, 8, 8), 10, 1797, 256, DistillConfig(images_per_class=k)) for k in (1, 101)}
    loop = memory_estimate(net, (1, 8, 8), 10, 1797, 256, DistillConfig(images_per_class=101, batching="loop"))
    assert est[101]["outer_step"] > est[1]["outer_step"] and est[101]["dataset"] == est[1]["dataset"]
    assert est[101]["outer_step"] == 8 * loop["outer_step"]  # vmap holds all 8 inits of a step at once, loop one


def test_pickled_checkpoint_is_refused_without_unsafe_advice(tmp_path, monkeypatch, capsys):
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Path("/")}, ckpt)  # an object only unpickling would make
    code, err = cli("distill", [*TINY, f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'run'}"], monkeypatch, capsys)
    line = one_line(err)
    assert code == 2 and str(ckpt) in line and "refused" in line
    assert "weights_only=False" not in err


def test_non_finite_artifact_is_refused_naming_file_and_tensor(finished_run, tmp_path, monkeypatch, capsys):
    tensors = read_tensors(finished_run / "distilled.safetensors")
    tensors["images"][0, 0, 0, 0] = float("nan")
    write_tensors(finished_run / "distilled.safetensors", tensors)
    code, err = cli("landscape", [f"distilled={finished_run}", "sweep=line", "sweep.resolution=[3]",
                                  f"hydra.run.dir={tmp_path / 'sweep'}"], monkeypatch, capsys)
    line = one_line(err)
    assert code == 2 and str(finished_run / "distilled.safetensors") in line and "'images'" in line and "NaN" in line


def test_corrupt_mnist_file_is_named_with_its_sizes(tmp_path, monkeypatch, capsys):
    root = make_mnist_like(tmp_path / "data", "MNIST", n_train=100, n_test=50)
    images = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    with open(images, "r+b") as f:
        f.truncate(1000)
    code, err = cli("train", ["dataset=mnist", f"paths.data_dir={root}", f"hydra.run.dir={tmp_path / 'run'}"],
                    monkeypatch, capsys)
    line = one_line(err)
    assert code == 2 and str(images) in line and "1000 bytes" in line and f"needs {16 + 100 * 28 * 28}" in line
    assert "truncated" in line and "not found" not in line


def test_distilled_pointing_at_an_unfinished_or_other_run_says_what_it_is(tmp_path, monkeypatch, capsys):
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints").mkdir(parents=True)
    (unfinished / "checkpoints" / "last.ckpt").write_bytes(b"")
    (unfinished / "config_resolved.yaml").write_text("config:\n  task_name: distill\n")
    code, err = cli("landing", [f"distilled={unfinished}", f"hydra.run.dir={tmp_path / 'a'}"], monkeypatch, capsys)
    assert code == 2 and "has not finished" in one_line(err) and "ckpt_path=last" in err
    other = tmp_path / "other"
    other.mkdir()
    (other / "config_resolved.yaml").write_text("config:\n  task_name: landing\n")
    code, err = cli("instances", [f"distilled={other}", f"hydra.run.dir={tmp_path / 'b'}"], monkeypatch, capsys)
    assert code == 2 and "output of distillscape-landing" in one_line(err)


def test_missing_slurm_commands_one_line(tmp_path):
    """The SLURM launcher where sbatch is not installed (PATH without it): one line naming the fix."""
    env = {**os.environ, "PATH": str(Path(sys.executable).parent), "HYDRA_FULL_ERROR": "0"}
    r = subprocess.run([sys.executable, "-m", "distillscape.tasks.distill", "-m", "hydra/launcher=submitit_slurm",
                        *TINY, f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    line = one_line(r.stderr)
    assert r.returncode == 2 and "srun" in line and "hydra/launcher=submitit_local" in line


# -- the disk: read-only, full ------------------------------------------------------------------------------
@pytest.fixture
def mount(tmp_path):
    """mount(size, ro) -> a fresh tmpfs (root only); unmounted afterwards."""
    made = []

    def make(size: str, ro: bool = False) -> Path:
        where = tmp_path / f"mnt{len(made)}"
        where.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}" + (",ro" if ro else ""), "tmpfs", str(where)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}): the disk faults need root")
        made.append(where)
        return where

    yield make
    for where in made:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_read_only_output_one_line(mount, monkeypatch, capsys):
    ro = mount("1m", ro=True)
    code, err = cli("distill", [*TINY, f"hydra.run.dir={ro / 'run'}"], monkeypatch, capsys)
    line = one_line(err)
    assert code == 2 and str(ro / "run") in line and "Read-only file system" in line


def _complete_files(run: Path) -> None:
    """What is left after a failure is whole: no temporary files, every artifact readable."""
    assert not [p for p in run.rglob("*.tmp")], "a temporary file was left behind"
    for p in run.rglob("*.safetensors"):
        read_tensors(p)
    for p in run.rglob("*.json"):
        read_json(p)
    for p in (run / "checkpoints").glob("*.ckpt"):
        torch.load(p, weights_only=True)


@pytest.mark.parametrize("size", ["48k", "140k"])  # full while the direct baseline / the distillation writes
def test_full_disk_one_line_nothing_half_written_then_resume(mount, monkeypatch, capsys, size):
    disk = mount(size)
    run = disk / "run"
    code, err = cli("distill", [*TINY, "logger=none", f"hydra.run.dir={run}"], monkeypatch, capsys)
    line = one_line(err)
    assert code == 2 and "No space left on device" in line and "rerun the same command" in line
    _complete_files(run)
    # space again (tmpfs grows in place): the same command with ckpt_path=last finishes the run
    subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
    code, err = cli("distill", [*TINY, "logger=none", "ckpt_path=last", f"hydra.run.dir={run}"], monkeypatch, capsys)
    assert code == 0, err
    assert (run / "complete.json").exists()


# -- two writers at once ----------------------------------------------------------------------------------
def test_second_writer_of_a_run_directory_is_refused(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "distillscape.tasks.distill", *TINY, "distill.steps=400",
                              "logger=none", f"hydra.run.dir={run}"], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while not (run / ".hydra" / "config.yaml").exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.1)  # the record is written once the directory is claimed
        assert first.poll() is None, first.stderr.read().decode()[-2000:]
        code, err = cli("distill", [*TINY, "distill.steps=400", "logger=none", f"hydra.run.dir={run}"],
                        monkeypatch, capsys)
        assert code == 2 and "another distillscape process is writing" in one_line(err)
    finally:
        first.kill()
        first.wait()


def test_second_writer_of_a_shard_is_refused(tmp_path):
    from distillscape.config import ConfigError
    from distillscape.resume import claim, release_claims

    shard = tmp_path / "shards" / "shard_0000_of_0002.npz"
    lock = shard.with_name(f".{shard.stem}.lock")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from distillscape.resume import claim; "
                               f"claim(Path({str(shard)!r}), lock_file=Path({str(lock)!r})); print('held', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match="another distillscape process is writing"):
            claim(shard, lock_file=lock)
    finally:
        holder.kill()
        holder.wait()
    claim(shard, lock_file=lock)  # the kernel dropped the dead holder's lock: no stale lock to clean
    release_claims()


# -- interrupted, resumed, identical ------------------------------------------------------------------------
def _run_until_checkpoint_then(sig: int, run: Path, extra: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([sys.executable, "-m", "distillscape.tasks.distill", *TINY, *extra,
                             f"hydra.run.dir={run}"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    ckpt = run / "checkpoints" / "last.ckpt"
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["global_step"] >= 20:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be stopped: {proc.stderr.read()[-2000:]}"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", err)


def _csv_rows(run: Path) -> list[dict]:
    import csv

    with open(run / "csv" / "metrics.csv", newline="") as f:
        # timings and peak memory are measurements of the process, not results of the run
        return [{k: v for k, v in row.items() if v != "" and not any(m in k for m in ("seconds", "per_second", "peak_"))}
                for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    from distillscape.tasks.distill import distill

    out = tmp_path_factory.mktemp("uninterrupted")
    distill(compose_cfg("distill", [*TINY, "logger=csv"], out))
    return out


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130)])
def test_interrupt_keeps_history_resumes_bit_for_bit(tmp_path, uninterrupted, sig, code):
    from distillscape.tasks.distill import distill

    run = tmp_path / "run"
    stopped = _run_until_checkpoint_then(sig, run, ["logger=csv"])
    assert stopped.returncode == code, stopped.stderr[-2000:]
    assert "What was finished is kept" in one_line(stopped.stderr.split("Detected KeyboardInterrupt")[-1])
    direct_before = (run / "direct_minimum.safetensors").stat().st_mtime_ns
    at_checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    distill(compose_cfg("distill", [*TINY, "logger=csv", "ckpt_path=last"], run))
    assert (run / "direct_minimum.safetensors").stat().st_mtime_ns == direct_before, "the direct baseline was retrained"
    a, b = read_tensors(uninterrupted / "distilled.safetensors"), read_tensors(run / "distilled.safetensors")
    for k in ("images", "labels", "lrs"):
        assert torch.equal(a[k], b[k]), k
    _same_history(run, uninterrupted, at_checkpoint)


def test_sigterm_outside_a_lightning_run_is_the_same_one_line(capsys):
    """Found by SIGTERM at a random moment: outside Lightning's fit/test/predict (reading the data, the random
    real baseline, writing the artifacts) SIGTERM took Python's default and the process died (status -15)
    without the line on what is kept. The handler the process had before (here: one that raises, as the
    default would end it) is back afterwards."""
    from distillscape.tasks.common import task

    class DiedOfIt(Exception):
        pass

    def default(signum, frame):
        raise DiedOfIt

    @task
    def job(cfg):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal arrives at the next bytecode
        return "went on"

    before = signal.signal(signal.SIGTERM, default)
    try:
        with pytest.raises(SystemExit) as stopped:
            job(None)
        assert stopped.value.code == 143
        assert "stopped by SIGTERM. What was finished is kept" in one_line(capsys.readouterr().err)
        assert signal.getsignal(signal.SIGTERM) is default
    finally:
        signal.signal(signal.SIGTERM, before)


def test_stopped_after_its_last_checkpoint_resumes_to_the_same_history(tmp_path, uninterrupted):
    """Found by a kill at a random moment (test_fault_moments.py): a run stopped after its final checkpoint
    (while it tested the batch, ran the baseline or wrote the artifacts) resumed with its test row logged at
    another step and epoch than the uninterrupted run's. The stopped run is the finished one without what
    is written after the fit."""
    from distillscape.tasks.distill import distill

    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    for name in ("complete.json", "metrics.json", "distilled.safetensors", "distilled.json", "distilled.png"):
        (run / name).unlink()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 40
    distill(compose_cfg("distill", [*TINY, "logger=csv", "ckpt_path=last"], run))
    assert _csv_rows(run) == _csv_rows(uninterrupted)
    assert torch.equal(read_tensors(run / "distilled.safetensors")["images"],
                       read_tensors(uninterrupted / "distilled.safetensors")["images"])


def test_rerun_without_ckpt_path_overwrites_the_stopped_runs_checkpoint(tmp_path, uninterrupted):
    """A stopped run rerun from the start (no ckpt_path) into its directory wrote last-v1.ckpt beside the old
    last.ckpt, and a later ckpt_path=last resumed from the stale one (dropping the history logged since); the
    temporary files of writes a kill -9 cut short stayed for good."""
    from distillscape.tasks.distill import distill

    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    (run / "complete.json").unlink()
    # and what a kill -9 in the middle of atomic writes leaves: half-written temporaries, removed by the rerun
    for stale in (run / ".distilled.safetensors.k1lled_9.tmp", run / "checkpoints" / ".last.ckpt.abcd1234.tmp"):
        stale.write_bytes(b"half")
    distill(compose_cfg("distill", [*TINY, "logger=csv"], run))
    assert not list(run.rglob("*.tmp"))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 40


def _same_history(run: Path, uninterrupted: Path, at_checkpoint: int) -> None:
    """Every metric row of the uninterrupted run, in order. One exception, Lightning's: a validation due at the
    very step of the checkpoint runs after that checkpoint is written, and a resume skips it, so its row is
    there only if the stopped run wrote it before it stopped."""
    resumed, whole = _csv_rows(run), _csv_rows(uninterrupted)
    skipped = [r for r in whole if r["step"] == str(at_checkpoint - 1) and any(k.startswith("val/") for k in r)]
    assert resumed == whole or resumed == [r for r in whole if r not in skipped], (
        "the resumed run's metric history differs", [(r["step"], sorted(r)) for r in resumed],
        [(r["step"], sorted(r)) for r in whole])


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGKILL, -signal.SIGKILL), (signal.SIGTERM, 143)])
def test_kill_keeps_history_resumes_bit_for_bit(tmp_path, uninterrupted, sig, code):
    from distillscape.tasks.distill import distill

    run = tmp_path / "run"
    stopped = _run_until_checkpoint_then(sig, run, ["logger=csv"])
    assert stopped.returncode == code, stopped.stderr[-2000:]
    at_checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    distill(compose_cfg("distill", [*TINY, "logger=csv", "ckpt_path=last"], run))
    a, b = read_tensors(uninterrupted / "distilled.safetensors"), read_tensors(run / "distilled.safetensors")
    for k in ("images", "labels", "lrs"):
        assert torch.equal(a[k], b[k]), k
    _same_history(run, uninterrupted, at_checkpoint)


@pytest.mark.slow
def test_sharded_sweep_killed_mid_shard_resumes_to_the_same_surface(digits_run, tmp_path):
    """kill -9 while shard 1 of 3 computes: shard 0 is kept, the rerun of the killed job computes shard 1
    whole, and the merged surface equals one computed in one piece."""
    from distillscape.landscape import read_npz, shard_path
    from distillscape.tasks.landscape import landscape

    common = [f"distilled={digits_run}", "sweep=plane", "sweep.resolution=[150,150]", "sweep.costs=[train]",
              "sweep.centres=minimum", "landscape.batching=loop", "landscape.points_per_batch=2", "logger=none"]
    shared = tmp_path / "surfaces"
    for shard in (0, 2):
        landscape(compose_cfg("landscape", [*common, f"shard={shard}", "num_shards=3", f"landscape.out_dir={shared}"],
                              tmp_path / f"job{shard}"))
    proc = subprocess.Popen([sys.executable, "-m", "distillscape.tasks.landscape", *common, "shard=1", "num_shards=3",
                             f"landscape.out_dir={shared}", f"hydra.run.dir={tmp_path / 'job1'}"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = shard_path(shared / "minimum", 1, 3).with_name(".shard_0001_of_0003.lock")
    deadline = time.time() + 300
    while not lock.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(2)  # inside the shard's predict loop
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    proc.kill()
    proc.wait()
    assert not shard_path(shared / "minimum", 1, 3).exists() and not (shared / "minimum" / "surface.npz").exists()
    stale = shared / "minimum" / "shards" / ".shard_0001_of_0003.npz.k1lled_9.tmp"  # a write the kill cut short
    stale.write_bytes(b"half")
    (merged,) = landscape(compose_cfg("landscape", [*common, "shard=1", "num_shards=3", f"landscape.out_dir={shared}"],
                                      tmp_path / "job1"))
    whole = landscape(compose_cfg("landscape", [*common, f"landscape.out_dir={tmp_path / 'whole'}"], tmp_path / "w"))
    assert np.array_equal(read_npz(merged)["train/loss"], read_npz(whole[0])["train/loss"])
    assert not stale.exists()


@pytest.mark.slow
def test_landing_killed_between_kinds_resumes_to_the_same_statistics(digits_run, tmp_path):
    """kill -9 once the first batch kind's part is written: the rerun reuses it, computes the others and ends
    with the statistics of an uninterrupted analysis."""
    from test_landing import SMALL, compose_landing
    from distillscape.tasks.landing import landing

    args = [f"distilled={digits_run}", "logger=none", *SMALL]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "distillscape.tasks.landing", *args, f"hydra.run.dir={out}"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not list((out / "landing_parts").glob("*.json")):
        time.sleep(0.1)
    assert proc.poll() is None, f"the analysis ended before it could be killed: {proc.stderr.read()[-2000:]}"
    proc.kill()
    proc.wait()
    done = sorted(p.stem for p in (out / "landing_parts").glob("*.json"))
    assert done and not (out / "landing_stats.json").exists()
    GlobalHydra.instance().clear()
    resumed = landing(compose_landing(args, out))
    GlobalHydra.instance().clear()
    whole = landing(compose_landing(args, tmp_path / "whole"))
    assert resumed["kinds"] == whole["kinds"] and resumed["direct_minimum"] == whole["direct_minimum"]


@pytest.mark.parametrize("sig,code,name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_stop_while_the_script_imports_its_task_is_one_line(tmp_path, sig, code, name):
    """Found by SIGTERM at a random moment: while a script imported torch (seconds) SIGTERM killed it without
    a word (status -15) and Ctrl-C printed an import traceback. The signal is sent once libtorch is mapped
    into the process, i.e. surely inside the task's import, after the script's first handler is in place."""
    script = Path(sys.executable).parent / "distillscape-distill"
    proc = subprocess.Popen([str(script), *TINY, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    maps, deadline = Path(f"/proc/{proc.pid}/maps"), time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if "libtorch" in maps.read_text():
            break
        time.sleep(0.005)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, (proc.returncode, err)
    assert one_line(err) == (f"distillscape: stopped by {name} while starting, before any work: nothing was "
                             f"computed or written; run the same command again")
    assert not (tmp_path / "run").exists()
