"""Checked before work, for every job: a value that cannot work is one line (exit 2) before anything is
computed or written, through the real console scripts (`cli` runs a script's own code path in this process)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from distillscape.artifacts import read_json
from test_faults import TINY, cli, finished_run, one_line, tree  # noqa: F401 (finished_run: a fixture)


@pytest.mark.parametrize("task,args,needle", [
    # additions no task reads: refused with the nearest key, not run with the defaults
    ("distill", ["+distil.steps=3"], "unknown key distil.steps: did you mean distill.steps?"),
    ("distill", ["+foo=bar"], "unknown key foo: the task's keys are: arch, baseline"),
    ("train", ["+direct.epoch=3"], "unknown key direct.epoch. Did you mean direct.epochs?"),
    ("landscape", ["+swep.seed=1"], "unknown key swep.seed: did you mean sweep.seed?"),
    ("landing", ["+analysis_inits=3"], "unknown key analysis_inits"),
    ("study", ["+stuy.force=true"], "unknown key stuy.force: did you mean study.force?"),
    # a policy network given a dataset
    ("distill", ["arch=policy_mlp"], "arch PolicyMLP is a policy network for an RL task"),
    ("train", ["arch=atari_actor"], "arch AtariActor is a policy network for an RL task"),
    # the data cannot serve the job: found by reading it, before the baseline trains
    ("distill", ["dataset.val_size=5000"], "dataset.val_size=5000 leaves no training data: digits has 1438"),
    ("train", ["dataset.val_size=1438"], "choose dataset.val_size below 1438"),
    ("distill", ["dataset.train_subset=5"], "dataset.train_subset=5 keeps 5 training images, 0 of class"),
    ("distill", ["dataset.train_subset=30", "distill.images_per_class=3"], "needs 3 of every class"),
])
def test_refused_in_one_line_before_any_work(task, args, needle, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    extra = ["distilled=/nowhere"] if task in ("landscape", "landing") else []
    code, err = cli(task, [*TINY[:2], *args, *extra, "logger=none", f"hydra.run.dir={out}"] if task in ("distill", "train")
                    else [*args, *extra, f"hydra.run.dir={out}"], monkeypatch, capsys)
    assert code == 2 and needle in one_line(err), err
    assert not out.exists() or not tree(out), "a refused job wrote into its directory"  # (Hydra makes it, empty)


def test_a_plus_still_adds_what_is_read(tmp_path, monkeypatch, capsys):
    """A Trainer argument and a study's mapping entry are what a `+` is for: accepted."""
    from distillscape.config import validate
    from conftest import compose_cfg

    validate(compose_cfg("distill", ["+trainer.fast_dev_run=true"], tmp_path))
    validate(compose_cfg("study", ["+study.tasks.landing=none"], tmp_path))


def test_refusals_into_a_finished_run_leave_it_as_it_was(finished_run, monkeypatch, capsys):
    before = tree(finished_run)
    for args in (["+distil.steps=3"], ["arch=policy_mlp"], ["dataset.val_size=5000"]):
        code, err = cli("distill", [*args, f"hydra.run.dir={finished_run}"], monkeypatch, capsys)
        assert code == 2, err
        one_line(err)
    assert tree(finished_run) == before


# -- a multirun: every job checked at submission, the good ones run, the bad ones are listed -----------------
JOB = ["dataset=digits", "arch=mlp", "distill.steps=4", "distill.val_every=2", "distill.val_inits=2",
       "distill.eval_inits=2", "direct.epochs=1", "baseline.tune_inits=2", "baseline.lr_grid=[0.1]",
       "checkpoint_every=2", "snapshot_every=0", "trainer.enable_progress_bar=false", "logger=none",
       "distill.batching=vmap"]


