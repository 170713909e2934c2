"""Planes that can show a saddle, and numbers that compare two costs of a surface (issue 23, parts 2 and 4):
Hessian-eigenvector directions against the explicit Hessian's eigh, trajectory PCA against the SVD, the
rank correlation against hand-computed values, the minima distance on a constructed grid; then the
landscape task with sweep=hessian and sweep=trajectory on the digits run."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import compose_cfg
from distillscape.artifacts import read_tensors
from distillscape.costs import CrossEntropyCost
from distillscape.curvature import hessian_directions
from distillscape.geometry import grid_coordinates, pca_directions, project, swept_state
from distillscape.inner import InnerLoop
from distillscape.landing import TrueTask
from distillscape.landscape import (LandscapeModule, average_ranks, centre_curvature, compare_costs, grid_axes,
                                    rank_correlation, rank_map, read_npz)
from distillscape.params import flatten, unflatten


# -- Hessian directions --------------------------------------------------------------------------------
def tiny_problem(seed: int = 0):
    """A smooth network (tanh: the loss is a smooth function of the weights, so second differences are
    curvature) with 35 weights, on 40 random examples, in float64, at a random point."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x = torch.randn(40, 1, 2, 2, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    point = {k: v.detach().clone() for k, v in net.named_parameters()}
    return net, x, y, point


def explicit_hessian(net, x, y, point):
    """The Hessian of the mean cross-entropy as a matrix, by double autograd over the flat weights."""
    names = list(point)

    def loss(flat):
        return F.cross_entropy(torch.func.functional_call(net, unflatten(flat, point), (x,)), y)

    return torch.autograd.functional.hessian(loss, flatten(point, names))


@pytest.mark.parametrize("pair,picks", [("top_bottom", (-1, 0)), ("top2", (-1, -2)), ("bottom2", (0, 1))])
def test_hessian_directions_are_the_explicit_hessians_eigenvectors(pair, picks):
    net, x, y, point = tiny_problem()
    values, vectors = torch.linalg.eigh(explicit_hessian(net, x, y, point))
    task = TrueTask(InnerLoop(net), x, y, data_chunk=16)  # chunks of the data sum to the whole
    found = hessian_directions(task, point, pair, steps=35, generator=torch.Generator().manual_seed(0))
    for i, j in enumerate(picks):
        assert found["eigenvalues"][i].item() == pytest.approx(values[j].item(), rel=1e-6, abs=1e-9)
        cosine = (found["directions"][i] @ vectors[:, j]).abs().item()  # the same up to sign
        assert cosine == pytest.approx(1.0, abs=1e-6)
        assert found["residuals"][i].item() < 1e-6
    assert found["directions"].norm(dim=1) == pytest.approx(torch.ones(2, dtype=torch.float64), abs=1e-9)
    # the sign rule: each vector's largest-magnitude entry positive
    assert (found["directions"].gather(1, found["directions"].abs().argmax(1, keepdim=True)) > 0).all()


def test_surface_along_the_bottom_direction_of_a_saddle_curves_down():
    """At a saddle (a negative eigenvalue of the explicit Hessian), the swept surface of the true cost curves
    down along the bottom direction and up along the top one, each by its eigenvalue: the second difference
    (L(+h) - 2 L(0) + L(-h)) / h^2 of the grid is lambda, up to O(h^2)."""
    net, x, y, point = tiny_problem()
    values = torch.linalg.eigvalsh(explicit_hessian(net, x, y, point))
    assert values[0] < -1e-3 < 1e-3 < values[-1]  # this point is a saddle
    task = TrueTask(InnerLoop(net), x, y)
    found = hessian_directions(task, point, "top_bottom", steps=35, generator=torch.Generator().manual_seed(1))
    h = 1e-2
    axes = grid_axes([[-h, h], [-h, h]], [3, 3])
    module = LandscapeModule(net, flatten(point), found["directions"], point, [CrossEntropyCost("train", x, y)],
                             batching="loop")
    from distillscape.geometry import points
    loss = module.evaluate(points(module.centre, module.directions, grid_coordinates(axes)), "loop")["train/loss"]
    grid = loss.reshape(3, 3).numpy()
    along_top = (grid[2, 1] - 2 * grid[1, 1] + grid[0, 1]) / h ** 2
    along_bottom = (grid[1, 2] - 2 * grid[1, 1] + grid[1, 0]) / h ** 2
    assert along_bottom < 0 < along_top
    assert along_bottom == pytest.approx(values[0].item(), rel=1e-3)
    assert along_top == pytest.approx(values[-1].item(), rel=1e-3)
    # what summary.json records of it: the same second differences, per unit of parameter distance
    surface = {"axis0": axes[0].numpy(), "axis1": axes[1].numpy(), "train/loss": grid}
    assert centre_curvature(surface, "train/loss", np.ones(2)) == pytest.approx([along_top, along_bottom], rel=1e-9)


