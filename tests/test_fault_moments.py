"""Kills at random moments: kill -9 and SIGTERM sent to the real console scripts (distill, an RL distillation
on cart-pole, landscape sharded and on two DDP processes, landing, study) at a moment drawn from a seeded RNG, then the same command run
again; it must end where an uninterrupted run ends, bit for bit (artifacts, surfaces, statistics).

The moment is a fraction of the uninterrupted run's measured time from the start of its work (the job's
directory claimed and its config written) to its end, so the baselines, the loops, the checkpoints, the
writes of the artifacts and the final markers are all hit; the
seed and the fraction are in the test id (`SIGKILL-seed3-at0.412`), so a failure is rerun with `-k`.
Every batching is pinned (distill.batching=vmap, landscape.batching=loop), as these cases were written when
`auto` still timed the paths in each process; `auto` now follows fixed rules and is compared bit for bit on
busy cores in tests/test_repro.py.
More moments: DISTILLSCAPE_KILL_SEEDS=<n> (seeds 0..n-1 per task and signal). All `slow`: every case pays
two process starts."""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import DIGITS_RUN_OVERRIDES, REPO
from distillscape.artifacts import read_json, read_tensors
from test_faults import TINY, _same_history, one_line

pytestmark = pytest.mark.slow

ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "0"}
# timings and peak memory measure the process, not the result
NOT_RESULTS = ("seconds", "per_second", "peak_")


def moments(task: str, default: int) -> list:
    """(signal, seed, fraction of the run's wall time) cases for a task; ids carry all three."""
    n = int(os.environ.get("DISTILLSCAPE_KILL_SEEDS", default))
    cases = []
    for sig in (signal.SIGKILL, signal.SIGTERM):
        for seed in range(n):
            at = random.Random(f"{task}-{sig.name}-{seed}").random()
            cases.append(pytest.param(sig, seed, at, id=f"{sig.name}-seed{seed}-at{at:.3f}"))
    return cases


def script(task: str, args: list[str], out: Path) -> list[str]:
    return [sys.executable, "-m", f"distillscape.tasks.{task}", *args, f"hydra.run.dir={out}"]


def started(out: Path) -> Path:
    """What a job writes once its config is checked and its directory claimed: the moment its work starts."""
    return out / "config_resolved.yaml"


def timed_run(cmd: list[str], out: Path) -> float:
    """Run cmd to its end (it must succeed); the seconds from the start of its work (`started`) to its end."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not started(out).exists():
        time.sleep(0.02)
    t0 = time.perf_counter()
    _, err = proc.communicate(timeout=1800)
    assert proc.returncode == 0, err[-3000:]
    return time.perf_counter() - t0


def processes_naming(needle: str) -> list[int]:
    """Live processes whose command line holds needle (the run's unique directory)."""
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) != os.getpid():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = next((ln for ln in (p / "status").read_text().splitlines() if ln.startswith("State:")), "")
            except OSError:
                continue
            if needle in cmd and "zombie" not in state:
                found.append(int(p.name))
    return found


def stop_at(cmd: list[str], at: float, sig: signal.Signals, out: Path) -> tuple[int | None, str]:
    """Start cmd, send sig `at` seconds after its work started (to the process the user started, as kill and
    scancel do); its exit status and stderr, or (None, stderr) when it finished before the moment. (The
    moment counts from the start of the work, not of the process: under load the imports alone took half
    the wall time, and a kill there only shows that nothing was written.)"""
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not started(out).exists():
        time.sleep(0.02)
    try:
        _, err = proc.communicate(timeout=at)
        assert proc.returncode == 0, err[-3000:]
        return None, err
    except subprocess.TimeoutExpired:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=600)
    if proc.returncode == 0:  # it ended by itself as the moment came (send_signal skips a process that has exited)
        return None, err
    # nothing it started outlives it (the processes of a multi-device run included)
    deadline = time.time() + 60
    while (left := processes_naming(str(out))) and time.time() < deadline:
        time.sleep(0.5)
    assert not left, f"processes left running after {sig.name}: {left}"
    return proc.returncode, err


