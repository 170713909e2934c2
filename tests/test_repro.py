"""Same command, same numbers: every task run twice into two directories, the second while two busy loops
share the cores, must write the same files, byte for byte (issue 26). Nothing a run computes may depend
on which path was faster that moment (`auto` follows fixed rules: inner.outer_batching_rule,
inner.eval_path_rule, landscape.batching_rule), nor on the load. The runs are real console-script
processes with `auto` left as it is.

Files compared: every file of the first run's directory, the second's must hold the same set. Text files
(JSON, YAML, CSV) after the run's own directory is replaced by a placeholder in each (the directories
differ); binary files (safetensors, npz, PNG) as they are. Set aside, and why:
- `*.log`: the job log's lines carry the time they were written;
- in JSON files the keys, and in CSV files (the metric history) the columns, of `MEASURED` (seconds, steps
  per second, peak memory): measurements of the process, not results;
- `checkpoints/*.ckpt`: Lightning stores the checkpoint directory inside the zip, whose bytes then
  differ; their weights, optimizer states and RNG states are compared tensor by tensor instead.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, compose_cfg
from test_faults import TINY

ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "0"}
MEASURED = ("seconds", "per_second", "peak_")  # keys of measurements of the process, not results
TEXT = {".json", ".yaml", ".csv", ".txt"}
# the tiny distillation of the fault suite, its path left to `auto` (the suite pins vmap)
DISTILL = [a for a in TINY if not a.startswith("distill.batching=")] + ["logger=csv"]


@contextmanager
def busy_cores(n: int = 2):
    """n processes spinning on the CPU for the duration of the block (killed after, by their ids)."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in loops:
            p.kill()
            p.wait()


def run_task(task: str, args: list[str], out: Path) -> None:
    r = subprocess.run([sys.executable, "-m", f"distillscape.tasks.{task}", *args, f"hydra.run.dir={out}"], cwd=REPO,
                       env=ENV, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]


def twice(task: str, args: list[str], base: Path) -> tuple[Path, Path]:
    """The same command into base/first, then into base/second with the cores busy."""
    first, second = base / "first", base / "second"
    run_task(task, args, first)
    with busy_cores():
        run_task(task, args, second)
    return first, second


def _without_measurements(data):
    if isinstance(data, dict):
        return {k: _without_measurements(v) for k, v in data.items() if not any(m in k for m in MEASURED)}
    if isinstance(data, list):
        return [_without_measurements(v) for v in data]
    return data


def _text(path: Path, run: Path):
    text = path.read_text().replace(str(run), "<run>")
    if path.suffix == ".json":
        return _without_measurements(json.loads(text))
    if path.suffix == ".csv":  # a metric history: its columns of measurements set aside
        rows = list(csv.reader(io.StringIO(text)))
        keep = [i for i, name in enumerate(rows[0]) if not any(m in name for m in MEASURED)] if rows else []
        return [[row[i] for i in keep if i < len(row)] for row in rows]
    return text


def _checkpoint(path: Path) -> dict:
    ckpt = torch.load(path, weights_only=True)
    return {k: ckpt[k] for k in ("state_dict", "optimizer_states", "global_step", "distillscape_batching")
            if k in ckpt} | {"rng": ckpt.get("callbacks", {}).get("RngState")}