def test_centre_curvature_of_a_constructed_quadratic():
    """v = 3 x^2 - y^2 + x y over coordinates of directions of norms 2 and 0.5: second derivatives per unit of
    parameter distance 6 / 2^2 and -2 / 0.5^2, exact for a quadratic; nan where the grid misses the centre."""
    axes = grid_axes([[-1, 1], [-2, 2]], [5, 9])
    x, y = np.meshgrid(axes[0].numpy(), axes[1].numpy(), indexing="ij")
    surface = {"axis0": axes[0].numpy(), "axis1": axes[1].numpy(), "c/loss": 3 * x ** 2 - y ** 2 + x * y}
    assert centre_curvature(surface, "c/loss", np.array([2.0, 0.5])) == pytest.approx([6 / 4, -2 / 0.25])
    off = grid_axes([[-1, 1], [0.5, 2]], [5, 4])  # axis 1 does not hold 0
    x, y = np.meshgrid(off[0].numpy(), off[1].numpy(), indexing="ij")
    got = centre_curvature({"axis0": off[0].numpy(), "axis1": off[1].numpy(), "c/loss": 3 * x ** 2 + y},
                           "c/loss", np.ones(2))
    assert got[0] == pytest.approx(6.0) and np.isnan(got[1])


# -- trajectory PCA ------------------------------------------------------------------------------------
def test_pca_directions_are_the_svd_of_the_centred_trajectory():
    g = torch.Generator().manual_seed(0)
    trajectory = torch.randn(7, 30, generator=g, dtype=torch.float64) * torch.linspace(3, 0.1, 30, dtype=torch.float64)
    directions, explained = pca_directions(trajectory)
    centred = trajectory - trajectory.mean(0)
    _, sv, vh = torch.linalg.svd(centred)
    for i in range(2):
        assert (directions[i] @ vh[i]).abs().item() == pytest.approx(1.0, abs=1e-10)
        assert explained[i].item() == pytest.approx((sv[i] ** 2 / (sv ** 2).sum()).item(), rel=1e-10)
        assert (centred[-1] @ directions[i]).item() > 0  # the sign rule: the last point on the positive side
    assert directions @ directions.T == pytest.approx(torch.eye(2, dtype=torch.float64), abs=1e-12)


def test_a_trajectory_lying_in_a_plane_is_projected_exactly():
    """Points centre + a u + b w (u, w neither unit nor orthogonal): the PCA plane is theirs, every point
    projects with no off-plane part, and centre + coords @ directions rebuilds it."""
    g = torch.Generator().manual_seed(1)
    centre, u, w = (torch.randn(50, generator=g, dtype=torch.float64) for _ in range(3))
    w = w + 0.5 * u
    ab = torch.tensor([[0.0, 0.0], [1.0, 0.2], [1.5, 1.0], [2.0, 0.5], [3.0, 2.5]], dtype=torch.float64)
    trajectory = centre + ab[:, :1] * u + ab[:, 1:] * w
    directions, explained = pca_directions(trajectory)
    assert explained.sum().item() == pytest.approx(1.0, abs=1e-12)  # two directions hold all of its variance
    for p in trajectory:
        coords, offplane = project(p, centre, directions)
        assert offplane < 1e-12
        assert centre + coords @ directions == pytest.approx(p, abs=1e-12)


