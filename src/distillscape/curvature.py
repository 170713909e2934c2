"""Is a point a minimum? A curvature certificate of the true task's Hessian, for stacks of points at once.

For each point of a stack (inits, landings, the direct minimum) on a loss L given as an `Objective`:
the true task's (a `TrueTask`: mean cross-entropy over the training split, processed in chunks), or any
smooth loss of one point's parameters (`FunctionObjective`, e.g. an RL run's PPO loss on fixed experience):

- Lanczos with full reorthogonalisation on the Hessian H, batched: every Hessian-vector product is one
  vmapped forward-over-reverse pass over all points (`TrueTask.hvp`), each with its own Krylov vector.
  The top-k and bottom-k Ritz values with their residuals r = ||H v - theta v|| (v the unit Ritz vector,
  H v computed explicitly, not the Lanczos bound).
- Significant negative curvature. For a symmetric H, every Ritz pair (theta, v) with residual r has an
  eigenvalue of H in [theta - r, theta + r]. A bottom Ritz value counts as a significantly negative
  eigenvalue when theta < -(r + negative_tol * lambda_max): it certifies an eigenvalue below
  -negative_tol * lambda_max, i.e. negative curvature that is not a numerically flat direction (the
  network's symmetries, float32 round-off, a Ritz value not yet converged). `negative_count` is the
  number of such Ritz values among the bottom k (so at most k).
- The verdict: "not_stationary" when ||grad L|| > grad_tol; otherwise "saddle" when negative_count > 0,
  else "minimum" (a point whose gradient is small and that shows no significant negative curvature).
  Over n points: k of n in each class with a Wilson 95% interval.
- The spectral density by stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; PyHessian's
  `density`): `starts` Lanczos runs from random unit vectors, each giving quadrature nodes (the Ritz
  values) and weights (squared first components of T's eigenvectors); the density is their
  Gaussian-smoothed mixture (`smoothed_density`), and D * sum(weights * nodes) estimates the trace.
- The trace per parameter tensor (Hutchinson: Rademacher z, the block sums of z * H z).
"""
from __future__ import annotations

import math
from typing import Callable, Protocol

import torch
from torch.func import grad, jvp, vmap

from .params import Params, as_stack, flat_stack, stack_len
from .stats import describe

HVP = Callable[[torch.Tensor], torch.Tensor]  # flat [M, D] -> flat [M, D]
VERDICTS = ("minimum", "saddle", "not_stationary")
# below this fraction of the largest |entry| of T so far, a Lanczos residual norm is a breakdown (an
# invariant subspace found, e.g. every direction of a tiny network): the next vector is drawn afresh
BREAKDOWN = 1e-5


# -- the loss being certified ----------------------------------------------------------------------------
class Objective(Protocol):
    """A loss of a point's parameters, for stacks of points: `names` (the parameter order of the flat
    vectors), its gradient and its Hessian-vector products per point. `TrueTask` is one."""
    names: list[str]

    def grad(self, stack: Params) -> Params: ...

    def hvp(self, stack: Params, vecs: Params) -> Params: ...