def test_a_bad_job_is_named_at_submission_and_the_good_jobs_finish(tmp_path, monkeypatch, capsys):
    """Basic launcher (jobs one after the other in this process): the bad job in the middle was found only when
    it started, after job 0 had trained, and job 2 never ran."""
    from distillscape.report import read_runs, refused_jobs, render

    sweep = tmp_path / "sweep"
    code, err = cli("distill", ["-m", *JOB, "distill.lr_init=0.02,0,0.01", f"hydra.sweep.dir={sweep}"], monkeypatch,
                    capsys)
    lines = [line for line in err.splitlines() if line.startswith("distillscape:")]
    assert code == 2 and "Traceback" not in err, err
    # the bad job's line came first (at submission), naming it by the override that tells it from the others
    assert lines[0] == "distillscape: job 1 (distill.lr_init=0): ConfigError: distill.lr_init=0.0 must be > 0.0", err
    assert "1 of 3 jobs of" in lines[-1] and "did not run (job 1 (distill.lr_init=0))" in lines[-1], err
    for good in ("0", "2"):
        assert read_json(sweep / good / "metrics.json")["test/onestep_acc_mean"] >= 0
        assert (sweep / good / "complete.json").exists()
    assert not (sweep / "1").exists() or not tree(sweep / "1")
    assert [j["num"] for j in read_json(sweep / "refused_jobs.json")["jobs"]] == [1]
    # the report on the sweep reads its two jobs and says which one is missing, and why
    runs = read_runs([sweep])
    assert [r.path.name for r in runs] == ["0", "2"]
    (line,) = refused_jobs(sweep)
    assert line.startswith("job 1 (") and "distill.lr_init=0)" in line and "must be > 0.0" in line
    assert "did not run: ConfigError: distill.lr_init=0.0 must be &gt; 0.0" in render(runs, "sweep")

    # fixed and run again into the same sweep: the finished jobs are kept, the missing one runs, none is listed
    before = {p: p.stat().st_mtime_ns for p in (sweep / "0").glob("*.safetensors")}
    code, err = cli("distill", ["-m", *JOB, "distill.lr_init=0.02,0.03,0.01", f"hydra.sweep.dir={sweep}"],
                    monkeypatch, capsys)
    assert code == 0, err
    assert (sweep / "1" / "complete.json").exists() and not (sweep / "refused_jobs.json").exists()
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())


