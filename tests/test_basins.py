"""One basin or two (distillscape.basins): curves against hand-computed points, a trained curve against a
straight line that crosses a barrier by construction, batch-norm statistics against a pass computed by hand,
and the landing task's curve part end to end."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distillscape.basins import (bezier, compare, on_grid, point_losses, polychain, straight, train_curves,
                                 with_recomputed_statistics)
from distillscape.inner import InitSampler, InnerLoop
from distillscape.landing import TrueTask
from distillscape.models import MLP


def three_points():
    g = torch.Generator().manual_seed(0)
    return tuple({"w": torch.randn(2, 3, generator=g), "b": torch.randn(2, generator=g)} for _ in range(3))


# -- (1) the curves at t = 0, 1/2, 1, by hand --------------------------------------------------------------
def test_bezier_and_chain_points_by_hand():
    w1, theta, w2 = three_points()
    for t, want in ((0.0, w1), (1.0, w2)):
        for curve in (bezier, polychain):
            got = curve(w1, theta, w2, torch.full((2,), t))
            assert all(torch.equal(got[k], want[k]) for k in w1)
    half = torch.full((2,), 0.5)
    got = bezier(w1, theta, w2, half)
    for k in w1:  # (1/2)^2 w1 + 2 (1/2)(1/2) theta + (1/2)^2 w2
        torch.testing.assert_close(got[k], 0.25 * w1[k] + 0.5 * theta[k] + 0.25 * w2[k])
        torch.testing.assert_close(polychain(w1, theta, w2, half)[k], theta[k])
        # a quarter of the way: half way along the first piece, three quarters: half way along the second
        torch.testing.assert_close(polychain(w1, theta, w2, torch.full((2,), 0.25))[k], (w1[k] + theta[k]) / 2)
        torch.testing.assert_close(polychain(w1, theta, w2, torch.full((2,), 0.75))[k], (theta[k] + w2[k]) / 2)
    # one t per model of the stack
    mixed = bezier(w1, theta, w2, torch.tensor([0.0, 1.0]))
    assert torch.equal(mixed["w"][0], w1["w"][0]) and torch.equal(mixed["w"][1], w2["w"][1])


# -- (2) a barrier by construction: a network and its hidden units permuted ------------------------------------
def two_moons(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved half circles with noise: a problem a one-hidden-layer ReLU net needs several units for."""
    y = torch.randint(0, 2, (n,), generator=g)
    a = torch.rand(n, generator=g) * torch.pi
    x = torch.stack([torch.cos(a) + y * 1.0, torch.sin(a) * (1 - 2 * y) + y * 0.4], 1)
    return (x + 0.1 * torch.randn(n, 2, generator=g)).view(n, 1, 1, 2), y


def fit(loop: InnerLoop, params: dict, x, y, steps: int = 100) -> dict:
    params = {k: v.clone().requires_grad_() for k, v in params.items()}
    opt = torch.optim.Adam(params.values(), lr=0.02)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(loop.forward(params, x), y).backward()
        opt.step()
    return {k: v.detach() for k, v in params.items()}


def test_a_trained_curve_goes_below_the_barrier_between_permuted_twins():
    """w and w with its hidden units permuted compute the same function (equal loss); the straight line between
    them averages unlike units and rises over a barrier. The curve between them must find a lower path."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x, y = two_moons(400, g)
    net = MLP(1, 1, 2, 2, hidden=[12])
    loop = InnerLoop(net, "mse")
    w = fit(loop, {k: v[0] for k, v in InitSampler(net).sample(1, seed=3).items()}, x, y)
    perm = torch.randperm(12, generator=g)
    twin = dict(w)
    twin["net.1.weight"], twin["net.1.bias"] = w["net.1.weight"][perm], w["net.1.bias"][perm]
    twin["net.3.weight"] = w["net.3.weight"][:, perm]
    task = TrueTask(loop, x, y, data_chunk=400)
    ends = point_losses(task, {k: torch.stack([w[k], twin[k]]) for k in w})
    torch.testing.assert_close(ends[0], ends[1])  # the same function
    ts = torch.linspace(0, 1, 11)
    for kind in ("bezier", "polychain"):
        got = compare(loop, kind, {k: v.unsqueeze(0) for k, v in w.items()}, twin, task, task, (x, y), ts,
                      steps=80, lr=0.1, momentum=0.9, batch_size=128, generator=torch.Generator().manual_seed(2))
        line, curve = got["barrier_line_train"].item(), got["barrier_curve_train"].item()
        assert line > 0.1, f"the construction should give the straight line a barrier, got {line:.3g}"
        assert curve < 0.5 * line, f"{kind}: curved barrier {curve:.3g} not below half the straight one {line:.3g}"


def tiny(examples: int, hidden: int, seed: int):
    """A generator, two-moons data and a one-hidden-layer net's inner loop, for the small checks below."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(seed)
    x, y = two_moons(examples, g)
    net = MLP(1, 1, 2, 2, hidden=[hidden])
    return g, x, y, net, InnerLoop(net, "mse")


