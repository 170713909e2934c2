"""The curvature certificate (distillscape.curvature) against oracles: the explicit Hessian of tiny
networks (torch.func.hessian, torch.linalg.eigvalsh), the per-point loop of the same method, points
whose nature is known by construction, scipy's Wilson interval, and PyHessian where it is installed."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distillscape.curvature import (block_traces, certify, extreme_eigenpairs, lanczos, negative_count, slq,
                                    slq_trace, smoothed_density, verdict_counts, wilson)
from distillscape.errors import ConfigError
from distillscape.inner import InnerLoop
from distillscape.landing import TrueTask
from distillscape.models import MLP

from test_curvature import tiny  # noqa: F401  (the 35-parameter MLP, 2 inits, 23 examples and their explicit Hessians)

CERT = dict(k=3, slq_starts=2, slq_steps=10, probes=4, negative_tol=1e-3)


def matrix_hvp(h: torch.Tensor, times: int = 1):
    """H_m v for a stack of explicit matrices, each repeated `times` times point-major (as `tiled`)."""
    rep = h.repeat_interleave(times, dim=0)
    return lambda v: torch.einsum("mij,mj->mi", rep, v)


def test_lanczos_with_full_steps_finds_the_whole_spectrum(tiny):
    _, stack, _, H = tiny
    d = H.shape[1]
    eig = extreme_eigenpairs(matrix_hvp(H), (2, d), steps=d, k=5, generator=torch.Generator().manual_seed(0))
    exact = torch.linalg.eigvalsh(H.double())
    torch.testing.assert_close(eig["top"], exact.flip(1)[:, :5], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(eig["bottom"], exact[:, :5], atol=1e-5, rtol=1e-4)
    assert (eig["top_residual"] < 1e-4).all() and (eig["bottom_residual"] < 1e-4).all()


def test_every_ritz_value_is_within_its_residual_of_an_eigenvalue(tiny):
    """Too few steps to converge: the values are off, but the residual bound of a symmetric matrix holds."""
    _, _, _, H = tiny
    eig = extreme_eigenpairs(matrix_hvp(H), (2, H.shape[1]), steps=8, k=4, generator=torch.Generator().manual_seed(1))
    exact = torch.linalg.eigvalsh(H.double())
    for which in ("top", "bottom"):
        gap = (eig[which][:, :, None] - exact[:, None, :]).abs().amin(dim=2)
        assert (gap <= eig[f"{which}_residual"] * (1 + 1e-3) + 1e-6).all()
    assert (eig["bottom_residual"] > 1e-3).any()  # not converged: the bound was really exercised


def test_batched_lanczos_equals_the_per_point_loop(tiny):
    loop, stack, task, _ = tiny
    from distillscape.curvature import stack_hvp
    start = torch.randn(2, 35, generator=torch.Generator().manual_seed(2))
    t_all, q_all = lanczos(stack_hvp(task, stack), start, steps=12)
    for i in range(2):
        one = {k: v[i:i + 1] for k, v in stack.items()}
        t_one, q_one = lanczos(stack_hvp(task, one), start[i:i + 1], steps=12)
        torch.testing.assert_close(t_all[i:i + 1], t_one, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(q_all[i:i + 1], q_one, atol=1e-4, rtol=1e-3)


def test_slq_density_matches_the_exact_spectrum(tiny):
    _, _, _, H = tiny
    d, starts = H.shape[1], 400
    nodes, weights = slq(matrix_hvp(H, starts), (2, d), steps=d, starts=starts,
                         generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(weights.sum(dim=2), torch.ones(2, starts, dtype=weights.dtype), atol=1e-6, rtol=0)
    exact = torch.linalg.eigvalsh(H.double())
    lo, hi = exact.min().item() - 0.5, exact.max().item() + 0.5
    grid = torch.linspace(lo, hi, 2000, dtype=torch.float64)
    sigma = 0.02 * (hi - lo)
    got = smoothed_density(nodes, weights, grid, sigma)
    want = smoothed_density(exact[:, None, :], torch.full_like(exact[:, None, :], 1 / d), grid, sigma)
    l1 = ((got - want).abs().sum(dim=1) * (grid[1] - grid[0]))
    assert (l1 < 0.1).all(), l1  # weights average 1/D each; 400 starts leave a few % of noise
    # first and second moments of the spectral measure: (1/D) tr H and (1/D) tr H^2
    for p in (1, 2):
        moment = (weights * nodes ** p).sum(dim=2).mean(dim=1)
        torch.testing.assert_close(moment, (exact ** p).mean(dim=1), rtol=0.1, atol=1e-4)
    # an unsmoothed wrong spectrum (all weight on the mean eigenvalue) is far from it: the test can fail
    flat = smoothed_density(exact.mean(1, keepdim=True)[:, None, :], torch.ones(2, 1, 1, dtype=torch.float64), grid, sigma)
    assert (((flat - want).abs().sum(dim=1) * (grid[1] - grid[0])) > 0.5).all()


def test_traces_match_the_exact_trace(tiny):
    loop, stack, _, H = tiny
    d, probes = H.shape[1], 3000
    sizes = [stack[k][0].numel() for k in loop.names]
    mean, se = block_traces(matrix_hvp(H, probes), (2, d), sizes, probes, torch.Generator().manual_seed(4))
    diag = torch.diagonal(H, dim1=1, dim2=2)
    exact = torch.stack([part.sum(dim=1) for part in diag.split(sizes, dim=1)], dim=1)
    assert ((mean - exact).abs() <= 4 * se + 1e-6).all()
    assert (se < 0.2 * exact.abs().sum(dim=1, keepdim=True)).all()  # tight enough to mean something
    nodes, weights = slq(matrix_hvp(H, 200), (2, d), steps=15, starts=200, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(slq_trace(nodes, weights, d), diag.sum(dim=1).double(), rtol=0.15, atol=1e-3)


def test_certify_on_a_network_matches_the_explicit_hessian(tiny):
    loop, stack, task, H = tiny
    got = certify(task, stack, lanczos_steps=35, grad_tol=1e-3, generator=torch.Generator().manual_seed(6), **CERT)
    exact = torch.linalg.eigvalsh(H.double())
    torch.testing.assert_close(got["lambda_max"], exact[:, -1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got["lambda_min"], exact[:, 0], atol=1e-5, rtol=1e-4)
    # the random inits are not stationary; their negative eigenvalues are counted
    assert got["verdict"] == ["not_stationary", "not_stationary"]
    want_neg = (exact[:, :3] < -(1e-3 * exact[:, -1:])).sum(dim=1)
    assert torch.equal(got["negative_count"], want_neg) and (want_neg > 0).all()


def _fit(loop, params, x, y, iters=200):
    """Full-batch L-BFGS to a stationary point of the true task (float64 for a tiny gradient)."""
    p = {k: v.double().clone().requires_grad_() for k, v in params.items()}
    opt = torch.optim.LBFGS(list(p.values()), lr=1, max_iter=iters, tolerance_grad=1e-12, tolerance_change=0,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(loop.forward(p, x), y)
        loss.backward()
        return loss

    opt.step(closure)
    return {k: v.detach().unsqueeze(0) for k, v in p.items()}


def test_verdicts_on_points_of_known_nature():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(60, 1, 1, 2, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (60,), generator=g)  # random labels: not separable, so a minimum exists
    # a convex problem: a linear softmax classifier at its minimum (its Hessian is PSD with exact zeros:
    # the logits' shared shift, which the negative tolerance must not count)
    linear = MLP(1, 1, 2, 3, hidden=[]).double()
    loop = InnerLoop(linear, "mse")
    task = TrueTask(loop, x, y)
    minimum = _fit(loop, {k: v.detach() for k, v in linear.named_parameters()}, x, y)
    cert = certify(task, minimum, lanczos_steps=9, grad_tol=1e-5, generator=g, **CERT)
    assert cert["verdict"] == ["minimum"], cert
    # a saddle: a ReLU MLP with first-layer weights 0, a positive first bias (every unit on), second-layer
    # weights 0 and the output bias at the label log-frequencies: every gradient vanishes, and the
    # W1-W2 cross block of the Hessian gives negative curvature
    net = MLP(1, 1, 2, 3, hidden=[4]).double()
    loop = InnerLoop(net, "mse")
    freq = torch.bincount(y, minlength=3).double() / len(y)
    w1, b1, w2, b2 = loop.names
    saddle = {w1: torch.zeros(1, 4, 2), b1: torch.ones(1, 4), w2: torch.zeros(1, 3, 4), b2: freq.log()[None]}
    saddle = {k: v.double() for k, v in saddle.items()}
    task = TrueTask(loop, x, y)
    not_stationary = {k: v + 0.3 * torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in saddle.items()}
    both = {k: torch.cat([saddle[k], not_stationary[k]]) for k in saddle}
    cert = certify(task, both, lanczos_steps=27, grad_tol=1e-5, generator=g, **CERT)
    assert cert["grad_norm"][0] < 1e-10
    assert cert["verdict"] == ["saddle", "not_stationary"], cert
    counts = verdict_counts(cert["verdict"])
    assert (counts["saddle"]["k"], counts["not_stationary"]["k"], counts["minimum"]["k"]) == (1, 1, 0)


def test_negative_count_uses_the_residual_and_the_relative_tolerance():
    bottom = torch.tensor([[-1.0, -0.1, -1e-4]])
    lam_max = torch.tensor([10.0])
    assert negative_count(bottom, torch.zeros(1, 3), lam_max, 1e-3).item() == 2   # -1e-4 > -1e-2: flat
    assert negative_count(bottom, torch.tensor([[0.5, 0.5, 0.0]]), lam_max, 1e-3).item() == 1  # -0.1 + 0.5 >= 0


def test_function_objective_hvp_of_an_mse_loss_matches_the_explicit_hessian():
    """F.mse_loss's backward cannot take a forward tangent ("ZeroTensors are immutable"): FunctionObjective
    switches to reverse-over-reverse, and its products still equal H v of torch.func.hessian, point by point."""
    from distillscape.curvature import FunctionObjective

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 3, generator=g), torch.randn(7, 2, generator=g)

    def loss_one(p):
        return F.mse_loss(torch.tanh(x @ p["w"] + p["b"]), y)

    stack = {"w": torch.randn(4, 3, 2, generator=g), "b": torch.randn(4, 2, generator=g)}
    vecs = {"w": torch.randn(4, 3, 2, generator=g), "b": torch.randn(4, 2, generator=g)}
    obj = FunctionObjective(["w", "b"], loss_one)
    out = obj.hvp(stack, vecs)
    assert obj.reverse_over_reverse  # the forward-over-reverse attempt failed and the object switched
    for m in range(4):
        point = {k: v[m] for k, v in stack.items()}
        flat = torch.cat([point["w"].reshape(-1), point["b"]])
        h = torch.func.hessian(lambda f: loss_one({"w": f[:6].reshape(3, 2), "b": f[6:]}))(flat)
        expected = h @ torch.cat([vecs["w"][m].reshape(-1), vecs["b"][m]])
        got = torch.cat([out["w"][m].reshape(-1), out["b"][m]])
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # a loss whose ops take forward tangents stays forward-over-reverse, with the same oracle
    ce = FunctionObjective(["w", "b"], lambda p: F.cross_entropy(x @ p["w"] + p["b"], y.argmax(1)))
    out = ce.hvp(stack, vecs)
    assert not ce.reverse_over_reverse
    point = {k: v[0] for k, v in stack.items()}
    flat = torch.cat([point["w"].reshape(-1), point["b"]])
    h = torch.func.hessian(lambda f: F.cross_entropy(x @ f[:6].reshape(3, 2) + f[6:], y.argmax(1)))(flat)
    torch.testing.assert_close(torch.cat([out["w"][0].reshape(-1), out["b"][0]]),
                               h @ torch.cat([vecs["w"][0].reshape(-1), vecs["b"][0]]), rtol=1e-5, atol=1e-6)


def test_wilson_interval_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for k, n in ((0, 10), (3, 10), (10, 10), (17, 32)):
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-6)
    assert all(math.isnan(v) for v in wilson(0, 0))


def test_top_eigenvalue_agrees_with_pyhessian(tiny):
    """A maintained library as a second oracle (skipped without it; `pip install pyhessian`)."""
    hessian_mod = pytest.importorskip("pyhessian.hessian")
    loop, stack, task, H = tiny
    net = MLP(1, 2, 2, 3, hidden=[4])
    net.load_state_dict({k: v[0] for k, v in stack.items()})
    torch.manual_seed(0)
    peer = hessian_mod.hessian(net, torch.nn.CrossEntropyLoss(), data=(task.x, task.y), cuda=False)
    top, _ = peer.eigenvalues(maxIter=500, tol=1e-6, top_n=2)
    ours = certify(task, stack, lanczos_steps=35, grad_tol=1e-3, generator=torch.Generator().manual_seed(8), **CERT)
    # PyHessian's power iteration finds the largest eigenvalues when they dominate in magnitude
    exact = torch.linalg.eigvalsh(H[0].double())
    assert exact[-1] > exact[0].abs()
    assert ours["top"][0, 0].item() == pytest.approx(top[0], rel=1e-3)


# -- the landing task's certificate, end to end -------------------------------------------------------
CERT_RUN = ["analysis.kinds=[distilled]", "analysis.inits=3", "analysis.polish_inits=0", "analysis.curvature_inits=0",
            "analysis.trajectory_inits=0", "analysis.train_examples=200", "analysis.barrier_points=3",
            "analysis.certificate=true", "analysis.certificate_inits=2", "analysis.certificate_examples=300",
            "analysis.certificate_eigs=2", "analysis.lanczos_steps=8", "analysis.slq_starts=2",
            "analysis.slq_steps=6", "analysis.hutchinson_probes=2", "analysis.data_chunk=150"]


def test_landing_task_writes_a_consistent_certificate_and_the_report_shows_it(digits_run, tmp_path, capsys):
    from test_landing import compose_landing

    from distillscape.artifacts import read_json
    from distillscape.report import read_runs, render
    from distillscape.tasks.landing import landing

    out = tmp_path / "landing"
    summary = landing(compose_landing([f"distilled={digits_run}", "logger=none", *CERT_RUN], out))
    cert = read_json(out / "certificate.json")
    assert (out / "density.png").stat().st_size > 10_000
    assert set(cert["groups"]) == {"init", "landing", "direct_minimum"}
    s = cert["settings"]
    assert (s["grad_tol"], s["negative_tol"], s["examples"]) == (1e-3, 1e-3, 300)
    for group, d in cert["groups"].items():
        n = 1 if group == "direct_minimum" else 2
        assert len(d["points"]) == n and summary["certificate"][group] == d["counts"]
        for p in d["points"]:  # every verdict follows from its own numbers by the stated rule
            lam_max = p["top"][0]
            negative = sum(b < -(r + s["negative_tol"] * abs(lam_max)) for b, r in zip(p["bottom"], p["bottom_residual"]))
            assert p["negative_count"] == negative and len(p["bottom"]) == 2
            want = "not_stationary" if p["grad_norm"] > s["grad_tol"] else "saddle" if negative else "minimum"
            assert p["verdict"] == want
            assert p["top"] == sorted(p["top"], reverse=True) and p["bottom"] == sorted(p["bottom"])
        assert sum(c["k"] for c in d["counts"].values()) == n
    # the certified landings are the distilled kind's: same inits, same step
    grad_landing = read_json(out / "landing_stats.json")["kinds"]["distilled"]["grad_norm_landing"]
    assert grad_landing["n"] == 3
    # a rerun reuses the finished certificate
    capsys.readouterr()
    landing(compose_landing([f"distilled={digits_run}", "logger=none", *CERT_RUN], out))
    assert "certificate: reusing" in capsys.readouterr().out
    html = render(read_runs([out]), "t")
    assert "Is the landing a minimum?" in html and "The direct minimum: λ_max" in html


def test_converge_stops_at_the_gradient_rule_or_the_cap():
    from distillscape.direct import converge

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(9)
    x, y = torch.randn(80, 1, 2, 2, generator=g), torch.randint(0, 3, (80,), generator=g)
    net = MLP(1, 2, 2, 3, hidden=[])  # a softmax regression: smooth and convex, so L-BFGS gets there
    capped = converge(net, x, y, grad_tol=1e-12, max_steps=2, chunk=30)
    assert capped["steps"] == 2 and not capped["converged"] and capped["train_loss"] < capped["train_loss_before"]
    record = converge(net, x, y, grad_tol=1e-4, max_steps=2000, chunk=30)
    # the gradient norm, recomputed in one piece, obeys the rule the record states
    loss = F.cross_entropy(net(x), y)
    grads = torch.autograd.grad(loss, list(net.parameters()))
    norm = torch.cat([t.flatten() for t in grads]).norm().item()
    assert record["converged"] and norm <= 1e-4 and norm == pytest.approx(record["grad_norm"], rel=1e-3, abs=1e-7)
    assert record["train_loss"] == pytest.approx(loss.item(), rel=1e-5)


def test_certificate_passes_are_bounded_by_rule_and_an_oversized_one_is_refused_before_work(digits_run, tmp_path):
    """65 conv-net points in one vmapped Hessian-vector product ran out of 24 GB: the certificate now takes
    analysis.init_chunk points per pass, or by rule as many as keep a pass near 2 GiB; the memory check counts
    the certificate's pass and refuses, in one line and before any file is written, one that cannot fit."""
    from test_landing import compose_landing

    from distillscape.job import Job
    from distillscape.run import Run
    from distillscape.tasks.common import model_sizes
    from distillscape.curvature import HVP_ACTIVATIONS, HVP_PASS_BYTES
    from distillscape.tasks.landing import certificate_chunk, landing, memory_parts

    run = Run.open(digits_run)
    s = Job.of(compose_landing([f"distilled={digits_run}", "analysis.certificate=true"], tmp_path / "a")).settings
    _, acts = model_sizes(run.net(), run.meta["image_shape"])
    by_rule = certificate_chunk(s.analysis, acts)
    assert by_rule >= 1 and HVP_ACTIVATIONS * by_rule * s.analysis.data_chunk * acts * 4 <= HVP_PASS_BYTES
    assert HVP_ACTIVATIONS * (by_rule + 1) * s.analysis.data_chunk * acts * 4 > HVP_PASS_BYTES
    pinned = Job.of(compose_landing([f"distilled={digits_run}", "analysis.certificate=true", "analysis.init_chunk=3"],
                                    tmp_path / "b")).settings
    assert certificate_chunk(pinned.analysis, acts) == 3
    assert "certificate" in memory_parts(s, run) and "certificate" not in memory_parts(
        Job.of(compose_landing([f"distilled={digits_run}"], tmp_path / "c")).settings, run)
    huge = ["analysis.certificate=true", "analysis.inits=4000", "analysis.certificate_inits=4000",
            "analysis.init_chunk=4000", "analysis.polish_inits=0", "analysis.curvature_inits=0",
            "analysis.trajectory_inits=0", "logger=none"]
    out = tmp_path / "huge"
    with pytest.raises(ConfigError, match="certificate"):
        landing(compose_landing([f"distilled={digits_run}", *huge], out))
    assert not out.exists() or not any(out.iterdir())