class FunctionObjective:
    """An `Objective` from a scalar loss of ONE point's parameters (`loss_one(params) -> 0-dim tensor`,
    written with torch.func-compatible ops): vmapped over the stack (`chunk` points at a time, None: all),
    gradient by reverse mode, Hessian-vector products forward-over-reverse (jvp of grad), as `TrueTask`.
    Some backward formulas cannot take a forward tangent: F.mse_loss's writes into an immutable zero tangent
    ("ZeroTensors are immutable"). On that error the object switches, for good, to reverse-over-reverse
    (the gradient of <grad L, v>): the same products, one more reverse pass instead of a forward one.
    `reverse_over_reverse=True` chooses it from the start."""

    def __init__(self, names: list[str], loss_one: Callable[[Params], torch.Tensor], chunk: int | None = None,
                 reverse_over_reverse: bool = False):
        self.names, self.loss_one, self.chunk = list(names), loss_one, chunk
        self.reverse_over_reverse = reverse_over_reverse

    def grad(self, stack: Params) -> Params:
        return vmap(grad(self.loss_one), chunk_size=self.chunk)(stack)

    def hvp(self, stack: Params, vecs: Params) -> Params:
        if not self.reverse_over_reverse:
            try:
                return vmap(self._forward_over_reverse, chunk_size=self.chunk)(stack, vecs)
            except RuntimeError as e:
                if "ZeroTensors are immutable" not in str(e):
                    raise
                self.reverse_over_reverse = True
        return vmap(self._reverse_over_reverse, chunk_size=self.chunk)(stack, vecs)

    def _forward_over_reverse(self, params: Params, v: Params) -> Params:
        return jvp(grad(self.loss_one), (params,), (v,))[1]

    def _reverse_over_reverse(self, params: Params, v: Params) -> Params:
        return grad(lambda p: sum((g * v[k]).sum() for k, g in grad(self.loss_one)(p).items()))(params)


# -- Hessian-vector products of stacks ------------------------------------------------------------------
def stack_hvp(task: Objective, stack: Params) -> HVP:
    """v [M, D] -> H_m v_m for every point m of the stack (flat, in the task's parameter order)."""
    names = task.names
    stack = {k: stack[k] for k in names}
    return lambda v: flat_stack(task.hvp(stack, as_stack(v, stack, names)), names)


def tiled(stack: Params, times: int) -> Params:
    """Every point repeated `times` times, point-major (row m * times + t is copy t of point m)."""
    return {k: v.repeat_interleave(times, dim=0) for k, v in stack.items()}


# -- how many points one pass holds -----------------------------------------------------------------------
# A Hessian-vector product (vmapped over points) holds about this many times one forward's activations:
# measured, 22 GB at the peak for 65 simple_convnet points on 1000-example chunks of digits.
HVP_ACTIVATIONS = 14
HVP_PASS_BYTES = 2 * 2**30  # what one vmapped pass of Hessian-vector products may hold, by rule