def check_stopped(code: int | None, err: str, sig: signal.Signals, out: Path, done: Path | None = None) -> str:
    """How the stop ended: a kill -9 dies; SIGTERM ends with exit 143 and the one line on what is kept (or dies
    of it before Python has set anything up, nothing written, or after the job's last write `done`, while the
    interpreter shut down: Python puts the default handlers back then)."""
    if code is None:
        return "finished before the moment"
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL, err[-3000:]
        return "killed"
    if code == -signal.SIGTERM:
        if done is not None and done.exists():
            return "terminated while exiting"
        assert not out.exists(), f"died of SIGTERM without its line after writing {out}: {err[-3000:]}"
        return "terminated while starting"
    assert code == 143, err[-3000:]
    assert "stopped by SIGTERM" in one_line(err.split("Received SIGTERM")[-1]), err[-3000:]
    return "terminated"


def rerun(cmd: list[str]) -> str:
    """Run the same command again to its end; what it printed."""
    r = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def same_tensors(a: Path, b: Path) -> None:
    ta, tb = read_tensors(a, finite=False), read_tensors(b, finite=False)
    assert ta.keys() == tb.keys(), (a, b)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{b} tensor {k} differs from the uninterrupted run's"


def results(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not any(m in k for m in NOT_RESULTS)}


def same_npz(a: Path, b: Path) -> None:
    with np.load(a) as za, np.load(b) as zb:
        assert sorted(za.files) == sorted(zb.files), (a, b)
        for k in za.files:
            assert np.array_equal(za[k], zb[k], equal_nan=za[k].dtype.kind == "f"), f"{b}: {k} differs"


def no_temporaries_left(out: Path) -> None:
    left = [str(p) for p in out.rglob("*.tmp")]
    assert not left, f"temporary files left behind after the resume: {left}"


# -- distill ------------------------------------------------------------------------------------------------
DISTILL = [*TINY, "logger=csv"]


