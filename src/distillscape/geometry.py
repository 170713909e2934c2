"""Geometry of parameter space: pure functions over flat parameter vectors (no plotting, no I/O).

A model's parameters are a dict name -> tensor (`Params`, as in `inner`); `flatten` / `unflatten`
turn them into one vector and back, in `names` order.
"""
from __future__ import annotations

import torch

from .inner import Params


def flatten(params: Params, names: list[str] | None = None) -> torch.Tensor:
    """One flat vector of all parameters, in `names` order (default: the dict's order)."""
    names = list(params) if names is None else names
    return torch.cat([params[k].reshape(-1) for k in names])


def unflatten(vec: torch.Tensor, like: Params) -> Params:
    """Inverse of `flatten`: views of `vec` shaped like `like` (same key order)."""
    out, i = {}, 0
    for k, v in like.items():
        n = v.numel()
        out[k] = vec[i:i + n].view_as(v)
        i += n
    if i != vec.numel():
        raise ValueError(f"vector has {vec.numel()} entries, the parameters {i}")
    return out


def unflatten_stack(vecs: torch.Tensor, like: Params) -> Params:
    """Rows of `vecs` [M, D] as a parameter stack (leading dim M) shaped like `like`."""
    out, i = {}, 0
    for k, v in like.items():
        n = v.numel()
        out[k] = vecs[:, i:i + n].reshape(vecs.shape[0], *v.shape)
        i += n
    return out