def test_an_untrained_bezier_curve_is_the_straight_line():
    """theta starts at the middle of the line, where the Bezier curve is the line: zero steps, equal barriers."""
    g, x, y, net, loop = tiny(100, 6, 4)
    inits = InitSampler(net).sample(3, seed=1)
    task = TrueTask(loop, x, y, data_chunk=40)
    got = compare(loop, "bezier", inits, {k: v[0] * 0.5 for k, v in inits.items()}, task, task, (x, y),
                  torch.linspace(0, 1, 7), steps=0, lr=0.1, momentum=0.9, batch_size=32, generator=g)
    torch.testing.assert_close(got["curve_train_loss"], got["line_train_loss"], rtol=1e-5, atol=1e-6)


# -- (4) the ends of trained curves are the landing and the direct minimum, exactly ------------------------------
def test_trained_curves_end_exactly_at_landing_and_minimum():
    g, x, y, net, loop = tiny(60, 5, 5)
    w1, w2 = InitSampler(net).sample(3, seed=1), InitSampler(net).sample(3, seed=2)
    ts = torch.tensor([0.0, 0.3, 1.0])
    for kind in ("bezier", "polychain"):
        theta = train_curves(loop, kind, w1, w2, x, y, steps=5, lr=0.1, momentum=0.9, batch_size=16, generator=g)
        assert not torch.equal(theta["net.1.weight"], torch.lerp(w1["net.1.weight"], w2["net.1.weight"], 0.5))
        for points in (on_grid(kind, w1, theta, w2, ts), straight(w1, w2, ts)):
            for k in w1:
                assert torch.equal(points[k][0::3], w1[k]) and torch.equal(points[k][2::3], w2[k])


# -- (3) batch-norm statistics against a pass by hand ------------------------------------------------------------
class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.bn, self.out = nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)

    def forward(self, x):
        return self.out(torch.relu(self.bn(self.lin(x))))