def _same_objects(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _same_objects(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same_objects(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def same_outputs(first: Path, second: Path) -> list[str]:
    """Assert that the two runs wrote the same files with the same contents (module docstring); the files
    compared."""
    files = sorted(str(p.relative_to(first)) for p in first.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(second)) for p in second.rglob("*") if p.is_file())
    compared = []
    for name in files:
        a, b = first / name, second / name
        if a.suffix == ".log":
            continue
        if a.suffix == ".ckpt":
            _same_objects(_checkpoint(a), _checkpoint(b), name)
        elif a.suffix in TEXT:
            assert _text(a, first) == _text(b, second), f"{name} differs"
        else:
            assert a.read_bytes() == b.read_bytes(), f"{name} differs"
        compared.append(name)
    return compared


# -- distill --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def distilled_twice(tmp_path_factory) -> tuple[Path, Path]:
    return twice("distill", DISTILL, tmp_path_factory.mktemp("distill_mlp"))


def test_distill_on_busy_cores_writes_the_same_bytes(distilled_twice):
    first, second = distilled_twice
    compared = same_outputs(first, second)
    assert {"distilled.safetensors", "distilled.json", "metrics.json", "direct_minimum.safetensors",
            "csv/metrics.csv", "distilled.png"} <= set(compared)
    # the paths the numbers were computed with are on record: the rules' for an mlp on a CPU
    assert json.loads((first / "distilled.json").read_text())["computed_with"] == {
        "outer_batching": "vmap", "eval_path": "vmap", "device": "cpu", "torch_threads": torch.get_num_threads()}


def test_rerun_after_a_stop_before_the_first_checkpoint_ends_where_the_whole_run_ends(distilled_twice, tmp_path):
    """What a full disk at the first checkpoint leaves (the job's record and its direct baseline, no
    checkpoint): the same command with ckpt_path=last reuses the baseline, starts the distillation afresh and
    ends with the uninterrupted run's batch and numbers, bit for bit (it ended 1.3e-3 away when each process
    timed its own path)."""
    whole = distilled_twice[0]
    run = tmp_path / "run"
    run.mkdir()
    for name in (".hydra", "config_resolved.yaml", "direct_minimum.json", "direct_minimum.safetensors"):
        src = whole / name
        if src.is_dir():
            shutil.copytree(src, run / name)
        else:
            (run / name).write_bytes(src.read_bytes())
    run_task("distill", [*DISTILL, "ckpt_path=last"], run)
    for name in ("distilled.safetensors", "direct_minimum.safetensors", "distilled.png"):
        assert (run / name).read_bytes() == (whole / name).read_bytes(), name
    assert _text(run / "metrics.json", run) == _text(whole / "metrics.json", whole)
    rerun, first = (_text(r / "distilled.json", r) for r in (run, whole))
    assert {**rerun, "config": None} == {**first, "config": None}  # its config differs: ckpt_path=last


@pytest.mark.slow
def test_distill_of_a_conv_net_on_busy_cores_writes_the_same_bytes(tmp_path):
    first, second = twice("distill", [*DISTILL, "arch=simple_convnet"], tmp_path)
    same_outputs(first, second)


@pytest.mark.slow
def test_rl_distill_on_busy_cores_writes_the_same_bytes(tmp_path):
    from test_rl_resume import TINY_RL

    first, second = twice("distill", [*TINY_RL, "logger=csv"], tmp_path)
    compared = same_outputs(first, second)
    assert {"distilled.safetensors", "distilled_critic.safetensors", "metrics.json"} <= set(compared)


# -- landscape and landing of one and the same artifact -----------------------------------------------------------
SWEEP = ["sweep=plane", "sweep.resolution=[5,5]", "sweep.costs=[train,distilled]", "sweep.centres=[minimum,landing]",
         "landscape.train_subsample=300", "logger=none"]


def test_landscape_on_busy_cores_writes_the_same_bytes(distilled_twice, tmp_path):
    first, second = twice("landscape", [f"distilled={distilled_twice[0]}", *SWEEP], tmp_path)
    compared = same_outputs(first, second)
    assert {"minimum/surface.npz", "landing/surface.npz", "landing/summary.json"} <= set(compared)
    with np.load(first / "landing" / "surface.npz") as z:  # how it was computed is on record
        assert str(z["batching"]) == "vmap" and z["data_batch"].tolist() == [4096]


@pytest.mark.slow
def test_landscape_of_a_conv_net_on_busy_cores_writes_the_same_bytes(tmp_path):
    run = tmp_path / "run"
    run_task("distill", [*DISTILL, "arch=simple_convnet"], run)
    first, second = twice("landscape", [f"distilled={run}", *SWEEP], tmp_path)
    same_outputs(first, second)


@pytest.mark.slow
def test_landing_at_the_test_suites_size_on_busy_cores_writes_the_same_bytes(distilled_twice, tmp_path):
    from test_landing import SMALL

    first, second = twice("landing", [f"distilled={distilled_twice[0]}", "logger=none", *SMALL], tmp_path)
    compared = same_outputs(first, second)
    assert {"landing_stats.json", "landing_stats.csv"} <= set(compared)


@pytest.mark.slow  # two more processes of ~15 s each on idle cores: the default run has distill and landscape
def test_landing_small_on_busy_cores_writes_the_same_bytes(distilled_twice, tmp_path):
    args = [f"distilled={distilled_twice[0]}", "logger=none", "analysis.inits=3", "analysis.polish_inits=1",
            "analysis.polish_steps=3", "analysis.curvature_inits=1", "analysis.curvature_examples=50",
            "analysis.power_iters=3", "analysis.hutchinson_probes=2", "analysis.train_examples=200",
            "analysis.test_examples=200", "analysis.barrier_points=3", "analysis.trajectory_inits=0",
            "baseline.tune_inits=2", "baseline.lr_grid=[0.1]"]
    first, second = twice("landing", args, tmp_path)
    assert {"landing_stats.json", "landing_stats.csv"} <= set(same_outputs(first, second))


# -- the random-real baseline: one value per seed, another for another seed --------------------------------------
def test_random_real_baseline_depends_on_the_seed_and_only_on_it():
    from distillscape.baseline import random_real_baseline
    from distillscape.config import BaselineConfig
    from distillscape.data import TensorDataModule
    from distillscape.inner import InitSampler, InnerLoop
    from distillscape.models import MLP

    dm = TensorDataModule("digits", val_size=200)
    dm.setup()
    net = MLP(1, 8, 8, 10)
    settings = BaselineConfig(lr_grid=[0.1, 1.0], tune_inits=2)

    def baseline(seed: int) -> dict[str, float]:
        return random_real_baseline(InnerLoop(net), InitSampler(net), dm, 1, 1, settings, eval_inits=6,
                                    eval_seed=1_000_000, seed=seed)

    again, seed0, seed1, seed2 = baseline(0), baseline(0), baseline(1), baseline(2)
    assert again == seed0  # reproducible for one seed
    means = [s["random_real/acc_mean"] for s in (seed0, seed1, seed2)]
    assert len(set(means)) == 3, means  # a table over seeds shows the baseline's spread, not +- 0
