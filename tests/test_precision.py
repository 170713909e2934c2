"""bf16 cost surfaces (sweep.precision=bf16): the forward really runs in bfloat16 and equals a bfloat16 copy
of the model; the error certificate recomputes its sample in fp32 and fails where it should."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import compose_cfg
from distillscape.artifacts import read_json
from distillscape.config import ConfigError
from distillscape.geometry import flatten, grid_coordinates, points, unflatten
from distillscape.landscape import (certificate_sample, compute_shard, grid_axes, merge_shards, precision_certificate,
                                    rank_correlation, read_npz)
from distillscape.models import MLP, SimpleConvNet
from distillscape.resume import fingerprint
from test_landscape import TINY, digits, predict_trainer, sweep_module  # noqa: F401 (digits: the fixture)


def bf16_copy_loss(net, vec, like, x, y) -> tuple[float, float]:
    """The obvious way: a bfloat16 copy of the model loaded with the point's weights, bfloat16 inputs,
    the loss of its logits in float32."""
    model = copy.deepcopy(net)
    model.load_state_dict({k: v.clone() for k, v in unflatten(vec, like).items()})
    model = model.to(torch.bfloat16)
    with torch.no_grad():
        out = model(x.to(torch.bfloat16)).float()
    return F.cross_entropy(out, y, reduction="sum").item() / len(y), (out.argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("make", [lambda: MLP(1, 8, 8, 10), lambda: SimpleConvNet(1, 8, 8, 10)])
@pytest.mark.parametrize("batching", ["vmap", "loop", "channels_last"])
def test_bf16_points_equal_a_bfloat16_copy_of_the_model(digits, make, batching):
    net = make()
    module = sweep_module(net, digits, batching, data_batch=700)  # one forward holds the whole cost
    module.precision = "bf16"
    like = {k: v for k, v in net.named_parameters()}
    vecs = points(module.centre, module.directions, torch.tensor([[0.0, 0.0], [0.5, -0.25], [-1.0, 1.0]]))
    got = module.evaluate(vecs, batching)
    module.precision = "fp32"
    exact = module.evaluate(vecs, batching)
    for j, vec in enumerate(vecs):
        loss, acc = bf16_copy_loss(net, vec, like, module.cost0_x, module.cost0_y)
        assert got["train/loss"][j].item() == pytest.approx(loss, rel=2e-3)
        assert got["train/acc"][j].item() == pytest.approx(acc, abs=3 / 700)
    # it is bf16 indeed: not the fp32 values, but close to them
    assert not torch.equal(got["train/loss"], exact["train/loss"])
    torch.testing.assert_close(got["train/loss"], exact["train/loss"], rtol=3e-2, atol=0)


def bf16_surface(digits, tmp_path, resolution=(5, 5)):
    module = sweep_module(SimpleConvNet(1, 8, 8, 10), digits, "loop")
    module.precision = "bf16"
    axes = grid_axes([[-1, 1], [-1, 1]], list(resolution))
    fp = fingerprint(module.centre, module.directions, *axes, data=[module.metric_names, {"precision": "bf16"}])
    compute_shard(module, predict_trainer(), grid_coordinates(axes), 0, 1, tmp_path, fp, points_per_batch=4)
    surface = read_npz(merge_shards(tmp_path, 1, fp, axes, module.metric_names, {}))
    return module, surface, axes


def test_certificate_recomputes_its_sample_in_fp32(digits, tmp_path):
    module, surface, axes = bf16_surface(digits, tmp_path)
    coords = grid_coordinates(axes)
    cert = precision_certificate(module, surface, coords, tolerance=5e-2, random_points=3, seed=1)
    index = np.array(cert["points"])
    assert 12 in index  # the centre (0, 0) of the 5x5 grid
    best = int(np.argmin(surface["train/loss"]))
    assert best in index
    assert module.precision == "bf16"  # restored after the fp32 pass
    # the oracle: the same points in fp32, one by one
    module.precision = "fp32"
    exact = module.evaluate(points(module.centre, module.directions, coords[index]), "loop")
    rel = np.abs(surface["train/loss"].ravel()[index] - exact["train/loss"].numpy()) / exact["train/loss"].numpy()
    assert cert["metrics"]["train/loss"]["max_difference"] == pytest.approx(rel.max(), rel=1e-12)
    assert 0 < rel.max() < 5e-2  # bf16 differs from fp32, and not by much
    assert cert["passed"] and cert["metrics"]["train/loss"]["same_minimum"]
    # a tolerance below the measured difference fails, and says which metrics
    module.precision = "bf16"
    strict = precision_certificate(module, surface, coords, tolerance=rel.max() / 10, random_points=3, seed=1)
    assert not strict["passed"] and not strict["metrics"]["train/loss"]["passed"]


def test_certificate_catches_a_moved_minimum(digits, tmp_path):
    """A surface whose lowest grid point is not the lowest of its rivals in fp32 fails `same_minimum`."""
    module, surface, axes = bf16_surface(digits, tmp_path)
    coords = grid_coordinates(axes)
    loss = surface["train/loss"].ravel()
    worst = int(np.argmax(loss))
    forged = dict(surface)
    forged["train/loss"] = loss.copy()
    forged["train/loss"][worst] = loss.min() - 1.0  # the "bf16" minimum at fp32's highest point
    forged["train/loss"] = forged["train/loss"].reshape(surface["train/loss"].shape)
    cert = precision_certificate(module, forged, coords, tolerance=1e-4, random_points=2, seed=0)
    assert not cert["metrics"]["train/loss"]["same_minimum"] and not cert["passed"]


def test_certificate_sample_and_rank_correlation():
    surface = {"axis0": np.linspace(-1, 1, 3), "axis1": np.linspace(-1, 1, 5),
               "a/loss": np.arange(15.0)[::-1].reshape(3, 5).copy(), "a/acc": np.zeros((3, 5))}
    index = certificate_sample(surface, ["a/loss", "a/acc"], random_points=2, seed=0)
    assert {14, 13, 12, 11} <= set(index.tolist())  # the four lowest of a/loss
    assert int(np.ravel_multi_index((1, 2), (3, 5))) in index  # the origin
    assert len(index) == len(set(index.tolist())) == 7 and list(index) == sorted(index)
    assert rank_correlation(np.array([1.0, 2, 3]), np.array([10.0, 20, 30])) == pytest.approx(1.0)
    assert rank_correlation(np.array([1.0, 2, 3]), np.array([3.0, 2, 1])) == pytest.approx(-1.0)
    assert np.isnan(rank_correlation(np.array([1.0, 1, 1]), np.array([1.0, 2, 3])))


def test_task_writes_the_certificate_and_reuses_it(digits_run, tmp_path):
    from distillscape.tasks.landscape import landscape

    def run(out):
        return landscape(compose_cfg("landscape", [f"distilled={digits_run}", *TINY, "sweep.costs=[test]",
                                                   "sweep.resolution=[3,3]", "sweep.precision=bf16",
                                                   "sweep.precision_tolerance=0.05"], out))

    paths = run(tmp_path)
    surface = read_npz(paths[0])
    assert str(surface["precision"]) == "bf16"
    marker = paths[0].parent / "precision.json"
    cert = read_json(marker)["certificate"]
    assert cert["precision"] == "bf16" and set(cert["metrics"]) == {"test/loss", "test/acc"}
    summary = read_json(paths[0].parent / "summary.json")
    assert summary["precision/passed"] == float(cert["passed"])
    before = marker.stat().st_mtime_ns
    run(tmp_path)  # the same job again: the shards and the certificate are reused
    assert marker.stat().st_mtime_ns == before


@pytest.mark.parametrize("bad", ["sweep.precision=fp16", "sweep.precision_tolerance=0", "sweep.precision_points=-1"])
def test_bad_precision_settings_are_refused(digits_run, tmp_path, bad):
    from distillscape.config import settings

    with pytest.raises(ConfigError, match=bad.split("=")[0]):
        settings(compose_cfg("landscape", [f"distilled={digits_run}", bad], tmp_path))
