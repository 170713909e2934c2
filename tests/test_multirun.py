"""Hydra multiruns of the real app: the sweep directory layout, the launcher configs, W&B groups shared
by a sweep's jobs, and a rerun that skips the jobs already complete."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from distillscape.artifacts import load_distilled, read_json
from distillscape.tasks.common import CONF_DIR
from distillscape.tracking import read_run_records

# tiny jobs: digits, mlp, a few outer steps
TINY = ["dataset=digits", "arch=mlp", "distill.steps=20", "distill.val_every=20", "distill.val_inits=2",
        "distill.eval_inits=4", "direct.epochs=1", "baseline.tune_inits=2", "baseline.lr_grid=[0.1]",
        "checkpoint_every=10", "snapshot_every=0", "trainer.enable_progress_bar=false"]


def compose_hydra(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("distill", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("launcher,target", [
    ("basic", "BasicLauncher"), ("joblib", "JoblibLauncher"),
    ("submitit_local", "LocalLauncher"), ("submitit_slurm", "SlurmLauncher")])
def test_launcher_configs_compose_and_override(launcher, target):
    cfg = compose_hydra([f"hydra/launcher={launcher}"])
    assert cfg.hydra.launcher._target_.endswith(target)
    sweep = OmegaConf.to_container(cfg.hydra.sweep)  # multirun/<date>/<time>/<job num>
    assert sweep["dir"].startswith("multirun/${now:") and sweep["subdir"] == "${hydra.job.num}"


def test_slurm_launcher_has_the_cluster_keys_and_takes_overrides():
    cfg = compose_hydra(["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=240",
                         "hydra.launcher.cpus_per_task=8", "hydra.launcher.gpus_per_node=1", "hydra.launcher.mem_gb=32",
                         "hydra.launcher.array_parallelism=4", "hydra.launcher.setup=[module load cuda,echo hi]"])
    la = cfg.hydra.launcher
    assert (la.partition, la.timeout_min, la.cpus_per_task, la.gpus_per_node, la.mem_gb, la.array_parallelism) == \
        ("gpu", 240, 8, 1, 32, 4)
    assert list(la.setup) == ["module load cuda", "echo hi"]
    # the keys the plugin's own schema knows: a typo is refused rather than silently ignored
    with pytest.raises(Exception, match="partion"):
        compose_hydra(["hydra/launcher=submitit_slurm", "hydra.launcher.partion=gpu"])


def test_sweep_experiment_configs_sweep_what_they_say():
    d = compose_hydra(["experiment=sweep_distill"])
    assert str(d.hydra.mode) == "RunMode.MULTIRUN" and d.ckpt_path == "last"
    assert set(d.hydra.sweeper.params) == {"distill.images_per_class", "arch", "seed"}
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        s = compose("landscape", overrides=["experiment=sweep_landscape_shards"], return_hydra_config=True)
    assert s.hydra.sweeper.params.shard == "range(0,4)" and s.num_shards == 4
    assert OmegaConf.to_container(s.landscape)["out_dir"] == "${hydra:sweep.dir}/surfaces"  # shared by the shards


def run_app(args: list[str], cwd: Path, env: dict | None = None) -> str:
    # the console script, as users run it (`python -m` is tested on its own below)
    proc = subprocess.run([str(Path(sys.executable).parent / "distillscape-distill"), *args], cwd=cwd,
                          env={**{k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WANDB_MODE")},
                               "WANDB_SILENT": "true", **(env or {})},
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_multirun_layout_wandb_group_and_rerun_skips_complete(tmp_path):
    sweep = tmp_path / "multirun" / "2026-11-25" / "12-00-00"
    sweep_args = ["experiment=sweep_distill", "distill.images_per_class=1", "arch=mlp", "seed=0,1", *TINY,
                  "logger=wandb", f"hydra.sweep.dir={sweep}"]
    env = {"HOME": str(tmp_path), "NETRC": str(tmp_path / ".netrc")}  # no key configured: offline by default
    run_app([*sweep_args, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], tmp_path, env)

    assert (sweep / "multirun.yaml").exists()
    groups = set()
    for job, seed in (("0", 0), ("1", 1)):
        d = sweep / job
        overrides = yaml.safe_load((d / ".hydra" / "overrides.yaml").read_text())
        assert f"seed={seed}" in overrides and "arch=mlp" in overrides
        assert yaml.safe_load((d / ".hydra" / "config.yaml").read_text())["seed"] == seed
        resolved = yaml.safe_load((d / "config_resolved.yaml").read_text())
        assert resolved["config"]["seed"] == seed and resolved["config"]["paths"]["output_dir"] == str(d)
        assert "${" not in (d / "config_resolved.yaml").read_text()
        assert load_distilled(d).meta["config"]["seed"] == seed
        assert read_json(d / "metrics.json")["test/onestep_acc_mean"] > 0
        assert (d / "complete.json").exists() and (d / "checkpoints" / "last.ckpt").exists()
        # W&B: one offline run per job, grouped by the sweep, tagged with the job's overrides
        run = next((d / "wandb").glob("offline-run-*"))
        rec = next(r.run for r in read_run_records(run, wait_s=120) if r.WhichOneof("record_type") == "run")
        groups.add(rec.run_group)
        assert f"seed={seed}" in rec.tags and "arch=mlp" in rec.tags
    assert groups == {"distill 2026-11-25/12-00-00"}
    distilled = {j: load_distilled(sweep / j).images for j in ("0", "1")}
    assert not (distilled["0"] == distilled["1"]).all(), "different seeds gave the same distilled batch"

    # the same sweep again into the same directory (in-process launcher): nothing is recomputed
    before = {p: p.stat().st_mtime_ns for j in ("0", "1") for p in (sweep / j).glob("*.safetensors")}
    out = run_app([*sweep_args, "hydra/launcher=basic"], tmp_path, env)
    assert out.count("already complete") == 2, out[-3000:]
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())



def test_a_multirun_of_python_m_ships_its_task_to_the_workers(tmp_path):
    """`python -m distillscape.tasks.distill` makes the task's file __main__; a launcher that ships the task to
    its workers (joblib here, submitit on SLURM) pickled that copy's functions by value with every global they
    reach, and failed at submission ("cannot pickle 'generator' object": distill_rl's @one_thread(); for
    instances, torch.classes). The module now runs under its own name, pickled by reference."""
    sweep = tmp_path / "multirun"
    proc = subprocess.run([sys.executable, "-m", "distillscape.tasks.distill", "experiment=sweep_distill",
                           "distill.images_per_class=1", "arch=mlp", "seed=0,1", *TINY, "logger=none",
                           "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for job in ("0", "1"):
        assert read_json(sweep / job / "metrics.json")["test/onestep_acc_mean"] > 0