def test_a_sweep_of_only_bad_jobs_is_refused_whole_before_anything_is_written(tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweep"
    code, err = cli("distill", ["-m", *JOB, "distill.lr_init=0,-1", "dataset.val_size=5000",
                                f"hydra.sweep.dir={sweep}"], monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.startswith("distillscape:")]
    assert code == 2 and "Traceback" not in err, err
    assert [line.split(":")[1] for line in lines[:2]] == [" job 0 (distill.lr_init=0)", " job 1 (distill.lr_init=-1)"]
    assert "every job of this multirun refused" in lines[-1] and len(lines) == 3, err
    assert not sweep.exists()


def test_joblib_runs_the_good_jobs_of_a_sweep_with_a_bad_one(tmp_path):
    """joblib: the bad job aborted the pool and the good jobs left nothing."""
    sweep = tmp_path / "sweep"
    proc = subprocess.run([str(Path(sys.executable).parent / "distillscape-distill"), "-m", *JOB,
                           "dataset.train_subset=5,null", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                           f"hydra.sweep.dir={sweep}"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    first = next(line for line in proc.stderr.splitlines() if line.startswith("distillscape:"))
    assert first.startswith("distillscape: job 0 (dataset.train_subset=5): ConfigError: dataset.train_subset=5 keeps")
    assert read_json(sweep / "1" / "metrics.json")["test/onestep_acc_mean"] >= 0
    assert [j["num"] for j in read_json(sweep / "refused_jobs.json")["jobs"]] == [0]


@pytest.mark.parametrize("task,args,needle", [
    # a study's later stage: found after the distillation had run
    ("study", ["experiment=study_digits", "study.overrides.landing=[\"analysis.inits=0\"]"],
     "study stage landing (landing): analysis.inits=0 must be >= 1"),
    ("study", ["experiment=study_digits", "study.overrides.distill=[\"dataset.train_subset=5\"]"],
     "study stage distill (distill): dataset.train_subset=5 keeps 5 training images"),
    # a landing that distills first: its distillation is checked before the directory is made
    ("landing", ["distill_first=true", "distill_overrides=[\"distill.lr_init=-1\"]", "logger=none"],
     "distill.lr_init=-1.0 must be > 0"),
])
def test_a_later_stage_is_checked_before_the_first_runs(task, args, needle, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    code, err = cli(task, [*args, f"hydra.run.dir={out}"], monkeypatch, capsys)
    assert code == 2 and needle in one_line(err), err
    assert not out.exists() or not tree(out)


def test_wandb_online_without_a_server_is_one_line_before_work(tmp_path, monkeypatch, capsys):
    """An API key configured and no way to the server: wandb itself retried for 108 s and printed 84 lines. The
    server here is a closed local port (no test reaches the network)."""
    import time

    from conftest import compose_cfg
    from distillscape.tasks.common import check_logger

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = tmp_path / "run"
    t0 = time.perf_counter()
    code, err = cli("distill", [*JOB, "logger=wandb", f"hydra.run.dir={out}"], monkeypatch, capsys)
    line = one_line(err)
    assert code == 2 and "127.0.0.1:9 cannot be reached" in line and "logger.offline=true" in line, err
    assert "WANDB_MODE=offline" in line and time.perf_counter() - t0 < 60
    assert not out.exists() or not tree(out)
    # offline (by the key, or by WANDB_MODE) needs no server
    check_logger(compose_cfg("distill", ["logger=wandb", "logger.offline=true"], tmp_path).logger)
    monkeypatch.setenv("WANDB_MODE", "offline")
    check_logger(compose_cfg("distill", ["logger=wandb"], tmp_path))


@pytest.mark.parametrize("body,needle", [
    ("batch_size: many\n", "Value 'many' of type 'str' could not be converted to Integer"),
    ("batchsize: 3\n", "Key 'batchsize' not in 'DatasetConfig' (did you mean batch_size?)"),
    ("batch_size: [1,\n", "YAML syntax error in"),
])
def test_a_broken_file_under_config_dir_says_what_is_wrong_in_it(body, needle, tmp_path, monkeypatch, capsys):
    """The line named the file ("In 'dataset/mine': ValidationError raised while composing config:") and left
    out what was wrong in it."""
    conf = tmp_path / "conf"
    (conf / "dataset").mkdir(parents=True)
    mine = conf / "dataset" / "mine.yaml"
    mine.write_text("defaults:\n  - schema\n  - _self_\nname: digits\n" + body)
    out = tmp_path / "run"
    code, err = cli("distill", ["--config-dir", str(conf), "dataset=mine", "logger=none", f"hydra.run.dir={out}"],
                    monkeypatch, capsys)
    line = one_line(err)
    assert code == 2 and str(mine) in line and needle in line, err
    assert not out.exists() or not tree(out)


# -- every count option at its smallest allowed value (the landing's: tests/test_landing.py) -------------------
def test_every_count_of_distill_at_its_smallest_runs(tmp_path):
    from conftest import compose_cfg
    from distillscape.tasks.distill import distill

    ones = [*JOB, "distill.steps=1", "distill.val_every=1", "distill.val_inits=1", "distill.eval_inits=1",
            "distill.inits_per_step=1", "distill.images_per_class=1", "distill.init_chunk=1", "checkpoint_every=1",
            "snapshot_every=1", "baseline.tune_inits=1", "direct.epochs=1", "dataset.batch_size=1",
            "dataset.eval_batch_size=1", "dataset.val_size=1", "dataset.train_subset=60", "dataset.split_seed=1"]
    ones = [o for o in ones if not o.startswith("distill.steps=4")]
    m = distill(compose_cfg("distill", ones, tmp_path / "run"))
    assert m["test/onestep_inits"] == 1 and m["random_real/inits"] == 1 and 0 <= m["test/onestep_acc_mean"] <= 1


def test_every_count_of_a_landscape_and_instances_at_its_smallest_runs(digits_run, tmp_path):
    import numpy as np

    from conftest import compose_cfg
    from distillscape.tasks.instances import instances
    from distillscape.tasks.landscape import landscape

    (surface,) = landscape(compose_cfg("landscape", [
        f"distilled={digits_run}", "logger=none", "sweep.resolution=[2,2]", "landscape.points_per_batch=1",
        "landscape.data_batch=1", "landscape.train_subsample=1", "sweep.costs=[train,distilled]"], tmp_path / "ls"))
    grid = np.load(surface)
    assert all(v.shape[-2:] == (2, 2) for k, v in grid.items() if k.startswith(("train", "distilled")))
    (line,) = landscape(compose_cfg("landscape", [
        f"distilled={digits_run}", "logger=none", "sweep=line", "sweep.resolution=[2]", "sweep.costs=[distilled]"],
        tmp_path / "line"))
    assert line.exists()
    result = instances(compose_cfg("instances", [f"distilled={digits_run}", "logger=none", "instances.models=1",
                                                 "instances.neighbours=1", "instances.per_page=1",
                                                 "instances.test_limit=1"], tmp_path / "inst"))
    assert result


# -- sizes estimated before work, for every task (the distillation's: tests/test_faults.py) ------------------------
@pytest.mark.parametrize("task,args,needle", [
    ("train", ["dataset=cifar10", "arch=convnet", "arch.width_channels=4096", "dataset.batch_size=100000"],
     "this training needs about"),
    ("landscape", ["landscape.points_per_batch=100000", "landscape.data_batch=1048576"], "this sweep needs about"),
    ("landing", ["analysis.inits=100000", "analysis.data_chunk=100000"], "this landing analysis needs about"),
])
def test_a_job_too_big_for_memory_is_refused_before_work(task, args, needle, digits_run, tmp_path, monkeypatch,
                                                          capsys):
    out = tmp_path / "run"
    run = [] if task == "train" else [f"distilled={digits_run}"]
    code, err = cli(task, [*run, *args, "logger=none", f"hydra.run.dir={out}"], monkeypatch, capsys)
    line = one_line(err)
    assert code == 2 and needle in line and "GiB available" in line and "lower" in line, err
    assert not out.exists() or not tree(out)