def test_a_trajectory_of_too_few_points_is_refused():
    with pytest.raises(ValueError, match="at least 3 points"):
        pca_directions(torch.randn(2, 5))


# -- comparing two costs of a surface ------------------------------------------------------------------
def test_rank_correlation_equals_hand_computed_spearman():
    # ties: a's ranks are 1, 2.5, 2.5, 4; b's 1, 3, 2, 4; deviations from 2.5: (-1.5, 0, 0, 1.5) and
    # (-1.5, .5, -.5, 1.5); rho = 4.5 / sqrt(4.5 * 5)
    a, b = np.array([[10.0, 20.0], [20.0, 40.0]]), np.array([[1.0, 3.0], [2.0, 4.0]])
    assert list(average_ranks(a)) == [1.0, 2.5, 2.5, 4.0]
    assert rank_correlation(a, b) == pytest.approx(4.5 / np.sqrt(22.5), abs=1e-12)
    # no ties, on a 2 x 3 grid: ranks (4, 1, 5, 2, 6, 3) and (3, 5, 1, 6, 4, 2), sum d^2 = 54,
    # rho = 1 - 6 * 54 / (6 * 35)
    a = np.array([[3.0, 1.0, 4.0], [1.5, 9.0, 2.0]])
    b = np.array([[2.0, 7.0, 1.0], [8.0, 2.8, 1.8]])
    assert rank_correlation(a, b) == pytest.approx(1 - 6 * 54 / (6 * 35), abs=1e-12)
    assert rank_correlation(a, np.exp(a)) == pytest.approx(1.0)  # a monotone map keeps the order
    assert np.isnan(rank_correlation(a, np.ones_like(a)))
    # the difference map's normalisation: ranks scaled to [0, 1]
    assert rank_map(a).min() == 0.0 and rank_map(a).max() == 1.0 and rank_map(a)[0, 1] == 0.0


