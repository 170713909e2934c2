"""Distilled instances, looked at one by one: how much each distilled image looks like real data,
and how models trained in one step on the batch compare with a model trained directly.

Likeness is measured three ways, each against the real training split: the nearest real images in
pixel space and in the penultimate-layer features of the direct model, the cosine similarity to
every real class mean, and whether the direct model classifies the image as its soft label says.
The same statistics for random real (held-out) images and for noise put the numbers on a scale:
a distilled batch is "like the data" only as far as it beats noise and approaches real images.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix

from .data import to_pixels
from .inner import InnerLoop, label_distribution
from .params import Params, flat_stack, flatten
from .stats import mean_std_n


# -- features ------------------------------------------------------------------------------------
def last_linear(net: nn.Module) -> nn.Linear:
    """The classifier layer: every net of models.py ends in an nn.Linear, the last one registered."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(net).__name__} has no nn.Linear layer to take penultimate features from")
    return linears[-1]


@torch.no_grad()
def penultimate_features(net: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The input of the last linear layer for every row of x: [N, features]."""
    captured: list[torch.Tensor] = []
    handle = last_linear(net).register_forward_hook(lambda m, inp, out: captured.append(inp[0].flatten(1)))
    try:
        for i in range(0, len(x), batch_size):
            net(x[i:i + batch_size])
    finally:
        handle.remove()
    return torch.cat(captured)


@torch.no_grad()
def logits_of(net: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    return torch.cat([net(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


# -- nearest neighbours and class means ----------------------------------------------------------
@torch.no_grad()
def nearest_neighbours(queries: torch.Tensor, reference: torch.Tensor, k: int,
                       chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """The k rows of `reference` closest (Euclidean) to each row of `queries`: distances and indices,
    both [n, k], nearest first.

    The reference is scanned in chunks (a running top-k), so 60k MNIST images never make one
    n x 60000 x D tensor; the distances of the winners are recomputed exactly (the |a|^2 - 2ab + |b|^2
    expansion used for the scan loses digits when a and b are close)."""
    q, r = queries.flatten(1).float(), reference.flatten(1).float()
    k = min(k, len(r))
    best_d = torch.full((len(q), 0), float("inf"))
    best_i = torch.zeros((len(q), 0), dtype=torch.long)
    q2 = (q * q).sum(1, keepdim=True)
    for start in range(0, len(r), chunk):
        rc = r[start:start + chunk]
        d2 = (q2 - 2 * q @ rc.T + (rc * rc).sum(1)).clamp_min(0)
        d = torch.cat([best_d, d2], 1)
        i = torch.cat([best_i, torch.arange(start, start + len(rc)).expand(len(q), -1)], 1)
        best_d, pos = d.topk(k, dim=1, largest=False)
        best_i = i.gather(1, pos)
    exact = (r[best_i] - q.unsqueeze(1)).norm(dim=-1)
    exact, order = exact.sort(dim=1)
    return exact, best_i.gather(1, order)


def class_means(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean of the flattened images of each class: [classes, D]."""
    x = x.flatten(1)
    return torch.stack([x[y == c].mean(0) for c in range(num_classes)])


def cosine_to_class_means(images: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every image to every class mean: [n, classes]."""
    return F.normalize(images.flatten(1), dim=1) @ F.normalize(means, dim=1).T


def label_classes(labels: torch.Tensor, inner_loss: str) -> torch.Tensor:
    """The class each (soft) label points at: the argmax of what it asks the inner loss for."""
    return label_distribution(labels, inner_loss).argmax(-1)


def agreement_rate(net: nn.Module, images: torch.Tensor, classes: torch.Tensor) -> float:
    """Fraction of images that `net` classifies as `classes` (their soft labels' argmax)."""
    return (logits_of(net, images).argmax(-1) == classes).float().mean().item()


# -- likeness of a batch to the real data ----------------------------------------------------------
@dataclass
class RealReference:
    """What a batch is compared with: the real training split in the three spaces we measure in."""
    x: torch.Tensor          # normalized images [N, C, H, W]
    y: torch.Tensor
    pixels: torch.Tensor     # pixel space (normalization undone, clipped to [0, 1]), flat [N, D]
    features: torch.Tensor   # penultimate features of the direct model [N, F]
    means: torch.Tensor      # class means of the normalized images, flat [classes, D]
    mean: list
    std: list

    @classmethod
    def build(cls, x, y, num_classes, mean, std, net) -> "RealReference":
        return cls(x, y, to_pixels(x, mean, std).flatten(1), penultimate_features(net, x),
                   class_means(x, y, num_classes), mean, std)


def likeness(images: torch.Tensor, classes: torch.Tensor, real: RealReference, net: nn.Module,
             k: int = 5) -> dict[str, torch.Tensor]:
    """Per-image likeness statistics of a batch (normalized images, the class each is meant to be).

    Distances are RMS per pixel / per feature (L2 / sqrt(dim)) so that they read on the scale of one
    value. Cosines are taken in the normalized space the network sees: pixel-space images are all
    non-negative, which makes every cosine there high and hides which class an image is like."""
    pix = to_pixels(images, real.mean, real.std).flatten(1)
    pix_d, pix_i = nearest_neighbours(pix, real.pixels, k)
    feats = penultimate_features(net, images)
    feat_d, feat_i = nearest_neighbours(feats, real.features, k)
    cos = cosine_to_class_means(images, real.means)
    pred = logits_of(net, images).argmax(-1)
    own = cos.gather(1, classes.view(-1, 1)).squeeze(1)
    return {
        "pixel_nn_rms": pix_d[:, 0] / pix.shape[1] ** 0.5,
        "pixel_nn_same_class": (real.y[pix_i[:, 0]] == classes).float(),
        "feature_nn_rms": feat_d[:, 0] / feats.shape[1] ** 0.5,
        "feature_nn_same_class": (real.y[feat_i[:, 0]] == classes).float(),
        "class_mean_cosine_own": own,
        "class_mean_cosine_best_other": cos.scatter(1, classes.view(-1, 1), float("-inf")).max(1).values,
        "class_mean_nearest_is_own": (cos.argmax(1) == classes).float(),
        "direct_agrees": (pred == classes).float(),
        # not summarized, kept for figures and the per-image table
        "_pixel_nn": pix_i, "_feature_nn": feat_i, "_cosine": cos, "_direct_pred": pred,
    }


def summarize_stats(stats: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """mean / std / n of every per-image statistic (the `_`-prefixed ones are not statistics)."""
    return {k: mean_std_n(v) for k, v in stats.items() if not k.startswith("_")}


def held_out_real(x: torch.Tensor, y: torch.Tensor, classes: torch.Tensor, generator: torch.Generator):
    """Random real images of the same classes as `classes` (one per entry, in its order), from a
    held-out split: the real counterpart of the distilled batch, not in the training split it is
    compared with. Drawn without replacement while the class has enough images."""
    idx = torch.empty(len(classes), dtype=torch.long)
    for c in classes.unique().tolist():
        where = (classes == c).nonzero().flatten()
        pool = (y == c).nonzero().flatten()
        if len(pool) == 0:
            raise ValueError(f"the held-out split has no image of class {c}")
        pick = torch.randperm(len(pool), generator=generator)[:len(where)]
        if len(pick) < len(where):
            pick = torch.cat([pick, torch.randint(len(pool), (len(where) - len(pick),), generator=generator)])
        idx[where] = pool[pick]
    return x[idx], y[idx]


# -- one-step models against the direct one ----------------------------------------------------------
@torch.no_grad()
def stack_logits(loop: InnerLoop, stack: Params, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits [M, N, C] of every model of a stack on x."""
    return torch.cat([loop.forward_stack(stack, x[i:i + batch_size]) for i in range(0, len(x), batch_size)], 1)


def confusion_matrix(preds: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts [true, predicted] (torchmetrics)."""
    return MulticlassConfusionMatrix(num_classes=num_classes)(preds, y)


def symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """KL(p_a || p_b) + KL(p_b || p_a) per example, from logits (log-space, no clamping needed)."""
    la, lb = F.log_softmax(logits_a, -1), F.log_softmax(logits_b, -1)
    return ((la.exp() - lb.exp()) * (la - lb)).sum(-1)


def compare_models(direct_logits: torch.Tensor, onestep_logits: torch.Tensor, y: torch.Tensor,
                   direct_params: Params, landed: Params, inits: Params, names: list[str]) -> dict:
    """Divergence of the direct minimum and the one-step landings, and the ensemble of the landings.

    direct_logits [N, C], onestep_logits [M, N, C] on the same test set y [N]."""
    theta = flatten(direct_params, names)
    flat, flat0 = flat_stack(landed, names), flat_stack(inits, names)
    dist = (flat - theta).norm(dim=1)
    direct_pred, member_pred = direct_logits.argmax(-1), onestep_logits.argmax(-1)
    member_acc = (member_pred == y).float().mean(1)
    ensemble_pred = F.softmax(onestep_logits, -1).mean(0).argmax(-1)
    return {
        "param_distance": mean_std_n(dist),
        "param_distance_relative": mean_std_n(dist / theta.norm()),
        "onestep_step_length": mean_std_n((flat - flat0).norm(dim=1)),
        "init_to_direct_distance": mean_std_n((flat0 - theta).norm(dim=1)),
        "prediction_disagreement": mean_std_n((member_pred != direct_pred).float().mean(1)),
        "symmetric_kl": mean_std_n(symmetric_kl(onestep_logits, direct_logits.unsqueeze(0)).mean(1)),
        "direct_acc": (direct_pred == y).float().mean().item(),
        "member_acc": mean_std_n(member_acc),
        "best_member_acc": member_acc.max().item(),
        "ensemble_acc": (ensemble_pred == y).float().mean().item(),
        "ensemble_members": onestep_logits.shape[0],
        "_member_acc": member_acc, "_ensemble_pred": ensemble_pred,
    }
