"""A SLURM job that hits its time limit is requeued and resumes (issue 13, "Nothing lost").

A distillation multirun goes through the real cluster of tests/slurm/cluster.sh (the `slurm` fixture in
conftest.py) with a 1-minute time limit and `max_num_timeout=1`. SLURM sends the job SIGCONT and SIGUSR2
shortly before the limit (`--signal=USR2@1`); submitit's handler calls the launcher's `checkpoint` (the
same job again), requeues it with `scontrol requeue` and exits. The requeued job resumes from
checkpoints/last.ckpt (experiment=sweep_distill sets ckpt_path=last), finishes in its one remaining
allocation and ends with the batch an uninterrupted run of the same overrides ends with, bit for bit.

What was measured on this cluster (slurm-wlm 22.05) and shapes the test:
- slurmctld tests time limits, and sends the --signal warnings, only every 30 s (PERIODIC_TIMEOUT), at
  its start + k * 30 s, and warns at the first test at which less than `signal_delay_s + 30 s` is left.
  A job that starts `p` seconds after a test (1 < p < 30) gets its SIGUSR2 after `60 - p` s: anywhere
  between 30 and 59 s for a job started at random. So the job is submitted held (`--hold`) and released 3 s
  after a test (read from slurmctld's debug2 log): SIGUSR2 after ~55 s. The requeued job starts ~10 s after a
  test (the requeue completes ~4 s after the signal, cluster.sh's AuthInfo=cred_expire=5 holds it 5 s,
  the scheduler runs every 2 s): ~50 s for its second allocation.
- On these 2 shared cores the outer step time varies threefold from one minute to the next (0.19 to
  0.63 s per step measured), so no step count both surely outlasts the first allocation and surely fits
  into the second. The job's process is therefore paused (SIGSTOP) once its checkpoint is half-way: it
  stands for a job whose work outlasts its allocation. SLURM itself wakes it with the SIGCONT it sends
  beside SIGUSR2 at the time limit; the test sends nothing else.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import compose_cfg
from distillscape.artifacts import read_json, read_tensors

# slow only (make test-all): three minutes of a real cluster is more than the default run can spend; it needs
# the same cluster as the `slurm` tests
pytestmark = [pytest.mark.slow]

STEPS, PAUSE_AT, CKPT_EVERY, SNAP_EVERY = 80, 40, 10, 10
RUN = ["dataset=digits", "arch=mlp", "distill.images_per_class=1", "seed=0", f"distill.steps={STEPS}",
       f"distill.val_every={STEPS}", "distill.val_inits=2", "distill.eval_inits=4", "direct.epochs=1",
       "baseline.tune_inits=2", "baseline.lr_grid=[0.1]", f"checkpoint_every={CKPT_EVERY}",
       f"snapshot_every={SNAP_EVERY}", "logger=none", "trainer.enable_progress_bar=false",
       # pinned, as in test_resume: `auto` times vmap against loop in each process and they round differently
       "distill.batching=vmap"]
SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=1",
         "hydra.launcher.signal_delay_s=1", "hydra.launcher.max_num_timeout=1"]
TICK_S = 30       # slurmctld's time-limit test interval
RELEASE_AT_S = 3  # the held job is released this long after a test: SIGUSR2 ~60 - 3 s after it starts


def limit_tests(log: Path) -> list[dt.datetime]:
    """When slurmctld tested time limits (its log at debug2, local time); the first is 30 s after it started."""
    text = log.read_text()
    tests = [m.group(1) for m in re.finditer(r"^\[([\d\-T:.]+)\] debug2: Testing job time limits", text, re.M)]
    started = re.findall(r"^\[([\d\-T:.]+)\] slurmctld version \S+ started", text, re.M)
    return [dt.datetime.fromisoformat(t) for t in started[-1:] + tests]


def release_after_limit_test(log: Path, env: dict, timeout: float = 120) -> tuple[str, dt.datetime]:
    """Wait for the held job, then release it RELEASE_AT_S after slurmctld's next time-limit test."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        held = subprocess.run(["squeue", "-h", "-t", "PD", "-o", "%i %r"], env=env, capture_output=True,
                              text=True).stdout.split()
        if held[1:2] == ["JobHeldUser"]:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"the job was not submitted held within {timeout} s")
    tests = limit_tests(log)
    assert tests, f"no slurmctld start or 'Testing job time limits' line in {log} (cluster.sh sets debug2)"
    release = tests[-1] + dt.timedelta(seconds=RELEASE_AT_S)
    while release < dt.datetime.now():
        release += dt.timedelta(seconds=TICK_S)
    time.sleep((release - dt.datetime.now()).total_seconds())
    subprocess.run(["scontrol", "release", held[0]], env=env, check=True)
    return held[0], release


def job_process(sweep: Path) -> int | None:
    """The pid of the job's python process (srun's task: `python -u -m submitit.core._submit <sweep>/...`)."""
    for p in Path("/proc").iterdir():
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0") if p.name.isdigit() else []
        except OSError:
            continue
        if cmd and Path(cmd[0].decode()).name.startswith("python") and b"submitit.core._submit" in cmd \
                and any(str(sweep).encode() in c for c in cmd):
            return int(p.name)
    return None


def checkpoint_step(path: Path) -> int:
    try:  # written atomically (temporary name, then rename): a complete file or none
        return torch.load(path, weights_only=True)["global_step"]
    except (OSError, RuntimeError, EOFError):
        return -1


def stamps(text: str, what: str) -> list[dt.datetime]:
    """Times of submitit's log lines containing `what` (`submitit INFO (2026-12-02 13:07:48,629) - ...`)."""
    return [dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f") for m in
            re.finditer(r"^submitit \w+ \(([\d\- :,]+)\) - .*" + re.escape(what), text, re.M)]


