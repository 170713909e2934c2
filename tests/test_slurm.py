"""Multiruns through a real SLURM cluster on localhost (tests/slurm/cluster.sh): a distillation sweep and
a sharded landscape sweep launched with hydra/launcher=submitit_slurm, every job's outputs checked,
the merged surface compared with an unsharded run.

Needs root (the `slurm` fixture in conftest.py runs the script, which installs slurm-wlm + munge when
absent and starts the daemons); skipped with the script's reason elsewhere. Takes a few minutes on 2
cores: run with `pytest -m slurm`.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import compose_cfg
from distillscape.artifacts import load_distilled, read_json

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
TINY = ["dataset=digits", "arch=mlp", "distill.steps=20", "distill.val_every=20", "distill.val_inits=2",
        "distill.eval_inits=4", "direct.epochs=1", "baseline.tune_inits=2", "baseline.lr_grid=[0.1]",
        "checkpoint_every=10", "snapshot_every=0", "logger=none", "trainer.enable_progress_bar=false"]
SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=20",
         "hydra.launcher.array_parallelism=2", "hydra.launcher.setup=['export DISTILLSCAPE_ON_SLURM=1']"]
LANDSCAPE = ["sweep=plane", "sweep.resolution=[5,4]", "sweep.costs=[test]", "sweep.centres=[minimum]",
             "landscape.batching=loop", "landscape.data_batch=2000"]


def launch(module: str, args: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run([str(Path(sys.executable).parent / f"distillscape-{module}"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_distill_and_sharded_landscape_sweeps_on_slurm(slurm, tmp_path):
    # 1. the distillation study through SLURM: 2 images-per-class x 2 seeds = 4 array jobs
    sweep = tmp_path / "multirun" / "distill"
    launch("distill", ["experiment=sweep_distill", "distill.images_per_class=1,2", "seed=0,1", *TINY, *SLURM,
                       f"hydra.sweep.dir={sweep}"], tmp_path, slurm)
    jobs = sorted(sweep.glob("[0-9]*"), key=lambda p: int(p.name))
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    seen = set()
    for d in jobs:
        overrides = yaml.safe_load((d / ".hydra" / "overrides.yaml").read_text())
        ipc = int(next(o for o in overrides if o.startswith("distill.images_per_class=")).split("=")[1])
        seed = int(next(o for o in overrides if o.startswith("seed=")).split("=")[1])
        seen.add((ipc, seed))
        distilled = load_distilled(d)
        assert distilled.images.shape[0] == 10 * ipc and distilled.meta["config"]["seed"] == seed
        assert read_json(d / "metrics.json")["test/onestep_acc_mean"] > 0.1  # better than chance on 10 classes
        assert (d / "complete.json").exists() and (d / "config_resolved.yaml").exists()
        # it ran as a SLURM array task: Hydra's job id is SLURM's <array job>_<task>
        job_id = yaml.safe_load((d / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"]
        assert "_" in str(job_id) and str(job_id).split("_")[0].isdigit(), job_id
    assert seen == {(1, 0), (1, 1), (2, 0), (2, 1)}
    submission = next((sweep / ".submitit").glob("*/*_submission.sh")).read_text()
    assert "#SBATCH --cpus-per-task=1" in submission and "#SBATCH --time=20" in submission
    assert "export DISTILLSCAPE_ON_SLURM=1" in submission and "#SBATCH --array=0-3%2" in submission

    # 2. a landscape grid around job 0's minimum, in 4 shards as SLURM array tasks, merged by the last
    shards = tmp_path / "multirun" / "landscape"
    launch("landscape", ["experiment=sweep_landscape_shards", f"distilled={jobs[0]}", *LANDSCAPE, "logger=none",
                         *SLURM, f"hydra.sweep.dir={shards}"], tmp_path, slurm)
    assert sorted(p.name for p in shards.glob("[0-9]*")) == ["0", "1", "2", "3"]
    merged = list((shards / "surfaces").rglob("surface.npz"))
    assert len(merged) == 1, list((shards / "surfaces").rglob("*"))
    from distillscape.landscape import read_npz
    from distillscape.tasks.landscape import main as landscape

    surface = read_npz(merged[0])
    assert surface["test/loss"].shape == (5, 4) and np.isfinite(surface["test/loss"]).all()
    # oracle: the same grid computed in one piece here
    whole = landscape(compose_cfg("landscape", [f"distilled={jobs[0]}", *LANDSCAPE, "logger=none",
                                                f"landscape.out_dir={tmp_path / 'whole'}"], tmp_path / "whole"))
    expected = read_npz(whole[0])
    assert np.array_equal(surface["test/loss"], expected["test/loss"])
    assert np.array_equal(surface["test/acc"], expected["test/acc"])
