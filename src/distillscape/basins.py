"""One basin or two? A curved low-loss path between each landing and the direct minimum (Garipov et al. 2018).

A straight line from the landing w1 to the direct minimum w2 can rise over a barrier even when the two lie in
one connected low-loss valley: mode connectivity (Garipov et al., NeurIPS 2018; Draxler et al., ICML 2018)
finds a curved path between them whose loss stays low. Here, for the distilled landings of the first
`curve_inits` inits:

- the curve, one per landing, with a learned middle point theta:
  quadratic Bezier  phi(t) = (1-t)^2 w1 + 2t(1-t) theta + t^2 w2, or
  polygonal chain   phi(t) = w1 -> theta -> w2, two straight pieces meeting at t = 1/2;
  theta starts at the middle of the straight line (so the untrained curve is that line) and is trained on the
  true task's training split: every step draws t ~ U(0, 1) for each curve and one shared minibatch, and takes
  an SGD step (heavy-ball momentum) on theta of the cross-entropy at phi(t). The ends stay fixed: phi(0) = w1 and
  phi(1) = w2 exactly.
- the barrier along a path sampled at the t grid (`curve_points` values from 0 to 1): the largest height of the
  loss above the straight line between the two end losses, max_t [L(phi(t)) - ((1-t) L(w1) + t L(w2))]
  (the definition of Garipov et al. and of the loss-landscape literature; `landing.barrier`), >= 0.
  The straight line's barrier is computed on the same grid and data, so the two are paired per landing.
- networks with batch norm: at every point of a path the running statistics are recomputed over the training
  split (reset, momentum None: a cumulative average over the split's chunks, in train mode), then the point is
  evaluated in eval mode; a point's weights alone do not say which statistics it needs. While the curve is
  trained, batch norm uses each minibatch's own statistics. (No architecture of models.py has batch norm today;
  the recompute is there for one that does.)

Per-landing values go to landing_parts/curve.safetensors; the summary (each barrier's mean with its 95% t
interval, and the paired difference straight - curved) to landing_stats.json["curve"]. Two basins would show
as a curve that cannot get below the straight line's barrier; one basin as a curved barrier near 0.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, replace_all_batch_norm_modules_, vmap

from .inner import InnerLoop
from .landing import TrueTask, barrier
from .params import Params, stack_len, unstack
from .stats import interval

# -- the curves ------------------------------------------------------------------------------------------
def _along(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """t ([M] for a stack, 0-d for one model) shaped to broadcast over a parameter tensor of the same models."""
    return t.reshape(*t.shape, *[1] * (like.dim() - t.dim()))


def bezier(w1: Params, theta: Params, w2: Params, t: torch.Tensor) -> Params:
    """The quadratic Bezier curve (1-t)^2 w1 + 2t(1-t) theta + t^2 w2 (stacks with t [M], or one model with a
    0-d t). At t = 0 and t = 1 the other terms are exact zeros, so the ends are w1 and w2 to the bit."""
    out = {}
    for k in w1:
        s = _along(t, w1[k])
        out[k] = (1 - s) ** 2 * w1[k] + 2 * s * (1 - s) * theta[k] + s ** 2 * w2[k]
    return out


def polychain(w1: Params, theta: Params, w2: Params, t: torch.Tensor) -> Params:
    """The polygonal chain w1 -> theta (t in [0, 1/2]) -> w2 (t in [1/2, 1]), each piece a straight line
    (torch.lerp, exact at both of its ends)."""
    out = {}
    for k in w1:
        s = _along(t, w1[k])
        out[k] = torch.where(s < 0.5, torch.lerp(w1[k], theta[k], 2 * s), torch.lerp(theta[k], w2[k], 2 * s - 1))
    return out


CURVES: dict[str, Callable[[Params, Params, Params, torch.Tensor], Params]] = {"bezier": bezier, "polychain": polychain}


def _repeated(stack: Params, n: int) -> Params:
    return {k: v.repeat_interleave(n, dim=0) for k, v in stack.items()}


def on_grid(kind: str, w1: Params, theta: Params, w2: Params, ts: torch.Tensor) -> Params:
    """Every curve of the stacks at every t of the grid: a stack of M * T points, curve-major (row m * T + j is
    curve m at ts[j])."""
    n = len(ts)
    t = ts.to(next(iter(w1.values())).device).repeat(stack_len(w1))
    return CURVES[kind](_repeated(w1, n), _repeated(theta, n), _repeated(w2, n), t)


def straight(w1: Params, w2: Params, ts: torch.Tensor) -> Params:
    """The straight lines w1 -> w2 at the grid, curve-major like `on_grid` (torch.lerp, as landing's lines)."""
    n = len(ts)
    t = ts.to(next(iter(w1.values())).device).repeat(stack_len(w1))
    a, b = _repeated(w1, n), _repeated(w2, n)
    return {k: torch.lerp(a[k], b[k], _along(t, a[k])) for k in a}


# -- batch norm ------------------------------------------------------------------------------------------
def batch_norms(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def training_copy(net: nn.Module) -> nn.Module:
    """A train-mode copy of net whose batch norms keep no running statistics (each batch is normalised by its
    own), so that a vmapped forward over many models writes no shared buffer; net itself when it has none."""
    if not batch_norms(net):
        return net
    train = copy.deepcopy(net)
    replace_all_batch_norm_modules_(train)
    return train.train()


@torch.no_grad()
def with_recomputed_statistics(net: nn.Module, params: Params, x: torch.Tensor, chunk: int) -> nn.Module:
    """A copy of net holding one model's `params`, its batch norms' running statistics recomputed over x:
    reset, momentum None (a cumulative average over the chunks of x), x passed through in train mode; returned
    in eval mode."""
    model = copy.deepcopy(net)
    model.load_state_dict({k: v.detach() for k, v in params.items()}, strict=False)
    for bn in batch_norms(model):
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    for i in range(0, len(x), chunk):
        model(x[i:i + chunk])
    return model.eval()


@torch.no_grad()
def point_losses(task: TrueTask, stack: Params, bn_data: torch.Tensor | None = None) -> torch.Tensor:
    """Mean loss [M] of every point of a stack on `task`: vmapped for a net without batch norm; otherwise one
    point at a time, each with its batch-norm statistics recomputed over bn_data (the training split)."""
    net = task.loop.net
    if not batch_norms(net):
        return task.evaluate(stack)[1]
    if bn_data is None:
        raise ValueError("a network with batch norm needs bn_data (the training split) to recompute its statistics")
    out = []
    for i in range(stack_len(stack)):
        model = with_recomputed_statistics(net, unstack(stack, i), bn_data, task.data_chunk)
        total = sum(F.cross_entropy(model(x), y, reduction="sum") for x, y in task._chunks())
        out.append(total / len(task))
    return torch.stack(out)


# -- training a curve --------------------------------------------------------------------------------------
def train_curves(loop: InnerLoop, kind: str, w1: Params, w2: Params, x: torch.Tensor, y: torch.Tensor, *,
                 steps: int, lr: float, momentum: float, batch_size: int, generator: torch.Generator,
                 init_chunk: int | None = None) -> Params:
    """The middle points theta [M] of curves `kind` from w1 to w2 (stacks), trained on (x, y) as in the module
    doc: per step one minibatch shared by all curves (without replacement; >= len(y): full batch) and one
    t ~ U(0, 1) per curve, both from `generator` (drawn on the CPU: the same on every device)."""
    if kind not in CURVES:
        raise ValueError(f"unknown curve {kind!r}; allowed: {', '.join(CURVES)}")
    net = training_copy(loop.net)
    curve = CURVES[kind]

    def loss(theta, a, b, t, xb, yb):
        return F.cross_entropy(functional_call(net, curve(a, theta, b, t), (xb,)), yb)

    g = vmap(grad(loss), in_dims=(0, 0, 0, 0, None, None), chunk_size=init_chunk)
    w1 = {k: w1[k].detach() for k in loop.names}
    w2 = {k: w2[k].detach() for k in loop.names}
    theta = {k: torch.lerp(w1[k], w2[k], 0.5) for k in loop.names}
    velocity = {k: torch.zeros_like(v) for k, v in theta.items()}
    m = stack_len(w1)
    for _ in range(steps):
        idx = torch.randperm(len(y), generator=generator)[:batch_size].to(y.device)
        t = torch.rand(m, generator=generator).to(x.device)
        grads = g(theta, w1, w2, t, x[idx], y[idx])
        for k in theta:
            velocity[k] = momentum * velocity[k] + grads[k]
            theta[k] = theta[k] - lr * velocity[k]
    return theta


# -- the comparison ----------------------------------------------------------------------------------------
def path_losses(task: TrueTask, points: Params, m: int, bn_data: torch.Tensor | None) -> torch.Tensor:
    """Losses [M, T] of M paths given as one curve-major stack of M * T points."""
    return point_losses(task, points, bn_data).reshape(m, -1)


def compare(loop: InnerLoop, kind: str, landed: Params, direct: Params, train: TrueTask, test: TrueTask,
            fit: tuple[torch.Tensor, torch.Tensor], ts: torch.Tensor, *, steps: int, lr: float, momentum: float,
            batch_size: int, generator: torch.Generator, init_chunk: int | None = None) -> dict[str, torch.Tensor]:
    """Curved against straight paths from each landing (stack [M]) to the direct minimum (one model, no model
    dim): the curves trained on `fit` (the training split, which also recomputes batch-norm statistics), losses
    on `train` and `test` along both paths at `ts`, and their barriers. Keys: curve/line_{train,test}_loss
    [M, T]; barrier_{curve,line}_{train,test} [M]; theta (the middle points, a stack)."""
    m = stack_len(landed)
    w1 = {k: landed[k].detach() for k in loop.names}
    w2 = {k: direct[k].detach().unsqueeze(0).expand_as(w1[k]).contiguous() for k in loop.names}
    theta = train_curves(loop, kind, w1, w2, *fit, steps=steps, lr=lr, momentum=momentum, batch_size=batch_size,
                         generator=generator, init_chunk=init_chunk)
    bn_data = fit[0] if batch_norms(loop.net) else None
    curved, line = on_grid(kind, w1, theta, w2, ts), straight(w1, w2, ts)
    out = {"theta": theta}
    ts = ts.to(fit[0].device)
    for split, task in (("train", train), ("test", test)):
        for name, points in (("curve", curved), ("line", line)):
            losses = path_losses(task, points, m, bn_data)
            out[f"{name}_{split}_loss"] = losses
            out[f"barrier_{name}_{split}"] = barrier(losses, ts)
    return out


CURVE_KEYS = ("curve", "curve_inits", "curve_steps", "curve_lr", "curve_points")  # the analysis keys of this part
RULE = ("barrier of a path sampled at the t grid: max over t of L(phi(t)) - ((1-t) L(phi(0)) + t L(phi(1))), the "
        "loss above the straight line between the two end losses (Garipov et al. 2018); >= 0")
BARRIERS = ("barrier_curve_train", "barrier_line_train", "barrier_curve_test", "barrier_line_test")


def summarize(result: dict[str, torch.Tensor], ts: torch.Tensor) -> dict:
    """landing_stats.json["curve"]'s numbers: each barrier's mean with its 95% t interval over the landings, the
    paired difference straight - curved (per split), and the mean loss along each path at the grid."""
    out = {"rule": RULE, "t": ts.tolist(), "barriers": {k: interval(result[k]) for k in BARRIERS}, "line_minus_curve": {}}
    for split in ("train", "test"):
        out["line_minus_curve"][split] = interval(result[f"barrier_line_{split}"] - result[f"barrier_curve_{split}"])
        for name in ("curve", "line"):
            out[f"{name}_{split}_loss"] = result[f"{name}_{split}_loss"].double().mean(dim=0).tolist()
    return out


def basin_summary(kind: str, landed: Params, analysis, s, generator: torch.Generator) -> tuple[dict, dict]:
    """The part of a landing analysis (`landing.LandingAnalysis` with settings `s`, a LandingConfig): curves of
    `kind` from the landings (stack) to its direct minimum, trained on its training split (its polish data, with
    the polish minibatch size and momentum), measured on its train subsample and test data. Returns (summary
    for landing_stats.json["curve"], per-landing tensors for landing_parts/curve.safetensors)."""
    ts = torch.linspace(0, 1, s.curve_points)
    direct = {k: v[0] for k, v in analysis.direct.items()}
    result = compare(analysis.loop, kind, landed, direct, analysis.train, analysis.test, analysis.polish_data, ts,
                     steps=s.curve_steps, lr=s.curve_lr, momentum=s.polish_momentum, batch_size=s.polish_batch_size,
                     generator=generator, init_chunk=s.init_chunk)
    summary = {"kind": kind, "landings": stack_len(landed), "steps": s.curve_steps, "lr": s.curve_lr,
               "momentum": s.polish_momentum, "batch_size": s.polish_batch_size,
               "batch_norm_recomputed": bool(batch_norms(analysis.loop.net)), **summarize(result, ts)}
    per_landing = {k: v.detach().cpu() for k, v in result.items() if k != "theta"}
    return summary, per_landing
