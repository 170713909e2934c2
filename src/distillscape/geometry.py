"""Geometry of parameter space: pure functions over flat parameter vectors (no plotting, no I/O).

A model's parameters are a dict name -> tensor (`params.Params`); `params.flatten` / `unflatten`
turn them into one vector and back, in `names` order. Directions are flat vectors of the same length;
a surface point with coordinates (a, b) is `centre + a * directions[0] + b * directions[1]`.
"""
from __future__ import annotations

import torch
from torch import nn

from .params import Params, flatten, unflatten, unflatten_stack  # noqa: F401  (the vector form of a point)

BUFFER_MODES = ("freeze", "sweep")   # running statistics: kept at the centre's values, or moved with the weights
ONE_D_MODES = ("zero", "keep")       # biases / norm parameters in a random direction: zeroed, or filter-normalized
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


# -- which tensors of a network make up "the point" ------------------------------------------------
def swept_state(net: nn.Module, buffers: str = "freeze") -> tuple[Params, Params]:
    """(swept, frozen): the tensors a surface moves, and those it holds at the network's values.

    Parameters are always swept. Floating-point buffers (batch-norm running mean / var) are swept
    with the weights when buffers="sweep", else frozen; integer buffers (num_batches_tracked) are
    always frozen. None of this project's models has buffers today, but a BatchNorm one would.
    """
    if buffers not in BUFFER_MODES:
        raise ValueError(f"buffers={buffers!r}; allowed: {', '.join(BUFFER_MODES)}")
    swept = {k: p.detach() for k, p in net.named_parameters()}
    frozen = {}
    for k, b in net.named_buffers():
        (swept if buffers == "sweep" and b.is_floating_point() else frozen)[k] = b.detach()
    return swept, frozen


def norm_tensor_names(net: nn.Module) -> set[str]:
    """Names of the parameters and buffers that belong to normalization layers."""
    names = set()
    for prefix, m in net.named_modules():
        if isinstance(m, NORM_LAYERS):
            names |= {f"{prefix}.{k}" if prefix else k for k, _ in
                      [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]}
    return names


# -- directions -------------------------------------------------------------------------------------
def filter_normalized(direction: Params, centre: Params, norm_names: set[str] = frozenset(),
                      bias: str = "zero", norm: str = "zero", eps: float = 1e-10) -> Params:
    """Li et al. (2018) filter normalization of `direction` at `centre`.

    Every filter (slice along dim 0: a conv output channel, a linear layer's neuron row) is rescaled
    to the norm of the same filter of the centre, so that a step of 1 is as large, filter by filter,
    as the weights it perturbs. One-dimensional tensors are biases or normalization parameters
    (`norm_names`): "zero" removes them from the direction (Li et al.'s choice), "keep" normalizes
    them element by element like filters of size one (the reference study's choice).
    """
    for name, mode in (("bias", bias), ("norm", norm)):
        if mode not in ONE_D_MODES:
            raise ValueError(f"{name}={mode!r}; allowed: {', '.join(ONE_D_MODES)}")
    out = {}
    for k, d in direction.items():
        c = centre[k]
        mode = norm if k in norm_names else bias if d.dim() <= 1 else "keep"
        if mode == "zero":
            out[k] = torch.zeros_like(d)
            continue
        n = d.shape[0] if d.dim() else 1
        rows_d, rows_c = d.reshape(n, -1), c.reshape(n, -1)
        scale = rows_c.norm(dim=1, keepdim=True) / (rows_d.norm(dim=1, keepdim=True) + eps)
        out[k] = (rows_d * scale).reshape(d.shape)
    return out


def random_direction(centre: Params, generator: torch.Generator, norm_names: set[str] = frozenset(),
                     bias: str = "zero", norm: str = "zero") -> Params:
    """A Gaussian direction, filter-normalized at `centre` (drawn on the CPU from `generator`, so it
    is the same on every machine and in every shard)."""
    raw = {k: torch.randn(v.shape, generator=generator, dtype=v.dtype).to(v.device) for k, v in centre.items()}
    return filter_normalized(raw, centre, norm_names, bias, norm)


