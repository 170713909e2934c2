"""Geometry of parameter space: flat vectors, filter-normalized directions, planes and lines."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from distillscape.geometry import (filter_normalized, flatten, grid_coordinates, line_between, norm_tensor_names,
                                   plane_through, points, project, random_direction, reference_plane, swept_state,
                                   unflatten, unflatten_stack)
from distillscape.models import MLP, ConvNet, LeNet, SimpleConvNet

ARCHS = [lambda: MLP(1, 8, 8, 10), lambda: LeNet(1, 8, 8, 10), lambda: SimpleConvNet(1, 8, 8, 10),
         lambda: ConvNet(1, 8, 8, 10, width_channels=8, depth=2)]


@pytest.mark.parametrize("make", ARCHS)
def test_flatten_round_trip_every_arch(make):
    net = make()
    params, frozen = swept_state(net)
    vec = flatten(params)
    assert vec.numel() == sum(p.numel() for p in net.parameters()) and not frozen
    back = unflatten(vec, params)
    assert list(back) == list(params) and all(torch.equal(back[k], params[k]) for k in params)
    stack = unflatten_stack(torch.stack([vec, 2 * vec]), params)
    assert all(torch.equal(stack[k][1], 2 * params[k]) for k in params)
    with pytest.raises(ValueError):
        unflatten(vec[:-1], params)


def test_buffers_are_frozen_or_swept_by_choice():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    swept, frozen = swept_state(net, "freeze")
    assert "1.running_mean" in frozen and "1.running_mean" not in swept
    swept, frozen = swept_state(net, "sweep")
    assert "1.running_mean" in swept and "1.running_var" in swept
    assert "1.num_batches_tracked" in frozen  # integer buffers never move
    assert {"1.weight", "1.bias", "1.running_mean"} <= norm_tensor_names(net)


@pytest.mark.parametrize("make", ARCHS)
def test_filter_normalization_matches_centre_filter_norms(make):
    net = make()
    centre, _ = swept_state(net)
    norms = norm_tensor_names(net)
    d = random_direction(centre, torch.Generator().manual_seed(0), norms, bias="zero", norm="zero")
    for k, v in d.items():
        if v.dim() >= 2 and k not in norms:
            assert torch.allclose(v.reshape(v.shape[0], -1).norm(dim=1),
                                  centre[k].reshape(v.shape[0], -1).norm(dim=1), rtol=1e-5)
        else:  # biases and norm parameters are zeroed
            assert torch.count_nonzero(v) == 0
    kept = random_direction(centre, torch.Generator().manual_seed(0), norms, bias="keep", norm="keep")
    for k, v in kept.items():
        if v.dim() == 1:  # filters of size one: |d_i| = |c_i|
            assert torch.allclose(v.abs(), centre[k].abs(), rtol=1e-5, atol=1e-7)
    # the direction is a pure function of the generator's seed
    again = random_direction(centre, torch.Generator().manual_seed(0), norms, bias="zero", norm="zero")
    assert all(torch.equal(d[k], again[k]) for k in d)


def test_filter_normalized_rescales_a_known_direction():
    centre = {"w": torch.tensor([[3.0, 4.0], [0.0, 2.0]]), "b": torch.tensor([1.0, -2.0])}
    d = filter_normalized({"w": torch.tensor([[1.0, 0.0], [1.0, 1.0]]), "b": torch.tensor([0.5, 0.5])}, centre,
                          bias="keep")
    assert torch.allclose(d["w"], torch.tensor([[5.0, 0.0], [2 ** 0.5, 2 ** 0.5]]))
    assert torch.allclose(d["b"], torch.tensor([1.0, 2.0]))


def test_plane_through_three_points_gives_exact_coordinates():
    g = torch.Generator().manual_seed(1)
    a, b, c = (torch.randn(5000, generator=g) for _ in range(3))
    basis, coords = plane_through(a, b, c)
    assert torch.allclose(basis @ basis.T, torch.eye(2), atol=1e-5)
    assert torch.equal(coords[0], torch.zeros(2)) and coords[1, 1].abs() < 1e-5
    recon = points(a, basis, coords)
    for p, r in zip((a, b, c), recon):
        assert torch.allclose(r, p, atol=1e-5)
    for p, xy in zip((a, b, c), coords):  # projection recovers the same coordinates, on the plane
        got, off = project(p, a, basis)
        assert torch.allclose(got, xy, atol=1e-4) and off < 1e-5
    with pytest.raises(ValueError, match="collinear"):
        plane_through(a, b, a + 2 * (b - a))


def test_reference_plane_and_line_reach_the_other_point():
    g = torch.Generator().manual_seed(2)
    centre, other, eta = (torch.randn(300, generator=g) for _ in range(3))
    dirs = reference_plane(centre, other, eta)
    assert torch.allclose(points(centre, dirs, torch.tensor([[1.0, 0.0]]))[0], other, atol=1e-6)
    assert torch.equal(dirs[1], eta)
    line = line_between(centre, other)
    coords = grid_coordinates([torch.linspace(-0.5, 1.5, 5)])
    pts = points(centre, line, coords)
    assert torch.allclose(pts[1], centre, atol=1e-6) and torch.allclose(pts[3], other, atol=1e-6)
    assert torch.allclose(pts[0], centre - 0.5 * (other - centre), atol=1e-6)  # extended beyond both ends


def test_grid_coordinates_first_axis_slowest():
    c = grid_coordinates([torch.tensor([0.0, 1.0]), torch.tensor([5.0, 6.0, 7.0])])
    assert c.tolist() == [[0, 5], [0, 6], [0, 7], [1, 5], [1, 6], [1, 7]]
