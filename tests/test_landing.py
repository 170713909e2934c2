"""The landing analysis: barriers and polish against answers known by construction, true-task paths
against a one-model-at-a-time oracle, and distillscape-landing end to end on a real distillation run."""
from __future__ import annotations

import csv
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from distillscape.artifacts import read_json
from distillscape.config import validate
from distillscape.inner import InitSampler, InnerLoop, unstack
from distillscape.landing import (KINDS, STATS, LandingAnalysis, Settings, TrueTask, barrier, flat_stack,
                                  interpolate, polish, sgd_checkpoints, steps_to_match)
from distillscape.models import MLP
from distillscape.tasks.common import CONF_DIR

from conftest import REPO, SHARED_DATA, needs_mnist

def compose_landing(overrides: list[str], output_dir) -> DictConfig:
    """conf/landing.yaml as the app composes it (it has no trainer section for compose_cfg to quieten)."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="landing", overrides=[f"paths.output_dir={output_dir}", *overrides])


SMALL = ["analysis.inits=6", "analysis.polish_inits=3", "analysis.polish_steps=10", "analysis.curvature_inits=2",
         "analysis.curvature_examples=200", "analysis.power_iters=10", "analysis.hutchinson_probes=4",
         "analysis.train_examples=400", "analysis.barrier_points=5", "baseline.tune_inits=2",
         "baseline.lr_grid=[0.1,1.0]", "analysis.trajectory_inits=4", "analysis.trajectory_steps=[1,5,20,60]"]


# -- known answers -----------------------------------------------------------------------------------
def test_barrier_of_constructed_paths():
    alphas = torch.linspace(0, 1, 11)
    bump = 2 * (1 - alphas) + 0.5 * alphas + 3 * torch.sin(math.pi * alphas)  # line 2 -> 0.5 plus a bump of 3
    convex = (alphas - 0.3) ** 2                                                # below its chord: no barrier
    flat = torch.full_like(alphas, 7.0)
    got = barrier(torch.stack([bump, convex, flat]), alphas)
    torch.testing.assert_close(got, torch.tensor([3.0, 0.0, 0.0]), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="both ends"):
        barrier(bump[None, :-1], alphas[:-1])


@pytest.fixture(scope="module")
def small_task():
    torch.manual_seed(0)
    net = MLP(1, 4, 4, 3, hidden=[8])
    loop = InnerLoop(net, "mse")
    x, y = torch.randn(50, 1, 4, 4), torch.randint(0, 3, (50,))
    return loop, InitSampler(net).sample(3, seed=5), TrueTask(loop, x, y, data_chunk=16)


def test_path_losses_match_a_model_at_a_time(small_task):
    loop, stack, task = small_task
    other = InitSampler(loop.net).sample(3, seed=6)
    alphas = torch.linspace(0, 1, 5)
    got = task.path_losses(stack, other, alphas)
    for i in range(3):
        for j, t in enumerate(alphas.tolist()):
            point = {k: (1 - t) * stack[k][i] + t * other[k][i] for k in loop.names}
            expected = F.cross_entropy(loop.forward(point, task.x), task.y)
            torch.testing.assert_close(got[i, j], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(interpolate(stack, other, 0.0), stack)


def test_polish_is_gradient_descent_with_momentum(small_task):
    """Full batch (batch_size >= examples): two heavy-ball steps computed by hand from TrueTask.grad."""
    loop, stack, task = small_task
    lr, m = 0.3, 0.9
    got = polish(loop, stack, task.x, task.y, steps=2, lr=lr, momentum=m, batch_size=1000,
                 generator=torch.Generator().manual_seed(0))
    g0 = task.grad(stack)
    p1 = {k: stack[k] - lr * g0[k] for k in stack}
    g1 = task.grad(p1)
    p2 = {k: p1[k] - lr * (m * g0[k] + g1[k]) for k in stack}
    for k in stack:
        torch.testing.assert_close(got[k], p2[k], atol=1e-5, rtol=1e-4)


def test_polish_distance_of_one_plain_step_is_lr_times_gradient_norm(small_task):
    """One full-batch step without momentum moves exactly lr * ||grad||: polish_distance must say so,
    and the polish statistics must be consistent with the landing ones."""
    loop, stack, task = small_task
    inits = InitSampler(loop.net).sample(3, seed=7)
    direct = unstack(InitSampler(loop.net).sample(1, seed=8), 0)
    s = Settings(polish_inits=2, polish_steps=1, polish_lr=0.5, polish_momentum=0.0, polish_batch_size=1000,
                 curvature_inits=0, barrier_points=5, data_chunk=16)
    a = LandingAnalysis(loop, task, task, (task.x, task.y), direct, s)
    stats = a.landings(inits, stack, a.at_inits(inits))
    torch.testing.assert_close(stats["polish_distance"], 0.5 * stats["grad_norm_landing"][:2], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(stats["polish_distance_ratio"], stats["polish_distance"] / stats["step_length"][:2])
    torch.testing.assert_close(stats["polish_loss_drop"], stats["landing_train_loss"][:2] - stats["polished_train_loss"])
    step = (flat_stack(stack, loop.names) - flat_stack(inits, loop.names)).norm(dim=1)
    torch.testing.assert_close(stats["step_length"], step)
    assert (stats["barrier_to_direct"] >= 0).all() and len(stats["barrier_to_direct"]) == 3
    assert "top_eig_landing" not in stats  # curvature_inits=0 computes none


def test_checkpoints_of_one_run_are_the_shorter_runs(small_task):
    """The direct-training checkpoints of one SGD run equal separate runs of that many steps from the
    same start with the same minibatch seed (0 steps: the start itself)."""
    loop, stack, task = small_task
    got = sgd_checkpoints(loop, stack, task.x, task.y, [0, 1, 4, 9], lr=0.2, momentum=0.9, batch_size=16,
                          generator=torch.Generator().manual_seed(3))
    for state, steps in zip(got, [0, 1, 4, 9]):
        alone = polish(loop, stack, task.x, task.y, steps, lr=0.2, momentum=0.9, batch_size=16,
                       generator=torch.Generator().manual_seed(3))
        for k in stack:
            torch.testing.assert_close(state[k], alone[k], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got[0], stack)


def test_steps_to_match_is_the_first_checkpoint_at_or_below_the_target():
    steps = torch.tensor([0, 1, 5, 20])
    losses = torch.tensor([[2.0, 1.5, 0.9, 0.4],
                           [2.0, 1.5, 0.9, 0.4],
                           [2.0, 1.9, 1.8, 1.7],
                           [2.0, 0.5, 0.9, 0.4]])  # not monotone: the FIRST crossing counts
    got = steps_to_match(losses, steps, torch.tensor([1.0, 0.4, 1.0, 0.6]))
    assert got.tolist() == [5.0, 20.0, math.inf, 1.0]


def test_landing_against_the_trajectory_matches_a_model_at_a_time(small_task):
    """Agreement and distance of each landing with each direct-training checkpoint, against plain
    nn.Module copies loaded with load_state_dict and compared prediction by prediction."""
    import copy
    loop, _, task = small_task
    inits = InitSampler(loop.net).sample(4, seed=9)
    landed = InitSampler(loop.net).sample(4, seed=10)
    direct = unstack(InitSampler(loop.net).sample(1, seed=8), 0)
    s = Settings(polish_lr=0.2, polish_momentum=0.9, polish_batch_size=16, curvature_inits=0, polish_inits=0,
                 barrier_points=3, data_chunk=16, trajectory_inits=3, trajectory_steps=[7, 2])
    a = LandingAnalysis(loop, task, task, (task.x, task.y), direct, s)
    traj = a.trajectory(inits)
    assert traj["steps"].tolist() == [0, 2, 7]
    stats = a.landings(inits, landed, a.at_inits(inits), traj)
    states = sgd_checkpoints(loop, {k: v[:3] for k, v in inits.items()}, task.x, task.y, [0, 2, 7], 0.2, 0.9, 16,
                             torch.Generator().manual_seed(s.seed + 3))

    def model(params):
        m = copy.deepcopy(loop.net)
        m.load_state_dict({k: v.clone() for k, v in params.items()})
        return m

    for i in range(3):
        land_model = model(unstack(landed, i))
        for t, st in enumerate(states):
            ckpt = model(unstack(st, i))
            with torch.no_grad():
                same = (land_model(task.x).argmax(1) == ckpt(task.x).argmax(1)).float().mean()
            dist = torch.sqrt(sum(((p - q) ** 2).sum() for p, q in zip(land_model.parameters(), ckpt.parameters())))
            torch.testing.assert_close(stats["curve/agreement"][i, t], same)
            torch.testing.assert_close(stats["curve/distance"][i, t], dist, rtol=1e-5, atol=1e-6)
    assert stats["agreement_peak"].shape == (3,) and stats["nearest_step"].shape == (3,)
    torch.testing.assert_close(stats["agreement_last"], stats["curve/agreement"][:, -1])
    for i in range(3):  # agreement at the first checkpoint whose train loss is at or below the landing's
        losses = [F.cross_entropy(loop.forward(unstack(st, i), task.x), task.y).item() for st in states]
        target = stats["landing_train_loss"][i].item()
        first = next((t for t, l in enumerate(losses) if l <= target + 1e-6), None)
        if first is None:
            assert math.isinf(stats["steps_to_match"][i]) and math.isnan(stats["agreement_at_match"][i])
        else:
            assert stats["steps_to_match"][i] == [0, 2, 7][first]
            torch.testing.assert_close(stats["agreement_at_match"][i], stats["curve/agreement"][i, first])
    torch.testing.assert_close(stats["nearest_distance_ratio"],
                               stats["curve/distance"].min(dim=1).values / stats["step_length"][:3])
    assert (stats["nearest_distance_ratio"] <= 1 + 1e-6).all()  # checkpoint 0 is the init: never farther


# -- the task, end to end on a real distillation -------------------------------------------------------
def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_landing_task_end_to_end(digits_run, tmp_path, capsys):
    from distillscape.tasks.landing import landing

    out = tmp_path / "landing"
    summary = landing(compose_landing([f"distilled={digits_run}", "logger=csv", *SMALL], out))
    stats = read_json(out / "landing_stats.json")
    assert stats == read_json(out / "landing_stats.json") and set(stats["kinds"]) == set(KINDS)
    assert stats["dataset"] == "digits" and stats["arch"] == "MLP"
    assert stats["lr"]["random_real"] in (0.1, 1.0)  # tuned on the grid
    for kind, per_stat in stats["kinds"].items():
        assert set(per_stat) == set(STATS), kind
        expected_n = {"polish": 3, "barrier_to_polished": 3, "top_eig": 2, "trace": 2, "steps_to_match": 4,
                      "agreement": 4, "nearest": 4}
        for stat, s in per_stat.items():
            n = next((v for k, v in expected_n.items() if stat.startswith(k) or stat.startswith(f"polished")
                      and k == "polish"), 6)
            assert s["n"] + s["nonfinite"] == n, (kind, stat)
            assert set(s) == {"mean", "std", "n", "nonfinite"}
    # every kind starts from the same inits
    for stat in ("init_test_acc", "init_train_loss", "grad_norm_init", "top_eig_init", "trace_init"):
        assert len({stats["kinds"][k][stat]["mean"] for k in KINDS}) == 1, stat
    # the distilled batch was trained for this: it beats the random synthetic batch on test accuracy
    assert stats["kinds"]["distilled"]["landing_test_acc"]["mean"] > stats["kinds"]["random_synthetic"]["landing_test_acc"]["mean"]
    assert set(stats["direct_minimum"]) == {"train_loss", "train_acc", "test_loss", "test_acc", "grad_norm", "top_eig", "trace"}
    assert stats["direct_minimum"]["test_acc"] == pytest.approx(read_json(digits_run / "direct_minimum.json")["metrics"]["direct/acc"], abs=1e-6)

    rows = read_csv(out / "landing_stats.csv")
    assert len(rows) == 3 * 6
    for r in rows:
        assert float(r["grad_norm_ratio"]) == pytest.approx(float(r["grad_norm_landing"]) / float(r["grad_norm_init"]), rel=1e-4)
        assert float(r["barrier_to_direct"]) >= 0
    assert sum(r["polish_distance"] != "" for r in rows) == 3 * 3
    acc = [float(r["landing_test_acc"]) for r in rows if r["kind"] == "distilled"]
    assert stats["kinds"]["distilled"]["landing_test_acc"]["mean"] == pytest.approx(sum(acc) / len(acc), rel=1e-5)

    # the direct-training trajectory: its curve per kind, and a figure
    traj = stats["trajectory"]
    assert traj["steps"] == [0, 1, 5, 20, 60] and traj["inits"] == 4
    assert traj["train_loss"][-1] < traj["train_loss"][0] and set(traj["agreement"]) == set(KINDS)
    assert all(len(traj[c][k]) == 5 for c in ("agreement", "distance") for k in KINDS)
    assert (out / "trajectory.png").stat().st_size > 10_000
    for r in rows:
        if r["nearest_distance_ratio"]:
            assert float(r["nearest_distance_ratio"]) <= 1 + 1e-5
            assert float(r["agreement_peak_step"]) in traj["steps"]

    logged = read_csv(out / "csv" / "metrics.csv")[0]
    assert float(logged["landing/distilled/landing_test_acc"]) == pytest.approx(
        stats["kinds"]["distilled"]["landing_test_acc"]["mean"], rel=1e-6)
    assert summary["kinds"] == stats["kinds"]

    # a rerun into the same directory reuses every finished kind and writes the same numbers
    capsys.readouterr()
    landing(compose_landing([f"distilled={digits_run}", "logger=none", *SMALL], out))
    assert capsys.readouterr().out.count("reusing") == 3
    assert read_json(out / "landing_stats.json")["kinds"] == stats["kinds"]


def test_cli_runs_and_explains_bad_input(digits_run, tmp_path):
    exe = [sys.executable, "-m", "distillscape.tasks.landing"]
    env = {**os.environ, "DISTILLSCAPE_WANDB_OFFLINE": "true"}
    ok = subprocess.run([*exe, f"distilled={digits_run}", f"hydra.run.dir={tmp_path / 'cli'}", "logger=none",
                         "analysis.kinds=[distilled,random_synthetic]", *SMALL, "analysis.polish_inits=0",
                         "analysis.curvature_inits=0"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert set(read_json(tmp_path / "cli" / "landing_stats.json")["kinds"]) == {"distilled", "random_synthetic"}

    bad = subprocess.run([*exe, f"hydra.run.dir={tmp_path / 'bad'}", "logger=none"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "distilled= is not set" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


@pytest.mark.parametrize("args, message", [
    (["dataset=mnist"], "add dataset=digits"),
    (["dataset.val_size=100"], "dataset.val_size=200"),
    (["analysis.kinds=[distilled,oops]"], "analysis.kinds entry"),
    (["distilled=/nowhere/at/all"], "does not exist"),
    (["analysis.curve=spline"], "analysis.curve='spline' is not allowed; choose one of: none, bezier, polychain"),
    (["analysis.curve_points=2"], "analysis.curve_points=2 must be >= 3"),
])
def test_bad_input_is_one_clear_line(digits_run, tmp_path, capsys, args, message):
    from distillscape.tasks.landing import main

    with pytest.raises(SystemExit) as e:
        main(compose_landing([f"distilled={digits_run}", *args, "logger=none"], tmp_path))
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_experiment_config_composes_for_landing_and_its_distillation(tmp_path):
    cfg = validate(compose_landing(["experiment=landing_stats"], tmp_path))
    assert cfg.distill_first and cfg.analysis.inits == 100 and cfg.distilled is None
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        sub = compose(config_name="distill", overrides=[*cfg.distill_overrides, f"paths.output_dir={tmp_path}"])
    validate(sub)
    assert sub.arch._target_.endswith("MLP")


@pytest.mark.slow
def test_landing_stats_experiment_on_digits(tmp_path):
    """The one command of the issue, as shipped: distill, then the full analysis (minutes)."""
    from distillscape.tasks.landing import landing

    landing(compose_landing(["experiment=landing_stats", "logger=none"], tmp_path))
    stats = read_json(tmp_path / "landing_stats.json")
    assert stats["kinds"]["distilled"]["landing_test_acc"]["n"] == 100


@pytest.mark.slow
@needs_mnist
def test_landing_stats_experiment_on_mnist(tmp_path):
    from distillscape.tasks.landing import landing

    landing(compose_landing(["experiment=landing_stats", "dataset=mnist", f"paths.data_dir={SHARED_DATA}",
                                 "logger=none"], tmp_path))
    assert read_json(tmp_path / "landing_stats.json")["dataset"] == "mnist"


# every count of the analysis at its smallest allowed value: one landing per kind (analysis.inits=1 finished its
# work and then failed to save a one-landing statistic, a view of its curve), two points per barrier path
EDGE = ["analysis.inits=1", "analysis.polish_inits=1", "analysis.polish_steps=1", "analysis.curvature_inits=1",
        "analysis.curvature_examples=1", "analysis.power_iters=1", "analysis.hutchinson_probes=1",
        "analysis.train_examples=1", "analysis.test_examples=1", "analysis.barrier_points=2", "analysis.data_chunk=1",
        "analysis.polish_batch_size=1", "analysis.trajectory_inits=1", "analysis.trajectory_steps=[1]",
        "analysis.init_chunk=1", "baseline.tune_inits=1", "baseline.lr_grid=[0.1]"]


def test_every_count_at_its_smallest_runs_and_saves(digits_run, tmp_path):
    from distillscape.tasks.landing import landing

    out = tmp_path / "edge"
    landing(compose_landing([f"distilled={digits_run}", "logger=none", *EDGE], out))
    stats = read_json(out / "landing_stats.json")
    assert set(stats["kinds"]) == set(KINDS)
    for kind, per_stat in stats["kinds"].items():
        assert all(s["n"] + s["nonfinite"] == 1 for s in per_stat.values()), kind
    assert len(read_csv(out / "landing_stats.csv")) == len(KINDS)
    # each kind's per-landing results were saved, and a rerun reuses them rather than failing on them
    assert set(KINDS) <= {p.stem for p in (out / "landing_parts").glob("*.safetensors")}
    landing(compose_landing([f"distilled={digits_run}", "logger=none", *EDGE], out))
    assert read_json(out / "landing_stats.json")["kinds"] == stats["kinds"]
