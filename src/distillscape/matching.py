"""Distillers other than the bilevel loop (distill.method): distribution matching (dm), gradient matching
(gm) and trajectory matching (mtt), and a batch imported from elsewhere (import).

Each is a `DistillModule` whose outer step optimizes another objective: it keeps the meta method's held-out
evaluation, checkpoints (ckpt_path=last resumes it) and artifact, so every analysis opens its runs through
`run.Run` unchanged. Their labels stay one-hot, as in their papers. None of these objectives learns the
rate of one step on the batch; that rate is tuned on validation inits from distill.eval.lr_grid before
every evaluation (`RateTuned`), as the random-real baseline's is (baseline.py).

The losses are plain functions of the synthetic images (and, for mtt, the student rate), so the tests can
check them and their gradients against hand computations and finite differences.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad

from .config import DistillConfig, as_settings
from .distill import DistillModule, label_targets
from .inner import InnerLoop, evaluate_stack
from .params import Params, flatten, unflatten, unstack
from .seeds import seed_for


# -- the objectives ------------------------------------------------------------------------------------------
def last_linear(net: nn.Module) -> nn.Linear:
    """The classifier layer of a network of models.py: its last Linear."""
    layers = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise ValueError(f"{type(net).__name__} has no Linear layer to take penultimate features before")
    return layers[-1]


def embed(loop: InnerLoop, params: Params, x: torch.Tensor) -> torch.Tensor:
    """The penultimate features of the network with `params` on x (what its classifier layer sees, flattened)."""
    seen: list[torch.Tensor] = []
    handle = last_linear(loop.net).register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0]))
    try:
        loop.forward(params, x)
    finally:
        handle.remove()
    return seen[-1].flatten(1)


def class_means(features: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean feature of each class [classes, D] and whether the class occurs in y [classes]."""
    onehot = F.one_hot(y, num_classes).to(features.dtype)
    counts = onehot.sum(0)
    return (onehot.T @ features) / counts.clamp(min=1).unsqueeze(1), counts > 0


def dm_loss(loop: InnerLoop, params: Params, x_real, y_real, x_syn, y_syn, num_classes: int) -> torch.Tensor:
    """Distribution matching: sum over the classes of the real batch of the squared distance between the mean
    embeddings of its real and its synthetic images (Zhao & Bilen 2023, eq. 4, one network)."""
    real, present = class_means(embed(loop, params, x_real), y_real, num_classes)
    syn, _ = class_means(embed(loop, params, x_syn), y_syn, num_classes)
    return ((real - syn) ** 2).sum(1)[present].sum()


def gradient_distance(a: Params, b: Params) -> torch.Tensor:
    """Zhao et al. 2021's layer-wise distance: per weight tensor, the sum over output units of 1 - cosine of
    the two gradients' rows; bias (1-D) tensors are left out, as in the paper."""
    total = 0.0
    for k, ga in a.items():
        if ga.dim() > 1:
            total = total + (1 - F.cosine_similarity(ga.flatten(1), b[k].flatten(1), dim=1, eps=1e-6)).sum()
    return total


def gm_loss(loop: InnerLoop, params: Params, x_real, t_real, y_real, x_syn, t_syn, y_syn, num_classes: int) -> torch.Tensor:
    """Gradient matching: sum over the classes of the real batch of the distance between the inner loss's
    gradients on that class's real examples and on its synthetic ones (targets t_*, classes y_*)."""
    total = 0.0
    for c in range(num_classes):
        r, s = y_real == c, y_syn == c
        if r.any() and s.any():
            g_real = {k: v.detach() for k, v in grad(loop._loss)(params, x_real[r], t_real[r]).items()}
            total = total + gradient_distance(g_real, grad(loop._loss)(params, x_syn[s], t_syn[s]))
    return total


def student_steps(loop: InnerLoop, params: Params, images, targets, lr: torch.Tensor,
                  batches: list[torch.Tensor | None]) -> Params:
    """SGD from `params` on the synthetic batch at rate lr, one step per entry of `batches` (indices of the
    images it uses; None: all), differentiably in images and lr."""
    for idx in batches:
        x, t = (images, targets) if idx is None else (images[idx], targets[idx])
        g = grad(loop._loss)(params, x, t)
        params = {k: params[k] - lr * g[k] for k in loop.names}
    return params