def test_batch_norm_statistics_are_recomputed_over_the_split():
    torch.manual_seed(0)
    net = BNNet()
    with torch.no_grad():  # a stale state the recompute must not keep
        net.bn.running_mean.fill_(5.0)
        net.bn.running_var.fill_(9.0)
        net.bn.weight.uniform_(0.5, 2)
        net.bn.bias.uniform_(-1, 1)
    params = {k: v.detach() + 0.1 for k, v in net.named_parameters()}
    x = torch.randn(60, 4) * 3 + 1
    y = torch.randint(0, 2, (60,))
    z = F.linear(x, params["lin.weight"], params["lin.bias"])  # what the batch norm sees, by hand
    whole = with_recomputed_statistics(net, params, x, chunk=60)
    torch.testing.assert_close(whole.bn.running_mean, z.mean(0))
    torch.testing.assert_close(whole.bn.running_var, z.var(0, unbiased=True))
    # in chunks: the cumulative average of each chunk's mean and (unbiased) variance
    chunked = with_recomputed_statistics(net, params, x, chunk=20)
    torch.testing.assert_close(chunked.bn.running_mean, torch.stack([c.mean(0) for c in z.split(20)]).mean(0))
    torch.testing.assert_close(chunked.bn.running_var, torch.stack([c.var(0) for c in z.split(20)]).mean(0))
    assert not chunked.training and net.bn.running_mean[0] == 5.0  # the net itself untouched
    # the loss at the point, by hand from those statistics
    h = (z - z.mean(0)) / torch.sqrt(z.var(0) + net.bn.eps) * params["bn.weight"] + params["bn.bias"]
    want = F.cross_entropy(F.linear(torch.relu(h), params["out.weight"], params["out.bias"]), y)
    loop = InnerLoop(net, "mse")
    stack = {k: torch.stack([v, v * 0.5]) for k, v in params.items()}
    got = point_losses(TrueTask(loop, x, y, data_chunk=60), stack, bn_data=x)
    torch.testing.assert_close(got[0], want)
    # a batch-norm net's curve trains (each minibatch normalised by its own statistics) and keeps its ends
    w1, w2 = {k: v[:1] for k, v in stack.items()}, {k: v[1:] for k, v in stack.items()}
    theta = train_curves(loop, "bezier", w1, w2, x, y, steps=3, lr=0.1, momentum=0.9, batch_size=20,
                         generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(theta["lin.weight"]).all()
    with pytest.raises(ValueError, match="bn_data"):
        point_losses(TrueTask(loop, x, y), stack)


# -- the landing task's curve part, end to end ------------------------------------------------------------------
CURVE_RUN = ["analysis.kinds=[distilled]", "analysis.inits=3", "analysis.polish_inits=0", "analysis.curvature_inits=0",
             "analysis.trajectory_inits=0", "analysis.train_examples=300", "analysis.barrier_points=3",
             "analysis.test_examples=200", "analysis.power_iters=3", "analysis.hutchinson_probes=2",
             "analysis.curvature_examples=100", "baseline.tune_inits=2",
             "analysis.curve=bezier", "analysis.curve_inits=2", "analysis.curve_steps=20", "analysis.curve_points=5"]


def test_landing_task_writes_the_curve_part_and_reuses_it(digits_run, tmp_path, capsys):
    from test_landing import compose_landing

    from distillscape.artifacts import read_json, read_tensors
    from distillscape.tasks.landing import landing

    out = tmp_path / "landing"
    summary = landing(compose_landing([f"distilled={digits_run}", "logger=none", *CURVE_RUN], out))
    curve = read_json(out / "landing_stats.json")["curve"]
    assert curve == summary["curve"] and curve["kind"] == "bezier" and curve["landings"] == 2
    assert curve["t"] == [0.0, 0.25, 0.5, 0.75, 1.0] and (out / "curve.png").stat().st_size > 10_000
    per = read_tensors(out / "landing_parts" / "curve.safetensors")
    assert per["curve_train_loss"].shape == (2, 5)
    # the straight line's ends are the landing and the direct minimum: the landing table's losses there
    stats = read_json(out / "landing_stats.json")
    assert per["line_train_loss"][:, -1].mean().item() == pytest.approx(stats["direct_minimum"]["train_loss"], rel=1e-4)
    for split in ("train", "test"):  # both paths share their ends
        torch.testing.assert_close(per[f"curve_{split}_loss"][:, [0, -1]], per[f"line_{split}_loss"][:, [0, -1]])
        d = curve["line_minus_curve"][split]
        assert d["mean"] == pytest.approx((per[f"barrier_line_{split}"] - per[f"barrier_curve_{split}"]).double().mean().item())
    # another curve setting (its directory taken over: skip_complete=false) redoes only the curve; the same reuse it
    capsys.readouterr()
    landing(compose_landing([f"distilled={digits_run}", "logger=none", *CURVE_RUN, "analysis.curve_steps=10", "skip_complete=false"], out))
    printed = capsys.readouterr().out
    assert "distilled: reusing" in printed and "curve: training" in printed
    landing(compose_landing([f"distilled={digits_run}", "logger=none", *CURVE_RUN, "analysis.curve_steps=10", "skip_complete=false"], out))
    assert "curve: reusing" in capsys.readouterr().out
    from distillscape.report import read_runs, render
    html = render(read_runs([out]), "t")
    assert "One basin or two: from each of 2 landings" in html and "barrier, bezier curve" in html


def summary_of(values) -> dict:
    from distillscape.stats import interval
    return interval(torch.tensor(values))


@pytest.mark.parametrize("line, curve, says", [
    ([0.5, 0.6, 0.55, 0.52], [0.01, 0.0, 0.02, 0.0], ["the straight line crosses a barrier", "no clear barrier along "
                                                       "the curve", "one basin", "the curve lowers the barrier by"]),
    ([0.5, 0.6, 0.55, 0.52], [0.01, 0.012, 0.011, 0.01], ["a barrier remains beyond its interval, 2.0% of the straight",
                                                           "the curve lowers the barrier by"]),
    ([0.5, 0.6, 0.55, 0.52], [0.5, 0.61, 0.54, 0.52], ["does not lower the barrier", "two basins", "no clear difference"]),
    ([0.0, 0.01, 0.0, 0.0], [0.0, 0.0, 0.01, 0.0], ["no clear barrier on the straight line", "no clear difference"]),
])
def test_one_basin_or_two_calls_a_difference_only_when_its_interval_excludes_zero(line, curve, says):
    from distillscape.report import basin_pivot, basin_sentences

    d = {"kind": "bezier", "landings": 4, "steps": 10, "line_train_loss": [0.3, 0.2, 0.1],
         "barriers": {"barrier_line_train": summary_of(line), "barrier_curve_train": summary_of(curve)},
         "line_minus_curve": {"train": summary_of([a - b for a, b in zip(line, curve)])}}
    text = basin_sentences(d)[0]
    for phrase in says:
        assert phrase in text.lower()
    assert basin_pivot(d)[1][0][0] == "train"

