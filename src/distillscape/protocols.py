"""Evaluation protocols: how a distilled batch trains a model from each of many inits (distill.eval.protocol).

one_step: the batch's own inner steps and rates (what it was distilled for). k_steps: k full-batch gradient
steps. yang: Yang et al.'s (ICML 2024) 300 full-batch SGD steps with momentum 0.9 at rate 0.01. minibatch:
SGD with momentum on random subsets of the batch. Every protocol runs all inits at once (vmapped over the
init dimension, `chunk_size` at a time) without building a graph: no per-init Python loop, so where the device
has room to spare at 100 inits (a GPU), 1000 cost little more. On a CPU the work itself is the cost and grows
with the inits (bench/bench_eval_inits.py, digits mlp, 2 busy cores: one step 1000/100 = 8x, yang 7x; training
in smaller vmap chunks was slower, 65-137 s against 54 s for 1000 yang inits).
"""
from __future__ import annotations

import math

import torch
from torch.func import grad, vmap

from .config import EvalConfig
from .inner import InnerLoop
from .params import Params, stack_len


def momentum_sgd_stack(loop: InnerLoop, stack: Params, x: torch.Tensor, targets: torch.Tensor, rates: torch.Tensor,
                       momentum: float, steps: int, subsets: torch.Tensor | None = None,
                       chunk_size: int | None = None) -> Params:
    """`steps` of SGD with momentum (torch.optim.SGD's rule: v <- momentum v + g, p <- p - rate v; no dampening)
    on the inner loss of (x, targets), from every init of `stack`. rates: [G], one rate per parameter tensor
    (G = len(loop.names)) or G = 1. subsets: [M, steps, b] example indices of each init's step (None: the
    full batch every step)."""
    names = loop.names

    def rate(i: int) -> torch.Tensor:
        return rates[i if rates.shape[0] > 1 else 0]

    def train(params: Params, order: torch.Tensor | None) -> Params:
        velocity = {k: torch.zeros_like(v) for k, v in params.items()}
        for t in range(steps):
            xb, tb = (x, targets) if order is None else (x[order[t]], targets[order[t]])
            g = grad(loop._loss)(params, xb, tb)
            velocity = {k: momentum * velocity[k] + g[k] for k in names}
            params = {k: params[k] - rate(i) * velocity[k] for i, k in enumerate(names)}
        return params

    with torch.no_grad():  # torch.func.grad still differentiates inside; no graph is kept across steps
        return vmap(train, in_dims=(0, None if subsets is None else 0), chunk_size=chunk_size)(stack, subsets)


def random_subsets(n_models: int, steps: int, n: int, size: int, seed: int, device=None) -> torch.Tensor:
    """[n_models, steps, size] indices into a batch of n: each model's each step a random subset (without
    replacement within the step), drawn from `seed` on the CPU (the same on every device)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n_models, steps, n, generator=g).argsort(-1)[..., :size].to(device)


def protocol_steps(e: EvalConfig, n: int) -> int:
    """Gradient steps a protocol takes on a batch of n examples."""
    return {"one_step": 0, "k_steps": e.k, "yang": e.yang_steps,
            "minibatch": e.minibatch_epochs * math.ceil(n / min(e.minibatch_size, n))}[e.protocol]


def train_with_protocol(loop: InnerLoop, inits: Params, images: torch.Tensor, labels: torch.Tensor, lrs: torch.Tensor,
                        e: EvalConfig, seed: int = 0, chunk_size: int | None = None) -> Params:
    """The models (detached) that protocol `e` trains from every init of `inits` on the batch (images, labels:
    the inner loss's targets, lrs: its learned or tuned rates [steps, G]). seed: the minibatch order."""
    if e.protocol == "one_step":
        with torch.enable_grad():
            landed = loop.run_stack(inits, images, labels, lrs, chunk_size=chunk_size)
        return {k: v.detach() for k, v in landed.items()}
    n = images.shape[0]
    if e.protocol == "k_steps":
        rates = torch.full((1,), e.k_lr, device=lrs.device) if e.k_lr else lrs.sum(0) / e.k
        return momentum_sgd_stack(loop, inits, images, labels, rates, 0.0, e.k, chunk_size=chunk_size)
    if e.protocol == "yang":
        return momentum_sgd_stack(loop, inits, images, labels, torch.full((1,), e.yang_lr, device=images.device),
                                  e.yang_momentum, e.yang_steps, chunk_size=chunk_size)
    steps = protocol_steps(e, n)
    subsets = random_subsets(stack_len(inits), steps, n, min(e.minibatch_size, n), seed, images.device)
    return momentum_sgd_stack(loop, inits, images, labels, torch.full((1,), e.minibatch_lr, device=images.device),
                              e.minibatch_momentum, steps, subsets, chunk_size)