def test_minima_distance_on_a_constructed_grid():
    """Two bowls with their grid minima at (-0.5, 1.0) and (1.0, -0.5) of non-orthogonal directions: the
    distance is 1.5 * sqrt(2) in plane coordinates and ||delta @ directions|| in parameters."""
    axes = grid_axes([[-1, 1], [-1, 1]], [5, 9])
    a0, a1 = np.meshgrid(axes[0].numpy(), axes[1].numpy(), indexing="ij")
    surface = {"axis0": axes[0].numpy(), "axis1": axes[1].numpy(),
               "distilled/loss": (a0 + 0.5) ** 2 + (a1 - 1.0) ** 2, "train/loss": (a0 - 1.0) ** 2 + (a1 + 0.5) ** 2}
    directions = torch.tensor([[1.0, 0.0, 2.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    got = compare_costs(surface, (directions @ directions.T).numpy(), "distilled/loss", "train/loss")
    assert [got["minimum_distilled_axis0"], got["minimum_distilled_axis1"]] == [-0.5, 1.0]
    assert [got["minimum_train_axis0"], got["minimum_train_axis1"]] == [1.0, -0.5]
    assert got["minima_distance_plane"] == pytest.approx(1.5 * np.sqrt(2))
    delta = torch.tensor([-1.5, 1.5], dtype=torch.float64)
    assert got["minima_distance_params"] == pytest.approx((delta @ directions).norm().item())


# -- the landscape task ------------------------------------------------------------------------------------
TINY = ["logger=none", "landscape.data_batch=2000", "sweep.resolution=[3,3]"]


def run_landscape(run_dir, out, overrides):
    from distillscape.tasks.landscape import landscape
    return landscape(compose_cfg("landscape", [f"distilled={run_dir}", *TINY, *overrides], out))


def test_hessian_plane_through_the_landing_in_step_lengths(digits_run, tmp_path):
    """sweep=hessian: unit orthogonal eigenvectors at the landing, their eigenvalues recorded (top >= bottom,
    the top one the surface's curvature along axis 0), the range in step lengths ||landing - init||."""
    [path] = run_landscape(digits_run, tmp_path, ["sweep=hessian", "sweep.costs=[train,distilled]",
                                                  "sweep.hessian_examples=300", "sweep.lanczos_steps=8",
                                                  "sweep.range=[[-2.0,2.0],[-0.5,0.5]]"])
    s = read_npz(path)
    d = read_tensors(path.parent / "directions.safetensors")
    dirs = d["directions"].double()
    assert dirs @ dirs.T == pytest.approx(torch.eye(2, dtype=torch.float64), abs=1e-5)
    step = (d["point.landing"] - d["point.init"]).double().norm().item()
    assert str(s["range_unit"]) == "step" and float(s["step_length"]) == pytest.approx(step, rel=1e-6)
    assert s["axis0"][[0, -1]] == pytest.approx([-2 * step, 2 * step], rel=1e-6)
    assert s["axis1"][[0, -1]] == pytest.approx([-0.5 * step, 0.5 * step], rel=1e-6)
    top, bottom = s["direction_eigenvalues"]
    assert top >= bottom
    plane = json.loads((path.parent / "plane.json").read_text())
    assert plane["directions"] == "hessian" and plane["eigenvalues"] == pytest.approx([top, bottom])
    assert plane["hessian_examples"] == 300 and plane["centre_grad_norm"] > 0
    assert np.isfinite(plane["centre_curvature"]["train/loss"]).all()  # 3 x 3: the centre and a neighbour each side
    summary = json.loads((path.parent / "summary.json").read_text())
    assert summary["compare/distilled_vs_train/spearman"] == pytest.approx(
        rank_correlation(s["distilled/loss"], s["train/loss"]))
    assert (path.parent / "difference_distilled_vs_train.png").stat().st_size > 0


def test_trajectory_plane_of_the_snapshots_landings(digits_run, tmp_path):
    """sweep=trajectory: the landings along the run's snapshots, then the final landing, projected onto their
    own PCA plane through the landing: the landing sits at the origin, the projections are least squares."""
    [path] = run_landscape(digits_run, tmp_path, ["sweep=trajectory", "sweep.costs=[train,distilled]"])
    s = read_npz(path)
    names = [str(n) for n in s["trajectory_names"]]
    snapshots = sorted(p.stem for p in (digits_run / "snapshots").glob("distilled_step*.safetensors"))
    assert names == [f"landing of {n}" for n in snapshots] + ["landing"]
    assert s["trajectory_coords"].shape == (len(names), 2)
    assert s["trajectory_coords"][-1] == pytest.approx([0.0, 0.0], abs=1e-6)  # the centre is the landing
    # the range covers the trajectory
    assert s["axis0"][0] <= s["trajectory_coords"][:, 0].min() and s["trajectory_coords"][:, 0].max() <= s["axis0"][-1]
    plane = json.loads((path.parent / "plane.json").read_text())
    assert 0 < sum(plane["explained_variance"]) <= 1 + 1e-9 and plane["trajectory"] == ["snapshots", "landing"]


def test_direct_training_snapshots_make_a_trajectory(digits_run, tmp_path):
    """direct.snapshot_every=1: the weights at the start and after every epoch, the last one the direct minimum;
    sweep.trajectory=[direct] reads them from the run directory."""
    from distillscape.tasks.train import train

    train(compose_cfg("train", ["dataset=digits", "arch=mlp", "direct.epochs=2", "direct.snapshot_every=1",
                                "logger=none"], tmp_path / "train"))
    saved = sorted(p.name for p in (tmp_path / "train" / "direct_trajectory").iterdir())
    assert saved == ["epoch0000.safetensors", "epoch0001.safetensors", "epoch0002.safetensors"]
    last = read_tensors(tmp_path / "train" / "direct_trajectory" / "epoch0002.safetensors")
    final = read_tensors(tmp_path / "train" / "direct_minimum.safetensors")
    assert all(torch.equal(last[k], final[k]) for k in final)
    run = tmp_path / "run"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns(".*"))
    shutil.copytree(tmp_path / "train" / "direct_trajectory", run / "direct_trajectory")
    [path] = run_landscape(run, tmp_path / "surfaces", ["sweep=trajectory", "sweep.trajectory=[direct]",
                                                        "sweep.centres=[minimum]", "sweep.costs=[distilled]"])
    assert [str(n) for n in read_npz(path)["trajectory_names"]] == [f"direct epoch000{i}" for i in range(3)]


def test_bad_plane_settings_are_one_line(digits_run, tmp_path):
    from distillscape.errors import ConfigError

    with pytest.raises(ConfigError, match="range_unit=step scales sweep.range"):
        run_landscape(digits_run, tmp_path, ["sweep.range_unit=step", "sweep.range=null"])
    with pytest.raises(ConfigError, match="sweep.hessian_pair"):
        run_landscape(digits_run, tmp_path, ["sweep=hessian", "sweep.hessian_pair=middle"])


def test_swept_state_names_are_the_hessians(digits_run):
    """The Hessian plane's flat order (the inner loop's parameter names) is the sweep's (swept_state's)."""
    from distillscape.run import Run

    run = Run.open(digits_run)
    assert run.loop().names == list(swept_state(run.net())[0])


def test_report_sentence_states_the_rank_correlation_it_computes():
    from distillscape.report.surfaces import cost_agreement

    a, b = np.array([[10.0, 20.0], [20.0, 40.0]]), np.array([[1.0, 3.0], [2.0, 4.0]])  # rho = 4.5 / sqrt(22.5)
    surface = {"axis0": np.array([0.0, 1.0]), "axis1": np.array([0.0, 2.0]), "distilled/loss": a, "train/loss": b}
    [line] = cost_agreement("landing", surface)
    assert "Spearman rank correlation +0.95" in line and "4 grid points" in line and "0 apart" in line
    surface["train/loss"] = np.array([[4.0, 3.0], [2.0, 1.0]])  # its minimum at (1, 2): sqrt(5) from (0, 0)
    assert f"{np.sqrt(5):.3g} apart" in cost_agreement("landing", surface)[0]
    assert cost_agreement("landing", {"train/loss": b}) == []


def test_the_2x2_figure_has_one_colour_scale_per_cost():
    """surface_grid_figure (the report's 2x2: a row per centre, a column per cost): the panels of one cost share
    their contour levels, spanning both centres' values; two costs of different scales get scales of their own."""
    from matplotlib.contour import ContourSet

    from distillscape.plots import surface_grid_figure

    a = np.linspace(-1, 1, 5)
    A, B = np.meshgrid(a, a, indexing="ij")
    surfaces = {c: {"axis0": a, "axis1": a, "train/loss": 0.1 * k + A ** 2 + B ** 2,
                    "distilled/loss": 100.0 * k + 50 * (A ** 2 + B ** 2)} for k, c in enumerate(["minimum", "landing"], 1)}
    fig = surface_grid_figure(surfaces, ["train/loss", "distilled/loss"], "test")
    levels = [[next(c for c in ax.collections if isinstance(c, ContourSet)).levels for ax in row]
              for row in np.asarray(fig.axes[:4]).reshape(2, 2)]
    for j, metric in enumerate(["train/loss", "distilled/loss"]):
        assert np.array_equal(levels[0][j], levels[1][j])  # one scale down the column
        both = np.log10(np.concatenate([surfaces[c][metric].ravel() for c in surfaces]))
        assert levels[0][j][0] == pytest.approx(both.min()) and levels[0][j][-1] == pytest.approx(both.max())
    assert not np.allclose(levels[0][0], levels[0][1])  # and its own per cost