def plane_through(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The plane through three flat points: origin a, orthonormal basis [2, D] (Gram-Schmidt of
    b - a and c - a, computed in float64), and the exact 2-D coordinates [3, 2] of a, b and c."""
    a64, b64, c64 = a.double(), b.double(), c.double()
    u = b64 - a64
    if u.norm() == 0:
        raise ValueError("the first two points coincide; no plane runs through them")
    u = u / u.norm()
    w = c64 - a64
    v = w - (w @ u) * u
    if v.norm() <= 100 * torch.finfo(a.dtype).eps * w.norm():  # c - a along b - a, up to a's rounding
        raise ValueError("the three points are collinear; no unique plane runs through them")
    v = v / v.norm()
    basis = torch.stack([u, v])
    coords = torch.stack([a64, b64, c64]).sub(a64) @ basis.T
    return basis.to(a.dtype), coords.to(a.dtype)


def reference_plane(centre: torch.Tensor, other: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
    """The reference study's plane: delta = other - centre, unnormalised, so (1, 0) is `other`
    exactly; eta is a (filter-normalized) random direction. Returns the directions [2, D]."""
    return torch.stack([other - centre, eta])


def line_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The line through a (alpha = 0) and b (alpha = 1); alpha outside [0, 1] extends beyond both ends."""
    return (b - a).unsqueeze(0)


# -- grids and points -------------------------------------------------------------------------------
def grid_coordinates(axes: list[torch.Tensor]) -> torch.Tensor:
    """All points of the grid spanned by 1-D `axes` as rows [N, k], first axis slowest ('ij')."""
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(axes))


def points(centre: torch.Tensor, directions: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """centre + coords @ directions: flat parameter vectors [N, D] of grid points [N, k].

    Summed elementwise, direction by direction, not as a matmul: a point's parameters are then
    bit-identical whichever chunk or shard it is computed in (BLAS blocking depends on N)."""
    coords = coords.to(directions.dtype)
    out = centre.unsqueeze(0).expand(len(coords), -1)
    for k in range(directions.shape[0]):
        out = out + coords[:, k:k + 1] * directions[k]
    return out


def project(point: torch.Tensor, centre: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Least-squares coordinates of `point` in the span of `directions` around `centre`, and its
    distance from that plane relative to |point - centre| (0: the point lies in the plane)."""
    d = directions.double()
    offset = (point - centre).double()
    coords = torch.linalg.lstsq(d.T, offset.unsqueeze(1)).solution.squeeze(1)
    residual = (offset - coords @ d).norm() / offset.norm().clamp_min(1e-30)
    return coords.to(point.dtype), float(residual)


def pca_directions(trajectory: torch.Tensor, k: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """The first k principal directions of a trajectory of flat points [T, D] (rows centred on their
    mean; the right singular vectors of that matrix, computed in float64) and the fraction of the
    trajectory's variance each explains [k]. Each direction's sign is set so that the trajectory's last
    point lies on its positive side of the mean (the plane then points the way training went); a
    direction along which the last point sits at the mean keeps its largest-magnitude entry positive."""
    if trajectory.shape[0] < k + 1:
        raise ValueError(f"a trajectory of {trajectory.shape[0]} points spans fewer than {k} directions; "
                         f"give at least {k + 1} points")
    centred = trajectory.double() - trajectory.double().mean(dim=0)
    _, sv, vh = torch.linalg.svd(centred, full_matrices=False)
    dirs = vh[:k]
    along = centred[-1] @ dirs.T
    fallback = torch.sign(dirs.gather(1, dirs.abs().argmax(dim=1, keepdim=True)).squeeze(1))
    signs = torch.where(along.abs() > 1e-12 * centred.norm(), torch.sign(along), fallback)
    explained = sv[:k] ** 2 / (sv ** 2).sum().clamp_min(1e-300)
    return (dirs * signs[:, None]).to(trajectory.dtype), explained