def trajectory_loss(student: torch.Tensor, start: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||student - target||^2 / ||start - target||^2 of flat parameter vectors (Cazenavette et al. 2022, eq. 2)."""
    return ((student - target) ** 2).sum() / ((start - target) ** 2).sum()


def mtt_loss(loop: InnerLoop, start: Params, target: Params, images, targets, log_lr: torch.Tensor,
             batches: list[torch.Tensor | None]) -> torch.Tensor:
    end = student_steps(loop, start, images, targets, log_lr.exp(), batches)
    return trajectory_loss(flatten(end, loop.names), flatten(start, loop.names), flatten(target, loop.names))


# -- the modules ---------------------------------------------------------------------------------------------
class RateTuned(DistillModule):
    """Learned images, fixed one-hot labels, and a one-step rate tuned on validation inits (the objective of
    a subclass does not learn one): `matching_loss` is the outer loss."""

    def __init__(self, net: nn.Module, num_classes: int, image_shape: tuple[int, ...],
                 settings: DistillConfig | Mapping[str, Any], real_images: torch.Tensor | None = None):
        s = as_settings(DistillConfig, settings)
        super().__init__(net, num_classes, image_shape, replace(s, label_mode="onehot", lr_per_param=False), real_images)

    def matching_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def on_train_start(self):
        self.first_step = self.global_step  # no batching to choose: each objective has one path

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.matching_loss(x, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the {self.s.method} loss became {loss.item()} at step {self.global_step}: "
                                     f"lower distill.optim.lr_images and rerun")
        # first_outer_loss stays None: the job's at-chance hint compares it with ln(classes), a meta-loss scale
        self.log(f"train/{self.s.method}_loss", loss, prog_bar=True)
        return loss

    def outer_groups(self) -> list[dict]:
        return [{"params": [self.images], "lr": self.s.optim.lr_images}]

    def tune_rate(self) -> float:
        """Set the one-step rate to the grid's best by mean val accuracy over val_inits inits of their own seed."""
        dm = self.trainer.datamodule
        inits = self.sampler.sample(self.s.val_inits, seed=seed_for(self.s.eval_seed, "eval", "rate_tune"),
                                    device=self.device)
        x, y = dm.val_x.to(self.device), dm.val_y.to(self.device)
        images, labels = self.images.detach(), self.labels.detach()
        scores = {}
        for lr in self.s.eval.lr_grid:
            lrs = torch.full_like(self.log_lrs, lr)
            landed = {k: v.detach() for k, v in self.loop.run_stack(inits, images, labels, lrs, self.s.init_chunk).items()}
            acc, _ = evaluate_stack(self.loop, landed, x, y)
            scores[lr] = acc.mean().item() if torch.isfinite(acc).all() else -1.0
        best = max(scores, key=scores.get)
        self.log_lrs.data.fill_(math.log(best))
        return best

    def _eval_start(self, stage: str) -> None:
        with torch.inference_mode(False), torch.enable_grad():
            self.tune_rate()
        super()._eval_start(stage)

    def real_targets(self, y: torch.Tensor) -> torch.Tensor:
        return label_targets(y, self.num_classes, self.s.inner_loss, hard=True)


class DMModule(RateTuned):
    def matching_loss(self, x, y):
        nets = self.sampler.sample(self.s.dm.nets_per_step, device=self.device)  # fresh random networks
        return torch.stack([dm_loss(self.loop, unstack(nets, i), x, y, self.images, self.classes, self.num_classes)
                            for i in range(self.s.dm.nets_per_step)]).mean()


class GMModule(RateTuned):
    def matching_loss(self, x, y):
        inits = self.sampler.sample(self.s.gm.nets_per_step, device=self.device)
        t = self.real_targets(y)
        return torch.stack([gm_loss(self.loop, unstack(inits, i), x, t, y, self.images, self.labels,
                                    self.classes, self.num_classes)
                            for i in range(self.s.gm.nets_per_step)]).mean()


class MTTModule(RateTuned):
    """Trajectory matching against `trajectories` ([experts, epochs + 1, D] flat weights, in loop.names order),
    with a learned student rate (in log space, Adam at distill.mtt.lr_lr)."""

    def __init__(self, net, num_classes, image_shape, settings, trajectories: torch.Tensor,
                 real_images: torch.Tensor | None = None):
        super().__init__(net, num_classes, image_shape, settings, real_images)
        # not in the checkpoints (they would hold every expert again): a resumed run reads them from expert_dir
        self.register_buffer("trajectories", trajectories, persistent=False)
        self.student_log_lr = nn.Parameter(torch.tensor(math.log(self.s.mtt.lr_teacher)))

    def outer_groups(self) -> list[dict]:
        return super().outer_groups() + [{"params": [self.student_log_lr], "lr": self.s.mtt.lr_lr}]

    def _point(self, expert: int, epoch: int) -> Params:
        like = dict(self.loop.net.named_parameters())
        return unflatten(self.trajectories[expert, epoch], {k: like[k] for k in self.loop.names})

    def student_batches(self) -> list[torch.Tensor | None]:
        n, b = self.images.shape[0], self.s.mtt.batch_syn
        if b is None or b >= n:
            return [None] * self.s.mtt.syn_steps
        batches: list[torch.Tensor] = []
        while len(batches) < self.s.mtt.syn_steps:  # shuffled passes over the batch, as the paper's student
            batches += list(torch.randperm(n, device=self.device).split(b))
        return batches[:self.s.mtt.syn_steps]

    def matching_loss(self, x, y):
        m = self.s.mtt
        expert = int(torch.randint(self.trajectories.shape[0], ()))
        t = int(torch.randint(m.max_start_epoch, ()))
        return mtt_loss(self.loop, self._point(expert, t), self._point(expert, t + m.expert_epochs), self.images,
                        self.labels, self.student_log_lr, self.student_batches())

    def training_step(self, batch, batch_idx):
        self.log("train/student_lr", self.student_log_lr.detach().exp())
        return super().training_step(batch, batch_idx)


class ImportedModule(RateTuned):
    """A batch made elsewhere (imported.py read it): nothing to learn, only evaluated. `lr`: the rate the file
    gave (one step at it), or None to tune one on val inits."""

    def __init__(self, net, num_classes, image_shape, settings, images: torch.Tensor, targets: torch.Tensor,
                 lr: float | None):
        # its images come from the file: nothing to draw (image_init) for them
        super().__init__(net, num_classes, image_shape, replace(as_settings(DistillConfig, settings), image_init="noise"))
        self.images = nn.Parameter(images.clone())
        self.register_buffer("labels", targets.clone())
        self.register_buffer("classes", targets.argmax(-1))
        self.given_lr = lr
        if lr is not None:
            self.log_lrs.data.fill_(math.log(lr))

    def tune_rate(self) -> float:
        return self.given_lr if self.given_lr is not None else super().tune_rate()


METHOD_MODULES = {"dm": DMModule, "gm": GMModule, "mtt": MTTModule, "import": ImportedModule}