def points_per_pass(examples: int, acts: int) -> int:
    """Points per vmapped Hessian-vector product that keep one pass near HVP_PASS_BYTES: a fixed rule of the
    examples per forward and the net's activations per example (models.activations_per_example), never a
    timing. The certificate and the early-training curvature both take their passes by it."""
    return max(1, HVP_PASS_BYTES // (HVP_ACTIVATIONS * examples * acts * 4))


# -- Lanczos ---------------------------------------------------------------------------------------------
def lanczos(hvp: HVP, start: torch.Tensor, steps: int,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`steps` Lanczos iterations with full reorthogonalisation for M symmetric operators at once, from
    the rows of `start` [M, D]: (T [M, s, s] float64, the tridiagonal matrices; Q [M, s, D], the
    orthonormal Krylov bases), s = min(steps, D). Each new vector is orthogonalised against the whole
    basis twice ("twice is enough", Parlett), which keeps Ritz values free of ghost copies. On a
    breakdown (residual norm ~ 0) that row continues from a fresh random vector with beta = 0."""
    m, d = start.shape
    s = min(steps, d)
    q = start / start.norm(dim=1, keepdim=True)
    basis = start.new_zeros(m, s, d)
    alpha = torch.zeros(m, s, dtype=torch.float64, device=start.device)
    beta = torch.zeros(m, max(s - 1, 0), dtype=torch.float64, device=start.device)
    for j in range(s):
        basis[:, j] = q
        w = hvp(q)
        alpha[:, j] = (q * w).sum(dim=1).double()
        done = basis[:, : j + 1]
        for _ in range(2):
            w = w - torch.einsum("msd,ms->md", done, torch.einsum("msd,md->ms", done, w))
        if j == s - 1:
            break
        b = w.norm(dim=1)
        scale = torch.cat([alpha[:, : j + 1], beta[:, :j]], dim=1).abs().amax(dim=1)
        lost = b.double() <= BREAKDOWN * scale.clamp_min(1e-30)
        if lost.any():
            fresh = torch.randn(int(lost.sum()), d, generator=generator, dtype=torch.float64).to(start)
            for _ in range(2):
                part = done[lost]
                fresh = fresh - torch.einsum("msd,ms->md", part, torch.einsum("msd,md->ms", part, fresh))
            w = w.clone()
            w[lost] = fresh / fresh.norm(dim=1, keepdim=True)
            b = torch.where(lost, torch.ones_like(b), b)
        beta[:, j] = torch.where(lost, 0.0, b.double())
        q = w / b[:, None]
    t = torch.diag_embed(alpha) + torch.diag_embed(beta, 1) + torch.diag_embed(beta, -1)
    return t, basis


def random_unit(shape: tuple[int, int], generator: torch.Generator | None = None, like=None) -> torch.Tensor:
    """Random unit rows [M, D] (Gaussian, normalised), on `like`'s device and dtype: every random vector
    here is drawn on the CPU from `generator`, so results do not depend on the device."""
    v = torch.randn(shape, generator=generator, dtype=torch.float64).to(like if like is not None else torch.float32)
    return v / v.norm(dim=1, keepdim=True)


def extreme_eigenpairs(hvp: HVP, shape: tuple[int, int], steps: int, k: int,
                       generator: torch.Generator | None = None, like=None,
                       residual_hvp: Callable[[int], HVP] | None = None) -> dict[str, torch.Tensor]:
    """The top-k and bottom-k Ritz pairs of M operators from one Lanczos run each, with explicit
    residuals ||H v - theta v||: {"top", "top_residual", "bottom", "bottom_residual"} [M, k'] (top
    descending, bottom ascending; k' = min(k, s)), "top_vectors", "bottom_vectors" [M, k', D].
    residual_hvp(times): the operator on every point repeated `times` times point-major (`tiled`),
    so that the 2k' Ritz vectors of all points go through one batched product; default: `hvp` itself
    applied to each Ritz vector in turn."""
    m, d = shape
    t, basis = lanczos(hvp, random_unit(shape, generator, like), steps, generator)
    theta, y = torch.linalg.eigh(t)  # ascending
    s = theta.shape[1]
    kk = min(k, s)
    pick = torch.cat([torch.arange(s - 1, s - 1 - kk, -1), torch.arange(kk)])  # top descending, then bottom
    vecs = torch.einsum("msd,msk->mkd", basis, y[:, :, pick].to(basis.dtype))
    vecs = vecs / vecs.norm(dim=2, keepdim=True)
    if residual_hvp is not None:
        hv = residual_hvp(2 * kk)(vecs.reshape(m * 2 * kk, d)).reshape(m, 2 * kk, d)
    else:
        hv = torch.stack([hvp(vecs[:, i]) for i in range(2 * kk)], dim=1)
    values = theta[:, pick]
    res = (hv.double() - values[:, :, None] * vecs.double()).norm(dim=2)
    return {"top": values[:, :kk], "top_residual": res[:, :kk], "bottom": values[:, kk:],
            "bottom_residual": res[:, kk:], "top_vectors": vecs[:, :kk], "bottom_vectors": vecs[:, kk:]}


def negative_count(bottom: torch.Tensor, residual: torch.Tensor, lambda_max: torch.Tensor,
                   negative_tol: float) -> torch.Tensor:
    """How many bottom Ritz values certify an eigenvalue below -negative_tol * lambda_max (module doc):
    theta < -(r + negative_tol * |lambda_max|). [M, k] -> [M]."""
    bound = residual + negative_tol * lambda_max.abs()[:, None]
    return (bottom < -bound).sum(dim=1)


def verdicts(grad_norm: torch.Tensor, negatives: torch.Tensor, grad_tol: float) -> list[str]:
    """not_stationary (||grad|| > grad_tol), else saddle (a significant negative eigenvalue), else minimum."""
    return ["not_stationary" if g > grad_tol else "saddle" if c > 0 else "minimum"
            for g, c in zip(grad_norm.tolist(), negatives.tolist())]


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n (95% for the default z); (nan, nan) for n = 0."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def verdict_counts(labels: list[str]) -> dict[str, dict]:
    """For each verdict: {"k", "n", "fraction", "low", "high"} (Wilson 95% interval of the fraction)."""
    n = len(labels)
    out = {}
    for v in VERDICTS:
        k = labels.count(v)
        low, high = wilson(k, n)
        out[v] = {"k": k, "n": n, "fraction": k / n if n else math.nan, "low": low, "high": high}
    return out


# -- spectral density and trace --------------------------------------------------------------------------
def slq(hvp: HVP, shape: tuple[int, int], steps: int, starts: int,
        generator: torch.Generator | None = None, like=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stochastic Lanczos quadrature for M operators: `hvp` must act on the M points repeated `starts`
    times point-major (`tiled`), shape [M * starts, D]. Returns nodes and weights [M, starts, s]
    (each start's weights sum to 1: the quadrature of the spectral measure (1/D) sum_i delta(lambda_i))."""
    m, d = shape
    t, _ = lanczos(hvp, random_unit((m * starts, d), generator, like), steps, generator)
    nodes, y = torch.linalg.eigh(t)
    weights = y[:, 0, :] ** 2
    return nodes.reshape(m, starts, -1), weights.reshape(m, starts, -1)


def slq_trace(nodes: torch.Tensor, weights: torch.Tensor, dim: int) -> torch.Tensor:
    """The trace from the quadrature: D * sum(weights * nodes), averaged over the starts. [M]."""
    return dim * (weights * nodes).sum(dim=2).mean(dim=1)


def smoothed_density(nodes: torch.Tensor, weights: torch.Tensor, grid: torch.Tensor, sigma: float) -> torch.Tensor:
    """The Gaussian-smoothed spectral density on `grid` [G] from nodes and weights [..., starts, s]:
    the mean over starts of sum_i w_i N(x; theta_i, sigma^2); [..., G], integrating to ~1."""
    z = (grid.double() - nodes.double()[..., None]) / sigma
    gauss = torch.exp(-0.5 * z * z) / (sigma * math.sqrt(2 * math.pi))
    return (weights.double()[..., None] * gauss).sum(dim=-2).mean(dim=-2)


def block_traces(hvp: HVP, shape: tuple[int, int], sizes: list[int], probes: int,
                 generator: torch.Generator | None = None, like=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Hutchinson's estimate of the trace of each diagonal block of M operators (the blocks: consecutive
    coordinates of the given sizes, e.g. one per parameter tensor): z Rademacher, block sums of z * Hz.
    `hvp` acts on the M points repeated `probes` times point-major. (mean [M, B], standard error [M, B])."""
    m, d = shape
    z = (torch.randint(0, 2, (m * probes, d), generator=generator) * 2 - 1).to(like if like is not None else torch.float32)
    forms = (z * hvp(z)).reshape(m, probes, d)
    per_block = torch.stack([part.sum(dim=2) for part in forms.split(sizes, dim=2)], dim=2)  # [M, probes, B]
    se = per_block.std(dim=1) / math.sqrt(probes) if probes > 1 else torch.full_like(per_block[:, 0], math.nan)
    return per_block.mean(dim=1), se


# -- the certificate -------------------------------------------------------------------------------------
def certify(task: Objective, stack: Params, *, k: int, lanczos_steps: int, slq_starts: int, slq_steps: int,
            probes: int, grad_tol: float, negative_tol: float, generator: torch.Generator) -> dict[str, object]:
    """The certificate of every point of a stack on `task` (module doc): tensors per point and the
    verdicts. Keys: grad_norm [M], top / top_residual / bottom / bottom_residual [M, k], lambda_max,
    lambda_min, abs_ratio (|lambda_min| / lambda_max), negative_count [M], slq_nodes / slq_weights
    [M, starts, s], trace_slq [M], layer_trace / layer_trace_se [M, tensors]; verdict: list[str]."""
    names = task.names
    stack = {n: stack[n] for n in names}
    m = stack_len(stack)
    sizes = [stack[n][0].numel() for n in names]
    shape = (m, sum(sizes))
    like = stack[names[0]]  # the random vectors take the points' device and dtype
    grad_norm = flat_stack(task.grad(stack), names).norm(dim=1).double()

    def on_tiles(times: int) -> HVP:
        return stack_hvp(task, tiled(stack, times))

    eig = extreme_eigenpairs(stack_hvp(task, stack), shape, lanczos_steps, k, generator, like, on_tiles)
    lam_max, lam_min = eig["top"][:, 0], eig["bottom"][:, 0]
    negatives = negative_count(eig["bottom"], eig["bottom_residual"], lam_max, negative_tol)
    nodes, weights = slq(on_tiles(slq_starts), shape, slq_steps, slq_starts, generator, like)
    layer, layer_se = block_traces(on_tiles(probes), shape, sizes, probes, generator, like)
    return {"grad_norm": grad_norm, **{key: eig[key] for key in ("top", "top_residual", "bottom", "bottom_residual")},
            "lambda_max": lam_max, "lambda_min": lam_min,
            "abs_ratio": lam_min.abs() / lam_max.abs().clamp_min(1e-30), "negative_count": negatives,
            "slq_nodes": nodes, "slq_weights": weights, "trace_slq": slq_trace(nodes, weights, shape[1]),
            "layer_trace": layer.double(), "layer_trace_se": layer_se.double(),
            "verdict": verdicts(grad_norm, negatives, grad_tol)}


# -- certificate.json ------------------------------------------------------------------------------------
RULE = ("verdict per point: not_stationary if ||grad L|| > grad_tol; else saddle if some bottom Ritz value theta "
        "(residual r = ||H v - theta v||, v its unit Ritz vector) has theta < -(r + negative_tol * lambda_max), which "
        "certifies an eigenvalue of H below -negative_tol * lambda_max; else minimum. k of n with Wilson 95% intervals.")
PER_POINT = ("grad_norm", "lambda_max", "lambda_min", "abs_ratio", "negative_count", "trace_slq")


def point_records(cert: dict, names: list[str]) -> list[dict]:
    """One JSON record per point of a `certify` result."""
    out = []
    for i, verdict in enumerate(cert["verdict"]):
        rec = {"verdict": verdict, **{k: float(cert[k][i]) for k in PER_POINT}}
        rec["negative_count"] = int(rec["negative_count"])
        for k in ("top", "top_residual", "bottom", "bottom_residual"):
            rec[k] = cert[k][i].tolist()
        rec["layer_trace"] = dict(zip(names, cert["layer_trace"][i].tolist()))
        rec["layer_trace_se"] = dict(zip(names, cert["layer_trace_se"][i].tolist()))
        rec["slq_nodes"], rec["slq_weights"] = cert["slq_nodes"][i].tolist(), cert["slq_weights"][i].tolist()
        out.append(rec)
    return out


def paired_difference(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Mean of a - b over paired points with its 95% t interval ({"mean", "low", "high", "n"}; nan when n < 2)."""
    from scipy.stats import t as student_t

    d = (a.double() - b.double())
    d = d[torch.isfinite(d)]
    n = d.numel()
    if n < 2:
        return {"mean": d.mean().item() if n else math.nan, "low": math.nan, "high": math.nan, "n": n}
    half = student_t.ppf(0.975, n - 1) * d.std().item() / math.sqrt(n)
    return {"mean": d.mean().item(), "low": d.mean().item() - half, "high": d.mean().item() + half, "n": n}


def certificate_summary(certs: dict[str, dict], names: list[str], settings: dict) -> dict:
    """certificate.json: per group (init, landing, direct_minimum) the points' records, the verdict counts
    with their intervals and the mean of the per-point statistics; paired landing - init differences."""
    groups = {}
    for group, cert in certs.items():
        n, k = len(cert["verdict"]), int((cert["negative_count"] > 0).sum())
        low, high = wilson(k, n)
        groups[group] = {"points": point_records(cert, names), "counts": verdict_counts(cert["verdict"]),
                         # whatever the gradient: points where the Hessian certifies negative curvature
                         "negative_curvature": {"k": k, "n": n, "low": low, "high": high},
                         "stats": {k: describe(cert[k]) for k in PER_POINT}}
    out = {"rule": RULE, "settings": settings, "groups": groups}
    if "init" in certs and "landing" in certs:
        out["landing_minus_init"] = {k: paired_difference(certs["landing"][k], certs["init"][k])
                                     for k in ("lambda_max", "lambda_min", "abs_ratio", "grad_norm", "trace_slq")}
    return out


def density_curves(summary: dict, sigma_fraction: float, points: int = 600) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The smoothed spectral density of every group of a certificate summary on one grid (its points'
    mean density), sigma = sigma_fraction of the range of all nodes."""
    nodes = {g: torch.tensor([p["slq_nodes"] for p in d["points"]], dtype=torch.float64)
             for g, d in summary["groups"].items()}
    weights = {g: torch.tensor([p["slq_weights"] for p in d["points"]], dtype=torch.float64)
               for g, d in summary["groups"].items()}
    lo = min(v.min().item() for v in nodes.values())
    hi = max(v.max().item() for v in nodes.values())
    sigma = sigma_fraction * max(hi - lo, 1e-12)
    grid = torch.linspace(lo - 5 * sigma, hi + 5 * sigma, points, dtype=torch.float64)
    return grid, {g: smoothed_density(nodes[g], weights[g], grid, sigma).mean(dim=0) for g in nodes}


# -- Hessian directions of a plane -----------------------------------------------------------------------
HESSIAN_PAIRS = {"top_bottom": (("top", 0), ("bottom", 0)), "top2": (("top", 0), ("top", 1)),
                 "bottom2": (("bottom", 0), ("bottom", 1))}


def hessian_directions(task: Objective, point: Params, pair: str, steps: int,
                       generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Two unit eigenvectors of the true task's Hessian at one point (Ritz vectors of one Lanczos run):
    pair "top_bottom" (largest and smallest eigenvalue; a saddle shows as a plane curving down along the
    second), "top2" (the two largest) or "bottom2" (the two smallest). Returns {"directions" [2, D] flat
    in the task's parameter order, "eigenvalues" [2], "residuals" [2]}. The sign of an eigenvector is
    arbitrary: each is turned so that its largest-magnitude entry is positive, so the plane is the same
    from run to run."""
    if pair not in HESSIAN_PAIRS:
        raise ValueError(f"pair={pair!r}; allowed: {', '.join(HESSIAN_PAIRS)}")
    names = task.names
    stack = {n: point[n].unsqueeze(0) for n in names}
    d = sum(v[0].numel() for v in stack.values())
    eig = extreme_eigenpairs(stack_hvp(task, stack), (1, d), steps, 2, generator, stack[names[0]])
    if eig["top"].shape[1] < 2:
        raise ValueError(f"{steps} Lanczos steps give fewer than 2 Ritz pairs; use at least 4")
    vecs = torch.stack([eig[f"{end}_vectors"][0, i] for end, i in HESSIAN_PAIRS[pair]])
    signs = torch.sign(vecs.gather(1, vecs.abs().argmax(dim=1, keepdim=True)))
    return {"directions": vecs * signs,
            "eigenvalues": torch.stack([eig[end][0, i] for end, i in HESSIAN_PAIRS[pair]]),
            "residuals": torch.stack([eig[f"{end}_residual"][0, i] for end, i in HESSIAN_PAIRS[pair]])}
