"""Expert trajectories for trajectory matching (distill.method=mtt): the architecture trained directly on the
real data with plain SGD (as the paper's experts), its weights after every epoch kept.

On disk (a reusable artifact, by default <run dir>/experts/): expert_XX.safetensors, each one tensor
"trajectory" [epochs + 1, D] (flat weights in the network's parameter order, epoch 0 the init), and
experts.json with the fingerprint of what they depend on (dataset, arch, init scheme, inner loss, the expert
settings) and the parameter names. A rerun, or another run with the same fingerprint pointed at the same
expert_dir, reuses them; a different fingerprint retrains them.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.func import grad

from .artifacts import read_tensors, write_tensors
from .config import MTTConfig
from .inner import InitSampler, InnerLoop
from .params import flatten, unstack
from .resume import finished, mark_finished

MARKER = "experts.json"


def train_expert(loop: InnerLoop, init: dict[str, torch.Tensor], x: torch.Tensor, targets: torch.Tensor,
                 epochs: int, batch_size: int, lr: float, seed: int) -> torch.Tensor:
    """[epochs + 1, D]: the flat weights at the start and after each epoch of minibatch SGD on (x, targets)."""
    g = torch.Generator().manual_seed(seed)
    params = dict(init)
    points = [flatten(params, loop.names)]
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            idx = idx.to(x.device)
            step = grad(loop._loss)(params, x[idx], targets[idx])
            params = {k: params[k] - lr * step[k] for k in loop.names}
        points.append(flatten(params, loop.names))
    return torch.stack(points)


def expert_trajectories(directory: Path, fp: str, loop: InnerLoop, sampler: InitSampler, x: torch.Tensor,
                        targets: torch.Tensor, m: MTTConfig, batch_size: int) -> torch.Tensor:
    """[experts, epochs + 1, D]: the trajectories kept in `directory` under fingerprint `fp`, or trained now
    (and kept) when there are none or they were made for something else."""
    directory = Path(directory)
    if finished(directory / MARKER, fp, on_mismatch="redo") is not None:
        return torch.stack([read_tensors(directory / f"expert_{i:02d}.safetensors")["trajectory"]
                            for i in range(m.experts)])
    out = []
    for i in range(m.experts):
        init = unstack(sampler.sample(1, seed=m.expert_seed + i, device=x.device), 0)
        with torch.no_grad():  # torch.func.grad differentiates inside; the SGD updates need no graph
            trajectory = train_expert(loop, init, x, targets, m.expert_train_epochs, batch_size, m.lr_teacher,
                                      m.expert_seed + i)
        write_tensors(directory / f"expert_{i:02d}.safetensors", {"trajectory": trajectory})
        out.append(trajectory.cpu())
    mark_finished(directory / MARKER, fp, param_names=loop.names, experts=m.experts, epochs=m.expert_train_epochs)
    return torch.stack(out)
