"""Parameters as data: the one home of the dict-of-tensors helpers every layer above uses.

A model's parameters travel as `Params`, a dict name -> tensor (what `torch.func.functional_call`
takes). A *stack* is a Params whose tensors carry a leading model dimension M (M inits, M landings, M
grid points); `torch.func.vmap` maps one model's computation over it. A *flat* vector is all tensors of
one model concatenated in a fixed name order; a flat stack is a matrix [M, D].
"""
from __future__ import annotations

import torch

Params = dict[str, torch.Tensor]


# -- one model -----------------------------------------------------------------------------------------
def flatten(params: Params, names: list[str] | None = None) -> torch.Tensor:
    """One flat vector of all parameters, in `names` order (default: the dict's order)."""
    names = list(params) if names is None else names
    return torch.cat([params[k].reshape(-1) for k in names])


def unflatten(vec: torch.Tensor, like: Params) -> Params:
    """Inverse of `flatten`: views of `vec` shaped like `like` (same key order)."""
    total = sum(v.numel() for v in like.values())
    if total != vec.numel():
        raise ValueError(f"vector has {vec.numel()} entries, the parameters {total}")
    out, i = {}, 0
    for k, v in like.items():
        n = v.numel()
        out[k] = vec[i:i + n].view(v.shape)
        i += n
    return out


def interpolate(a: Params, b: Params, alpha: float) -> Params:
    """The point (1 - alpha) a + alpha b of the straight line from a to b (stacks or single models)."""
    return {k: torch.lerp(a[k], b[k], alpha) for k in a}


def detached(params: Params) -> Params:
    return {k: v.detach() for k, v in params.items()}


# -- stacks ------------------------------------------------------------------------------------------
def stack_len(stack: Params) -> int:
    """M, the number of models of a stack."""
    return next(iter(stack.values())).shape[0]


def unstack(stack: Params, i: int) -> Params:
    """Model i of a stack."""
    return {k: v[i] for k, v in stack.items()}


def head(stack: Params, n: int) -> Params:
    """The first n models of a stack."""
    return {k: v[:n] for k, v in stack.items()}


def as_stack_of_one(params: Params) -> Params:
    return {k: v.unsqueeze(0) for k, v in params.items()}


def flat_stack(stack: Params, names: list[str] | None = None) -> torch.Tensor:
    """A stack as one matrix [M, D], in `names` order (default: the dict's order)."""
    names = list(stack) if names is None else names
    return torch.cat([stack[k].reshape(stack[k].shape[0], -1) for k in names], dim=1)


def unflatten_stack(vecs: torch.Tensor, like: Params) -> Params:
    """Rows of `vecs` [M, D] as a stack shaped like the single model `like` (its key order)."""
    out, i = {}, 0
    for k, v in like.items():
        n = v.numel()
        out[k] = vecs[:, i:i + n].reshape(vecs.shape[0], *v.shape)
        i += n
    return out


def as_stack(vecs: torch.Tensor, like: Params, names: list[str]) -> Params:
    """Rows of `vecs` [M, D] as a stack shaped like the models of the stack `like`, in `names` order."""
    return unflatten_stack(vecs, {k: like[k][0] for k in names})