@pytest.fixture(scope="module")
def distill_reference(tmp_path_factory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("distill_reference") / "run"
    return out, timed_run(script("distill", DISTILL, out), out)


def same_distillation(run: Path, ref: Path, stopped_at: int | None) -> None:
    """Every tensor file of the run (the batch, the direct minimum; an RL run's critics too) and every
    snapshot, the metrics and the metric history, as the uninterrupted run's."""
    tensors = sorted(p.name for p in ref.glob("*.safetensors"))
    assert {"distilled.safetensors", "direct_minimum.safetensors"} <= set(tensors), tensors
    assert sorted(p.name for p in run.glob("*.safetensors")) == tensors
    for name in tensors:
        same_tensors(ref / name, run / name)
    assert results(read_json(run / "metrics.json")) == results(read_json(ref / "metrics.json"))
    snaps = sorted(p.name for p in (ref / "snapshots").glob("*.safetensors"))
    assert sorted(p.name for p in (run / "snapshots").glob("*.safetensors")) == snaps
    for name in snaps:
        same_tensors(ref / "snapshots" / name, run / "snapshots" / name)
    # Lightning's one gap (README, Reliability): the validation due at the checkpoint's own step is skipped
    _same_history(run, ref, stopped_at or 0)


def stop_and_resume_distill(args: list[str], ref: Path, wall: float, run: Path, sig, seed: int, at: float,
                            label: str) -> None:
    """Stop `distillscape-distill args` at `at` of the uninterrupted run's time, run it again with
    ckpt_path=last, and compare it with the uninterrupted run `ref`."""
    code, err = stop_at(script("distill", args, run), at * wall, sig, run)
    how = check_stopped(code, err, sig, run, run / "complete.json")
    ckpt = run / "checkpoints" / "last.ckpt"
    step = torch.load(ckpt, weights_only=True)["global_step"] if ckpt.exists() else None
    print(f"{label} {sig.name} seed {seed} at {at:.3f} x {wall:.1f} s: {how}, checkpoint step {step}")
    rerun(script("distill", [*args, "ckpt_path=last"], run))
    same_distillation(run, ref, step)
    no_temporaries_left(run)


@pytest.mark.parametrize("sig,seed,at", moments("distill", 3))
def test_distill_stopped_at_a_random_moment_resumes_bit_for_bit(distill_reference, tmp_path, sig, seed, at):
    ref, wall = distill_reference
    stop_and_resume_distill(DISTILL, ref, wall, tmp_path / "run", sig, seed, at, "distill")


# -- an RL distillation (cart-pole, through the same Trainer, checkpoints with the critic and the collector) ------
@pytest.fixture(scope="module")
def rl_reference(tmp_path_factory) -> tuple[Path, float]:
    from test_rl_resume import TINY_RL
    out = tmp_path_factory.mktemp("rl_reference") / "run"
    return out, timed_run(script("distill", [*TINY_RL, "logger=csv"], out), out)


@pytest.mark.parametrize("sig,seed,at", moments("rl-distill", 2))
def test_rl_distill_stopped_at_a_random_moment_resumes_bit_for_bit(rl_reference, tmp_path, sig, seed, at):
    from test_rl_resume import TINY_RL
    ref, wall = rl_reference
    assert (ref / "distilled_critic.safetensors").exists() and (ref / "direct_critic.safetensors").exists()
    stop_and_resume_distill([*TINY_RL, "logger=csv"], ref, wall, tmp_path / "run", sig, seed, at, "rl distill")


# -- landscape: one shard of a sharded sweep, and a sweep on two DDP processes --------------------------------
SWEEP = ["sweep=plane", "sweep.resolution=[24,24]", "sweep.costs=[train,distilled]", "sweep.centres=[minimum,landing]",
         "landscape.batching=loop", "landscape.points_per_batch=4", "landscape.train_subsample=300", "logger=none"]


@pytest.fixture(scope="module")
def sweep_reference(digits_run, tmp_path_factory) -> dict:
    """The surfaces computed in one piece; shard 0 of 2 computed into a shared directory the killed jobs
    (shard 1) copy; the wall times of a shard-1 job and of a two-process job."""
    base = tmp_path_factory.mktemp("sweep_reference")
    args = [f"distilled={digits_run}", *SWEEP]
    timed_run(script("landscape", [*args, f"landscape.out_dir={base / 'whole'}"], base / "whole_job"), base / "whole_job")
    shard0 = base / "shard0"
    timed_run(script("landscape", [*args, "shard=0", "num_shards=2", f"landscape.out_dir={shard0}"], base / "job0"),
              base / "job0")
    probe = base / "probe"
    import shutil
    shutil.copytree(shard0, probe)
    shard_wall = timed_run(script("landscape", [*args, "shard=1", "num_shards=2", f"landscape.out_dir={probe}"],
                                  base / "probe_job"), base / "probe_job")
    ddp_wall = timed_run(script("landscape", [*args, *DDP, f"landscape.out_dir={base / 'ddp'}"], base / "ddp_job"),
                         base / "ddp_job")
    return {"args": args, "whole": base / "whole", "shard0": shard0, "shard_wall": shard_wall, "ddp": base / "ddp",
            "ddp_wall": ddp_wall}


DDP = ["trainer.devices=2", "trainer.strategy=ddp"]


def same_surfaces(out: Path, whole: Path) -> None:
    for centre in ("minimum", "landing"):
        same_npz(whole / centre / "surface.npz", out / centre / "surface.npz")
        same_tensors(whole / centre / "directions.safetensors", out / centre / "directions.safetensors")
        assert read_json(out / centre / "summary.json") == read_json(whole / centre / "summary.json")


@pytest.mark.parametrize("sig,seed,at", moments("landscape-shard", 3))
def test_landscape_shard_stopped_at_a_random_moment_resumes_to_the_same_surfaces(sweep_reference, tmp_path, sig,
                                                                                  seed, at):
    import shutil

    ref = sweep_reference
    shared = tmp_path / "surfaces"
    shutil.copytree(ref["shard0"], shared)
    job = tmp_path / "job1"
    cmd = script("landscape", [*ref["args"], "shard=1", "num_shards=2", f"landscape.out_dir={shared}"], job)
    code, err = stop_at(cmd, at * ref["shard_wall"], sig, job)
    how = check_stopped(code, err, sig, job, shared / "landing" / "summary.json")
    print(f"landscape shard {sig.name} seed {seed} at {at:.3f} x {ref['shard_wall']:.1f} s: {how}")
    rerun(cmd)
    same_surfaces(shared, ref["whole"])
    no_temporaries_left(shared)


@pytest.mark.parametrize("sig,seed,at", moments("landscape-ddp", 2))
def test_landscape_on_two_processes_stopped_at_a_random_moment_resumes_to_the_same_surfaces(
        sweep_reference, tmp_path, sig, seed, at):
    ref = sweep_reference
    out, job = tmp_path / "surfaces", tmp_path / "job"
    cmd = script("landscape", [*ref["args"], *DDP, f"landscape.out_dir={out}"], job)
    code, err = stop_at(cmd, at * ref["ddp_wall"], sig, job)
    how = check_stopped(code, err, sig, job, out / "landing" / "summary.json")
    print(f"landscape ddp {sig.name} seed {seed} at {at:.3f} x {ref['ddp_wall']:.1f} s: {how}")
    rerun(cmd)
    # against the uninterrupted two-process run: the processes' batches group the points otherwise than one
    # process does, and the distilled cost's values then differ from a one-process sweep's by rounding (1e-6)
    same_surfaces(out, ref["ddp"])
    no_temporaries_left(out)


# -- landing ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def landing_reference(digits_run, tmp_path_factory) -> dict:
    from test_landing import SMALL

    out = tmp_path_factory.mktemp("landing_reference") / "run"
    args = [f"distilled={digits_run}", "logger=none", *SMALL]
    return {"args": args, "out": out, "wall": timed_run(script("landing", args, out), out)}


def same_landing(out: Path, ref: Path) -> None:
    a, b = read_json(ref / "landing_stats.json"), read_json(out / "landing_stats.json")
    assert {k: v for k, v in a.items() if k != "distilled"} == {k: v for k, v in b.items() if k != "distilled"}
    assert (out / "landing_stats.csv").read_text() == (ref / "landing_stats.csv").read_text()
    for p in (ref / "landing_parts").glob("*.safetensors"):
        same_tensors(p, out / "landing_parts" / p.name)


@pytest.mark.parametrize("sig,seed,at", moments("landing", 3))
def test_landing_stopped_at_a_random_moment_resumes_to_the_same_statistics(landing_reference, tmp_path, sig, seed, at):
    ref = landing_reference
    out = tmp_path / "run"
    cmd = script("landing", ref["args"], out)
    code, err = stop_at(cmd, at * ref["wall"], sig, out)
    how = check_stopped(code, err, sig, out, out / "landing_stats.csv")
    print(f"landing {sig.name} seed {seed} at {at:.3f} x {ref['wall']:.1f} s: {how}")
    rerun(cmd)
    same_landing(out, ref["out"])
    no_temporaries_left(out)


# -- study --------------------------------------------------------------------------------------------------
def study_args() -> list[str]:
    from test_study import as_list

    return ["study.arch=mlp",
            as_list("study.overrides.distill", ["distill.steps=30", "distill.val_every=10", "distill.val_inits=2",
                                                "distill.eval_inits=4", "direct.epochs=2", "baseline.tune_inits=2",
                                                "baseline.lr_grid=[0.1,1.0]", "snapshot_every=10",
                                                "checkpoint_every=10", "distill.batching=vmap"]),
            as_list("study.overrides.landscape", ["experiment=plane_minima", "sweep.resolution=[5,5]",
                                                  "landscape.train_subsample=200", "landscape.batching=loop"]),
            as_list("study.overrides.landing", ["analysis.inits=4", "analysis.polish_inits=2",
                                                "analysis.polish_steps=5", "analysis.curvature_inits=2",
                                                "analysis.curvature_examples=100", "analysis.power_iters=5",
                                                "analysis.hutchinson_probes=2", "analysis.train_examples=200",
                                                "analysis.test_examples=200", "analysis.barrier_points=3",
                                                "baseline.tune_inits=2", "baseline.lr_grid=[0.1,1.0]"]),
            as_list("study.overrides.instances", ["instances.models=3", "instances.neighbours=2",
                                                  "instances.test_limit=100"])]


@pytest.fixture(scope="module")
def study_reference(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("study_reference") / "study"
    return {"out": out, "wall": timed_run(script("study", study_args(), out), out)}


def same_study(out: Path, ref: Path) -> None:
    for name in ("distilled.safetensors", "direct_minimum.safetensors"):
        same_tensors(ref / "distill" / name, out / "distill" / name)
    assert results(read_json(out / "distill" / "metrics.json")) == results(read_json(ref / "distill" / "metrics.json"))
    surfaces = sorted(p.relative_to(ref) for p in (ref / "landscape").rglob("surface.npz"))
    assert surfaces and sorted(p.relative_to(out) for p in (out / "landscape").rglob("surface.npz")) == surfaces
    for p in surfaces:
        same_npz(ref / p, out / p)
    same_landing(out / "landing", ref / "landing")
    from test_fault_stages import without_paths
    assert (without_paths(read_json(out / "instances" / "instances.json"))
            == without_paths(read_json(ref / "instances" / "instances.json")))
    log = read_json(out / "study.json")["stages"]
    assert list(log) == list(read_json(ref / "study.json")["stages"])
    assert (out / "report" / "report.html").exists()


@pytest.mark.parametrize("sig,seed,at", moments("study", 2))
def test_study_stopped_at_a_random_moment_resumes_to_the_same_results(study_reference, tmp_path, sig, seed, at):
    ref = study_reference
    out = tmp_path / "study"
    cmd = script("study", study_args(), out)
    code, err = stop_at(cmd, at * ref["wall"], sig, out)
    how = check_stopped(code, err, sig, out, out / "report" / "study_stage.json")
    stopped_in_distill = (out / "distill" / "checkpoints" / "last.ckpt").exists() and not (
        out / "distill" / "complete.json").exists()
    print(f"study {sig.name} seed {seed} at {at:.3f} x {ref['wall']:.1f} s: {how}"
          + (", in the distillation after a checkpoint" if stopped_in_distill else ""))
    printed = rerun(cmd)
    if stopped_in_distill:  # the study goes on from the stopped distillation's checkpoint, not from step 0
        assert "resuming from" in printed, printed[-3000:]
    assert [p.name for p in (out / "distill" / "checkpoints").iterdir()] == ["last.ckpt"]
    same_study(out, ref["out"])
    no_temporaries_left(out)


def test_killed_rank_zero_takes_the_other_processes_with_it(digits_run, tmp_path):
    """kill -9 of a two-process (DDP) landscape's rank 0 once rank 1 has joined: rank 1 ends at once. It
    outlived rank 0, an orphan computing on until gloo noticed the dead peer (over 2 s here; in a probe still
    running 1 s after the kill, gone 20 s after)."""
    job = tmp_path / "job"
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen(script("landscape", [f"distilled={digits_run}", *SWEEP, *DDP,
                                                     f"landscape.out_dir={tmp_path / 'surfaces'}"], job),
                                cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.time() + 300
        while "GLOBAL_RANK: 1" not in log.read_text() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.5)  # inside the rendezvous with rank 0
        others = [p for p in processes_naming(str(job)) if p != proc.pid]
        assert others, "rank 1 was not found"
    finally:
        proc.kill()
        proc.wait()
    deadline = time.time() + 2
    while (left := [p for p in processes_naming(str(job))]) and time.time() < deadline:
        time.sleep(0.1)
    assert not left, f"rank 1 outlived the killed rank 0 by 2 s: {left}"