def _snapshots(out: Path) -> dict[int, float]:
    return {int(p.stem.removeprefix("distilled_step")): p.stat().st_mtime
            for p in (out / "snapshots").glob("distilled_step*.safetensors")}


def test_time_limit_requeue_resumes_and_matches_uninterrupted(slurm, tmp_path):
    from distillscape.tasks.distill import distill

    t0 = time.time()
    ctld_log = Path(slurm["DISTILLSCAPE_SLURM_DIR"]) / "slurmctld.log"
    sweep, job = tmp_path / "multirun", tmp_path / "multirun" / "0"
    with open(tmp_path / "multirun.out", "w") as stdout, open(tmp_path / "multirun.err", "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "distillscape.tasks.distill", "experiment=sweep_distill", *RUN,
                                 *SLURM, "+hydra.launcher.additional_parameters.hold=true", f"hydra.sweep.dir={sweep}"],
                                cwd=tmp_path, env=slurm, stdout=stdout, stderr=stderr)
    try:
        job_id, released = release_after_limit_test(ctld_log, slurm)
    except BaseException:
        proc.kill()
        raise
    # the first allocation: pause its process once it has checkpointed half of the steps
    paused = None
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        if checkpoint_step(job / "checkpoints" / "last.ckpt") >= PAUSE_AT:
            pid = job_process(sweep)
            if pid is not None:
                os.kill(pid, signal.SIGSTOP)
                paused = (dt.datetime.now(), checkpoint_step(job / "checkpoints" / "last.ckpt"))
                break
        time.sleep(0.1)
    try:
        rc = proc.wait(timeout=max(1, deadline + 180 - time.time()))
    finally:
        if proc.poll() is None:
            proc.kill()
    wall_slurm = time.time() - t0

    logs = sorted((sweep / ".submitit").glob("*/*_0_log.out"))
    out = "".join(p.read_text() for p in logs)
    err = "".join(p.with_suffix(".err").read_text() for p in logs if p.with_suffix(".err").exists())
    record = subprocess.run(["scontrol", "show", "job", job_id], env=slurm, capture_output=True, text=True).stdout
    multirun = (tmp_path / "multirun.err").read_text()
    context = (f"job {job_id} released {released:%T}, paused {paused}\n--- job stdout\n{out[-4000:]}\n"
               f"--- job stderr\n{err[-2500:]}\n--- scontrol\n{record}\n--- multirun\n{multirun[-2500:]}")
    assert paused is not None, f"the job never reached step {PAUSE_AT} in its first allocation\n{context}"
    assert rc == 0, context

    # the time limit cut the job once (SIGCONT + SIGUSR2 from slurmctld, its --signal warning), submitit
    # requeued it, and the requeued job finished and exited 0
    starts, signals = stamps(out, "Starting with JobEnvironment"), stamps(out, "Caught signal SIGUSR2")
    assert len(starts) == 2 and len(signals) == 1 and paused[0] < signals[0] < starts[1], context
    assert "this job is timed-out" in out and len(stamps(out, "Requeued job")) == 1, context
    assert "Job completed successfully" in out, context
    assert re.search(rf"job_signal: 12 of running JobId={re.escape(job_id)}\b", ctld_log.read_text()), context
    assert str(yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"]) == job_id
    fields = dict(re.findall(r"(\w+)=(\S+)", record))
    assert (fields.get("JobState"), fields.get("Restarts"), fields.get("ExitCode")) == ("COMPLETED", "1", "0:0"), \
        context

    # it resumed from the checkpoint the first allocation wrote, and did not redo the steps before it
    resumed = [int(s) for s in re.findall(r"resuming from .{0,400}? at step (\d+)", " ".join(out.split()))]
    assert resumed == [paused[1]] and PAUSE_AT <= resumed[0] < STEPS, context  # (rich wraps long lines)
    snaps = _snapshots(job)
    assert max(snaps) == STEPS
    second = starts[1].timestamp()
    assert all(t < second for k, t in snaps.items() if k <= resumed[0]), "steps before the checkpoint were redone"
    assert all(t > second for k, t in snaps.items() if k > resumed[0]), "steps after the checkpoint were not redone"
    assert (job / "complete.json").exists()

    # the same batch as an uninterrupted run of the same overrides
    fresh = tmp_path / "uninterrupted"
    distill(compose_cfg("distill", ["experiment=sweep_distill", *RUN], fresh))
    a, b = read_tensors(fresh / "distilled.safetensors"), read_tensors(job / "distilled.safetensors")
    for k in ("images", "labels", "lrs"):
        assert torch.equal(a[k], b[k]), (k, (a[k] - b[k]).abs().max())
    assert read_json(fresh / "metrics.json")["test/onestep_acc_mean"] == \
        read_json(job / "metrics.json")["test/onestep_acc_mean"]

    s = {k: (b - a).total_seconds() for k, (a, b) in {"pause": (starts[0], paused[0]), "cut": (starts[0], signals[0]),
         "gap": (signals[0], starts[1]), "rest": (starts[1], stamps(out, "Job completed successfully")[0])}.items()}
    print(f"released {released:%T}; paused at step {paused[1]} {s['pause']:.0f} s into the first allocation, cut by "
          f"SIGUSR2 after {s['cut']:.0f} s; requeued job started {s['gap']:.0f} s later, resumed at step {resumed[0]}, "
          f"finished after {s['rest']:.0f} s; multirun {wall_slurm:.0f} s, test {time.time() - t0:.0f} s")
