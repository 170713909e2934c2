"""Resumable distillation: SIGKILL mid-run, resume with ckpt_path=last, end with the batch an
uninterrupted run of the same seed ends with; finished jobs are skipped on rerun; checkpoints are
weights_only-loadable and artifacts are never pickles."""
from __future__ import annotations

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

from conftest import REPO, compose_cfg
from distillscape.artifacts import read_json, read_tensors
from distillscape.data import StepIndexedBatches
from distillscape.resume import RngState

CKPT_EVERY, SNAP_EVERY = 20, 5
RUN = ["dataset=digits", "arch=mlp", "distill.steps=80", "distill.val_every=40", "distill.val_inits=2",
       "distill.eval_inits=4", "direct.epochs=1", "baseline.tune_inits=2", "baseline.lr_grid=[0.1]",
       "logger=none", f"checkpoint_every={CKPT_EVERY}", f"snapshot_every={SNAP_EVERY}", "seed=3",
       # pinned (written when `auto` timed the paths in each process; it now follows a fixed rule, and
       # the two paths round differently: a run on the other one matches to ~1e-5, not bit for bit)
       "distill.batching=vmap"]


def test_step_indexed_batches_resume_anywhere():
    """Oracle: the batches read from step k by a fresh iterator are the ones an uninterrupted
    iteration reads from step k on; each epoch is a permutation (no repeats)."""
    n, bs = 53, 8  # 6 batches per epoch, 5 images dropped
    step = {"k": 0}
    s = StepIndexedBatches(n, bs, start=lambda: step["k"], seed=7)
    stream = []
    for epoch in range(3):
        step["k"] = epoch * len(s)
        batches = list(s)
        assert len(batches) == 6
        flat = [i for b in batches for i in b]
        assert len(set(flat)) == len(flat) == 48
        stream += batches
    for k in (0, 1, 5, 6, 10, 17):
        step["k"] = k
        first = list(s)
        assert first == stream[k:(k // 6 + 1) * 6]
    assert stream[:6] != stream[6:12]  # epochs are shuffled differently
    other = StepIndexedBatches(n, bs, start=lambda: 0, seed=8)
    assert list(other) != stream[:6]  # and differently per seed


def test_rng_state_roundtrip_weights_only(tmp_path):
    cb = RngState()
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    torch.rand(3), np.random.rand(2), random.random()
    torch.save({"callbacks": {"RngState": cb.state_dict()}}, tmp_path / "x.ckpt")
    expected = (torch.rand(4), np.random.rand(3), random.random())
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    cb.load_state_dict(torch.load(tmp_path / "x.ckpt", weights_only=True)["callbacks"]["RngState"])
    torch.rand(7), np.random.rand(7), random.random()  # setup after the restore draws too: must not matter
    cb.on_train_batch_start(None, None, None, 0)
    got = (torch.rand(4), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def _snapshots(out: Path) -> dict[int, float]:
    return {int(p.stem.removeprefix("distilled_step")): p.stat().st_mtime_ns
            for p in (out / "snapshots").glob("distilled_step*.safetensors")}


def test_sigkill_resume_matches_uninterrupted(tmp_path):
    from distillscape.tasks.distill import distill

    # the run that is killed: a real process, SIGKILL once a snapshot past the first checkpoint exists
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "distillscape.tasks.distill", *RUN, f"hydra.run.dir={killed}",
                             "trainer.enable_progress_bar=false"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (killed / "checkpoints" / "last.ckpt").exists() and max(_snapshots(killed), default=0) > CKPT_EVERY:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (killed / "metrics.json").exists() and not (killed / "complete.json").exists()

    ckpt = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)  # no pickle of objects
    at_ckpt = ckpt["global_step"]
    snaps = _snapshots(killed)
    reached = max(snaps)  # the run had done at least this many steps, fewer than reached + SNAP_EVERY
    assert 0 < at_ckpt < 80 and reached + SNAP_EVERY - at_ckpt <= CKPT_EVERY, (at_ckpt, reached)
    assert {"images", "labels", "log_lrs"} <= {k.split(".")[-1] for k in ckpt["state_dict"]}
    assert ckpt["optimizer_states"][0]["state"], "optimizer state (Adam moments) is in the checkpoint"
    assert "RngState" in ckpt["callbacks"]

    # resume in the same directory, as `hydra.run.dir=<old dir> ckpt_path=last` does
    distill(compose_cfg("distill", [*RUN, "ckpt_path=last"], killed))
    after = _snapshots(killed)
    assert all(after[k] == snaps[k] for k in snaps if k <= at_ckpt), "steps before the checkpoint were redone"
    assert max(after) == 80

    fresh = tmp_path / "fresh"
    distill(compose_cfg("distill", RUN, fresh))
    a, b = read_tensors(fresh / "distilled.safetensors"), read_tensors(killed / "distilled.safetensors")
    for k in ("images", "labels", "lrs"):
        # CPU kernels are deterministic for one thread count, so the resumed batch is bit-identical
        assert torch.equal(a[k], b[k]), (k, (a[k] - b[k]).abs().max())
    assert read_json(fresh / "metrics.json")["test/onestep_acc_mean"] == \
        read_json(killed / "metrics.json")["test/onestep_acc_mean"]


def test_rerun_skips_complete_and_refuses_other_job(digits_run):
    from conftest import DIGITS_RUN_OVERRIDES
    from distillscape.tasks.distill import main

    before = {p: p.stat().st_mtime_ns for p in digits_run.iterdir() if p.is_file()}
    metrics = main(compose_cfg("distill", DIGITS_RUN_OVERRIDES, digits_run))
    assert metrics == read_json(digits_run / "metrics.json")
    changed = [p.name for p, t in before.items() if p.stat().st_mtime_ns != t and p.name != "config_resolved.yaml"]
    assert changed == [], f"a complete job was recomputed: {changed}"
    # the same directory for another job is refused with one line, not silently overwritten
    with pytest.raises(SystemExit) as e:
        main(compose_cfg("distill", [*DIGITS_RUN_OVERRIDES, "seed=1"], digits_run))
    assert e.value.code == 2


def test_artifacts_are_never_pickles(digits_run):
    for p in digits_run.rglob("*"):
        if p.is_file() and p.suffix in (".safetensors", ".json"):
            head = p.read_bytes()[:2]
            assert head != b"\x80\x04" and head != b"\x80\x02", f"{p} is a pickle"
    assert not list(digits_run.rglob("*.pt")) and not list(digits_run.rglob("*.pkl"))


# -- finished jobs of earlier releases: settings added since then ---------------------------------------------------
def _old_run_copy(tmp_path):
    """tests/data/run_v0_1 (finished before distill.method, distill.eval, env, rl, direct.converge... existed)
    copied, and the command that made it, now pointed at the copy."""
    import shutil

    import yaml

    run = tmp_path / "old_run"
    shutil.copytree(REPO / "tests" / "data" / "run_v0_1", run)
    record = yaml.safe_load((run / "config_resolved.yaml").read_text())
    return run, record, [*record["overrides"], "paths.data_dir=./data"]


def _files(path):
    return {p: p.stat().st_mtime_ns for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_job_finished_before_the_newer_settings_existed_is_recognised(tmp_path):
    """complete.json holding the digest of the config as that release wrote it (the recorded config, which has
    none of the settings added since): the same command is that finished job, returned, nothing recomputed."""
    from distillscape.resume import NOT_IDENTITY, _without, fingerprint
    from distillscape.tasks.distill import distill

    run, record, overrides = _old_run_copy(tmp_path)
    # the oracle: the recorded config itself, moved here, without what never was the job's identity
    then = _without({**record["config"], "paths": {**record["config"]["paths"], "output_dir": str(run)}}, NOT_IDENTITY)
    (run / "complete.json").write_text(json.dumps({"fingerprint": fingerprint(data=then),
                                                   "overrides": record["overrides"]}))
    before = _files(run)
    assert distill(compose_cfg("distill", overrides, run)) == read_json(run / "metrics.json")
    assert _files(run) == before, "a finished job was recomputed or its directory touched"


@pytest.mark.parametrize("newer", ["direct.converge=true", "distill.eval.protocol=k_steps", "rl.gamma=0.9"])
def test_a_newer_setting_off_its_default_is_another_job(tmp_path, newer):
    """The same finished job with a setting added since set to anything but its default is another job: refused
    in one line, nothing written (skip_complete=false would recompute it, as for any other config)."""
    from distillscape.errors import ConfigError
    from distillscape.resume import NOT_IDENTITY, _without, fingerprint
    from distillscape.tasks.distill import distill

    run, record, overrides = _old_run_copy(tmp_path)
    then = _without({**record["config"], "paths": {**record["config"]["paths"], "output_dir": str(run)}}, NOT_IDENTITY)
    (run / "complete.json").write_text(json.dumps({"fingerprint": fingerprint(data=then),
                                                   "overrides": record["overrides"]}))
    before = _files(run)
    with pytest.raises(ConfigError, match="holds a finished job with another config"):
        distill(compose_cfg("distill", [*overrides, newer], run))
    assert _files(run) == before


def test_the_old_runs_own_marker_is_recognised_where_it_ran():
    """run_v0_1's complete.json (its digest held the run's own directory, /tmp/oldrun/distill) is among the
    digests its command is recognised by there; with a newer setting changed it is not."""
    import yaml

    from distillscape.job import Job
    from distillscape.resume import recognised_digests

    old = REPO / "tests" / "data" / "run_v0_1"
    record = yaml.safe_load((old / "config_resolved.yaml").read_text())
    marker = read_json(old / "complete.json")["config_digest"]
    where = Path(record["config"]["paths"]["output_dir"])
    assert marker in recognised_digests(Job.of(compose_cfg("distill", [*record["overrides"], "paths.data_dir=./data"], where)))
    assert marker not in recognised_digests(Job.of(compose_cfg(
        "distill", [*record["overrides"], "paths.data_dir=./data", "distill.method=dm"], where)))


def test_every_added_setting_has_the_default_old_jobs_ran_with():
    """Each key of resume.ADDED_SETTINGS names a setting of some task with a schema default (what jobs before it
    ran as), and that task's composed default config holds exactly that value."""
    from distillscape.job import Job
    from distillscape.resume import _NO_DEFAULT, ADDED_SETTINGS, _at, schema_default

    tasks = ("distill", "train", "landscape", "landing")
    resolved = {t: Job.of(compose_cfg(t, [] if t in ("distill", "train") else ["distilled=x"], Path("/tmp/unused")))
                .resolved() for t in tasks}
    for key in (k for added in ADDED_SETTINGS for k in added):
        having = [t for t in tasks if schema_default(t, key) is not _NO_DEFAULT]
        assert having, key
        for t in having:
            assert _at(resolved[t], key) == schema_default(t, key), (t, key)
