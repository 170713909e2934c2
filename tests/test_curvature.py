"""Curvature of the true-task loss: Hessian-vector products, power iteration and Hutchinson's trace,
checked against the explicit Hessian of a tiny model (torch.func.hessian + torch.linalg)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distillscape.geometry import flatten, unflatten
from distillscape.inner import InitSampler, InnerLoop, unstack
from distillscape.landing import (TrueTask, as_stack, curvature, flat_stack, hutchinson_trace, rademacher,
                                  top_eigenvalue)
from distillscape.models import MLP


@pytest.fixture(scope="module")
def tiny():
    """A 35-parameter MLP, 2 random inits and 23 examples (chunks of 7: the last one is short)."""
    torch.manual_seed(0)
    net = MLP(1, 2, 2, 3, hidden=[4])
    loop = InnerLoop(net, "mse")
    stack = InitSampler(net).sample(2, seed=3)
    x, y = torch.randn(23, 1, 2, 2), torch.randint(0, 3, (23,))
    task = TrueTask(loop, x, y, data_chunk=7)
    hessians = []
    for i in range(2):
        params = unstack(stack, i)
        vec = flatten(params, loop.names).detach()

        def loss(v, like=params):
            return F.cross_entropy(loop.forward(unflatten(v, like), x), y)

        hessians.append(torch.func.hessian(loss)(vec))
    return loop, stack, task, torch.stack(hessians)


def test_explicit_hessian_is_symmetric_and_indefinite(tiny):
    _, _, _, H = tiny
    torch.testing.assert_close(H, H.transpose(1, 2), atol=1e-6, rtol=1e-5)
    ev = torch.linalg.eigvalsh(H)
    assert (ev[:, 0] < -1e-6).all() and (ev[:, -1] > 1e-6).all()  # a real test case, not a PSD one


def test_hvp_matches_explicit_hessian(tiny):
    loop, stack, task, H = tiny
    v = torch.randn(2, H.shape[1], generator=torch.Generator().manual_seed(1))
    hv = flat_stack(task.hvp(stack, as_stack(v, stack, loop.names)), loop.names)
    torch.testing.assert_close(hv, torch.einsum("mij,mj->mi", H, v), atol=1e-5, rtol=1e-4)


def test_gradient_matches_autograd(tiny):
    loop, stack, task, _ = tiny
    for i in range(2):
        params = {k: v.clone().requires_grad_() for k, v in unstack(stack, i).items()}
        loss = F.cross_entropy(loop.forward(params, task.x), task.y)
        expected = torch.autograd.grad(loss, [params[k] for k in loop.names])
        got = task.grad(stack)
        for k, e in zip(loop.names, expected):
            torch.testing.assert_close(got[k][i], e, atol=1e-6, rtol=1e-5)


def test_top_eigenvalue_and_trace_match_linalg(tiny):
    _, stack, task, H = tiny
    top, trace = curvature(task, stack, iters=300, tol=1e-7, probes=4000, generator=torch.Generator().manual_seed(0))
    ev = torch.linalg.eigvalsh(H)
    largest_magnitude = ev.gather(1, ev.abs().argmax(1, keepdim=True)).squeeze(1)
    torch.testing.assert_close(top, largest_magnitude, rtol=1e-3, atol=1e-6)
    # Hutchinson is unbiased with variance 2 * sum_{i != j} H_ij^2 per probe: demand 4 standard errors
    exact = torch.diagonal(H, dim1=1, dim2=2).sum(1)
    off = (H ** 2).sum((1, 2)) - (torch.diagonal(H, dim1=1, dim2=2) ** 2).sum(1)
    bound = 4 * torch.sqrt(2 * off / 4000)
    assert torch.all(bound < 0.1 * exact.abs())  # the bound is tight enough to mean something
    assert torch.all((trace - exact).abs() <= bound)


def test_hutchinson_is_the_mean_of_the_quadratic_forms(tiny):
    """With the same probes, the estimator is exactly mean_z z^T H z (checks probe use, not luck)."""
    _, _, _, H = tiny
    tiled = H.repeat(5, 1, 1)  # probe-major, as hutchinson_trace hands the probes to hvp
    hvp = lambda v: torch.einsum("nij,nj->ni", tiled, v)  # noqa: E731
    mean, stderr = hutchinson_trace(hvp, (2, H.shape[1]), probes=5, generator=torch.Generator().manual_seed(7))
    zs = rademacher((5, 2, H.shape[1]), torch.Generator().manual_seed(7))
    forms = torch.stack([torch.einsum("mi,mij,mj->m", z, H, z) for z in zs])
    torch.testing.assert_close(mean, forms.mean(0))
    torch.testing.assert_close(stderr, forms.std(0) / math.sqrt(5))


def test_power_iteration_keeps_the_sign_of_a_dominant_negative_eigenvalue():
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(0)))
    eig = torch.tensor([[-5.0, 2.0, 1.0, 0.5, 0.1, -0.3], [4.0, -1.0, 1.0, 0.5, 0.1, -0.3]])
    A = torch.stack([q @ torch.diag(e) @ q.T for e in eig])
    top = top_eigenvalue(lambda v: torch.einsum("mij,mj->mi", A, v), (2, 6), iters=500, tol=1e-10,
                         generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(top, torch.tensor([-5.0, 4.0]), rtol=1e-4, atol=1e-5)
