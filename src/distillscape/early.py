"""Does the distilled batch only encode early training? One-step analogues of the analyses of Yang et
al. ("What is Dataset Distillation Learning?", ICML 2024), with the controls that give them meaning.
Each is a part of the landing task (analysis.early), computed on the first `early_inits` of its inits
(held out: the distillation never trained from them), every statistic with its 95% t-interval over them.

- influence: one step without each distilled image, all removals in one vmapped batch (a weight per
  example, 0 for the removed one: `inner.weighted_inner_loss`), against one step on the whole batch: the
  change of test loss and accuracy per distilled image, and the test images its removal hurts most.
- mixing: k real images per class added to the distilled batch (labels: one-hot scaled like the distilled
  labels, `scaled_onehot`; rate: the distilled one), against the same real images alone (hard labels, a
  rate tuned on val as in `baseline`).
- controls: networks trained from the landings' own inits on small random subsets of the real training
  data, the subset size chosen so their test accuracy is nearest the landings'; the landing's agreement
  with the direct-training checkpoint of its init nearest its accuracy, against its agreement with these
  controls, and the controls' agreement among themselves. Two networks of equal accuracy agree on many
  test images whatever they encode, so agreement with an early checkpoint means "early training" only
  when it exceeds the agreement with accuracy-matched networks that are not early training.
- fair baselines (the Trainer runs in tasks/landing.py): random real images with learned soft labels and
  rates against the distilled batch, train beside test accuracy, and directly trained networks.
- curvature (their 4.3): the true task's Hessian trace and top eigenvalue at every checkpoint of direct
  training from the held-out inits and at their landings (one stack: `trace_and_top`), beside the curvature
  of the distilled batch's own cost (the inner loss on it, its soft labels: `DistilledCost`) at the inits and
  the landings. Where the landing falls on the direct-training curve (`matched_steps`): per init the
  landing's value minus each checkpoint's (same init), a checkpoint matches when that difference's interval
  holds 0; when every checkpoint matches, the curve cannot place the landing (inconclusive).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from .curvature import HVP, FunctionObjective, Objective, block_traces, lanczos, random_unit, stack_hvp, tiled
from .inner import InnerLoop, inner_loss
from .params import Params, stack_len
from .stats import interval, separated


def merged(stack: Params) -> Params:
    """A stack whose first two dims [R, M] are merged into one of R * M models."""
    return {k: v.reshape(-1, *v.shape[2:]) for k, v in stack.items()}


# -- leave-one-out influence ------------------------------------------------------------------------------
def removal_weights(n: int, device=None) -> torch.Tensor:
    """[n + 1, n]: row 0 keeps the whole batch, row i + 1 removes example i (weight 0)."""
    w = torch.ones(n + 1, n, device=device)
    w[1:] -= torch.eye(n, device=device)
    return w


def leave_one_out_landings(loop: InnerLoop, inits: Params, images, labels, lrs,
                           chunk: int | None = None) -> Params:
    """The landings of every init after the inner step on the whole batch and on the batch without each
    of its n examples, in one vmap over the removals: a stack [n + 1, M, ...] (row 0: the whole batch)."""
    weights = removal_weights(images.shape[0], images.device)
    with torch.enable_grad():
        landed = vmap(lambda w: loop.run_stack(inits, images, labels, lrs, weights=w), chunk_size=chunk)(weights)
    return {k: v.detach() for k, v in landed.items()}


@torch.no_grad()
def per_example_test(loop: InnerLoop, stack: Params, x, y, data_chunk: int = 1000):
    """Per-model, per-example cross-entropy [models, N] and correctness [models, N] on (x, y)."""
    losses, correct = [], []
    for i in range(0, len(y), data_chunk):
        logits = loop.forward_models(stack, x[i:i + data_chunk])
        yb = y[i:i + data_chunk].expand(logits.shape[0], -1)
        losses.append(F.cross_entropy(logits.transpose(1, 2), yb, reduction="none"))
        correct.append((logits.argmax(-1) == yb).float())
    return torch.cat(losses, 1), torch.cat(correct, 1)


def influence(loop: InnerLoop, inits: Params, images, labels, lrs, test_x, test_y, data_chunk: int = 1000,
              chunk: int | None = None) -> dict[str, torch.Tensor]:
    """Leave-one-out influence of every distilled image on the one-step landings of `inits`:
    delta_test_loss / delta_test_acc [n, M] (without image i minus with the whole batch, per init) and
    per_test_delta [n, T] (the change of each test image's loss, mean over inits; > 0: image i helps it)."""
    n, m = images.shape[0], stack_len(inits)
    landed = merged(leave_one_out_landings(loop, inits, images, labels, lrs, chunk))
    loss, correct = (t.view(n + 1, m, -1) for t in per_example_test(loop, landed, test_x, test_y, data_chunk))
    mean_loss, acc = loss.mean(2), correct.mean(2)
    return {"delta_test_loss": (mean_loss[1:] - mean_loss[0]).cpu(), "delta_test_acc": (acc[1:] - acc[0]).cpu(),
            "per_test_delta": (loss[1:] - loss[0]).mean(1).cpu(), "test_loss": mean_loss[0].cpu()}


def influence_summary(result: dict[str, torch.Tensor], labels: torch.Tensor, test_y: torch.Tensor, top: int) -> dict:
    """Per distilled image: its class (the argmax of its label), the change of test loss and accuracy
    without it (mean over inits, 95% interval), and the `top` test images whose loss its removal raises
    most; overall, how many images' removal raises / lowers test loss beyond the interval."""
    images = []
    for i in range(result["delta_test_loss"].shape[0]):
        gain, which = result["per_test_delta"][i].topk(min(top, result["per_test_delta"].shape[1]))
        images.append({"image": i, "class": int(labels[i].argmax()),
                       "delta_test_loss": interval(result["delta_test_loss"][i]),
                       "delta_test_acc": interval(result["delta_test_acc"][i]),
                       "helps_most": [{"test_index": int(j), "test_class": int(test_y[j]), "loss_change": float(g)}
                                      for g, j in zip(gain, which)]})
    return {"inits": int(result["delta_test_loss"].shape[1]), "test_loss": interval(result["test_loss"]),
            "helpful": sum(d["delta_test_loss"]["lo"] > 0 for d in images),
            "harmful": sum(d["delta_test_loss"]["hi"] < 0 for d in images),
            "images": images}


# -- mixing real images into the distilled batch --------------------------------------------------------------
def scaled_onehot(y: torch.Tensor, distilled_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Labels for real images of classes y, scaled like the distilled labels: b + a * onehot(y), where a
    is the distilled labels' mean margin (largest entry minus the mean of the others) and b the mean of
    their other entries. For mse these are the vectors regressed to; for soft_ce logits whose softmax is
    as confident as the average distilled label."""
    top = distilled_labels.max(-1).values
    rest = (distilled_labels.sum(-1) - top) / (num_classes - 1)
    a, b = (top - rest).mean(), rest.mean()
    return b + a * F.one_hot(y, num_classes).to(distilled_labels.dtype)


def mixed_batches(images, labels, real_x, real_y, num_classes: int):
    """The distilled batch with each init's real images appended: images [M, n + r, ...], labels [M, n + r, C]."""
    m = real_x.shape[0]
    x = torch.cat([images.expand(m, *images.shape), real_x], dim=1)
    t = torch.cat([labels.expand(m, *labels.shape), scaled_onehot(real_y, labels, num_classes)], dim=1)
    return x, t


# -- accuracy-matched controls ----------------------------------------------------------------------------------
def agreement(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Share of test images on which two models predict the same class: predictions a [A, N], b [B, N] -> [A, B]."""
    return (a[:, None, :] == b[None, :, :]).float().mean(-1)


def train_on_subsets(loop: InnerLoop, stack: Params, xs: torch.Tensor, ys: torch.Tensor, steps: int, lr: float,
                     momentum: float, chunk: int | None = None) -> Params:
    """Full-batch gradient descent (heavy-ball momentum) on cross-entropy, every model of the stack on
    its own subset (xs [M, s, ...], ys [M, s]) for `steps` steps, vmapped over the models."""
    def mean_loss(params, x, y):
        return F.cross_entropy(loop.forward(params, x), y)

    g = vmap(grad(mean_loss), in_dims=(0, 0, 0), chunk_size=chunk)
    stack = {k: v.clone() for k, v in stack.items()}
    velocity = {k: torch.zeros_like(v) for k, v in stack.items()}
    with torch.enable_grad():
        for _ in range(steps):
            grads = g(stack, xs, ys)
            for k in stack:
                velocity[k] = momentum * velocity[k] + grads[k]
                stack[k] = (stack[k] - lr * velocity[k]).detach()
    return stack


def random_subsets(n_train: int, size: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """[count, size] indices: `count` random subsets of the training split, each without repeats."""
    return torch.stack([torch.randperm(n_train, generator=generator)[:size] for _ in range(count)])


def control_agreements(landing_pred: torch.Tensor, checkpoint_pred: torch.Tensor,
                       control_pred: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per init p (all from the same init): the landing's agreement with its matched checkpoint
    (landing_pred [P, N], checkpoint_pred [P, N]), with its C controls (control_pred [P, C, N], mean over
    them), the controls among themselves (mean over their C(C-1)/2 pairs) and the checkpoint with the
    controls; each [P]."""
    p, c, _ = control_pred.shape
    lc = torch.stack([agreement(landing_pred[i:i + 1], control_pred[i])[0] for i in range(p)])  # [P, C]
    kc = torch.stack([agreement(checkpoint_pred[i:i + 1], control_pred[i])[0] for i in range(p)])
    cc = torch.stack([agreement(control_pred[i], control_pred[i]) for i in range(p)])  # [P, C, C]
    off = ~torch.eye(c, dtype=torch.bool)
    among = (cc[:, off].view(p, c * (c - 1)).mean(1) if c > 1 else torch.full((p,), math.nan))
    return {"landing_checkpoint": (landing_pred == checkpoint_pred).float().mean(1), "landing_controls": lc.mean(1),
            "controls_controls": among, "checkpoint_controls": kc.mean(1)}


def nearest_checkpoint(checkpoint_acc: torch.Tensor, landing_acc: torch.Tensor) -> torch.Tensor:
    """Per init, the checkpoint whose test accuracy is nearest the landing's: checkpoint_acc [T, P],
    landing_acc [P] -> [P] indices (the earliest of ties)."""
    return (checkpoint_acc - landing_acc[None]).abs().argmin(0)


def intervals(values: dict[str, torch.Tensor]) -> dict[str, dict]:
    return {k: interval(v) for k, v in values.items()}


# -- curvature along direct training ------------------------------------------------------------------------------
class DistilledCost(FunctionObjective):
    """The inner loss on the distilled batch (its soft labels, the run's inner loss) as a function of the
    parameters: the cost the one step descends, as a curvature.Objective for the batched Lanczos and Hutchinson
    code. Its Hessian-vector products go reverse-over-reverse from the start: the batch is small, so the second
    reverse pass costs little, and an mse inner loss cannot go forward-over-reverse (FunctionObjective)."""

    def __init__(self, loop: InnerLoop, images: torch.Tensor, labels: torch.Tensor, chunk: int | None = None):
        super().__init__(loop.names, lambda p: inner_loss(loop.forward(p, images), labels, loop.loss), chunk,
                         reverse_over_reverse=True)


def pieces_hvp(task: Objective, stack: Params, rows: int) -> HVP:
    """stack_hvp in pieces of `rows` points (the same products, the memory of `rows` points at a time)."""
    n = stack_len(stack)
    pieces = [(i, stack_hvp(task, {k: v[i:i + rows] for k, v in stack.items()})) for i in range(0, n, rows)]
    return lambda v: torch.cat([hvp(v[i:i + rows]) for i, hvp in pieces])


def trace_and_top(task: Objective, stack: Params, probes: int, lanczos_steps: int, generator: torch.Generator,
                  rows: int) -> dict[str, torch.Tensor]:
    """The Hessian trace (Hutchinson, `probes` Rademacher probes) and top eigenvalue (the largest Ritz value of
    `lanczos_steps` Lanczos iterations) of `task`'s loss at every point of a stack, all points in every
    Hessian-vector product: {"trace", "trace_se" (its standard error over the probes), "top_eig"} [M] float64.
    `task`: a landing.TrueTask or a DistilledCost; `rows`: points per vmapped pass (curvature.points_per_pass's
    rule, or analysis.init_chunk), the same products in every case."""
    names = task.names
    stack = {n: stack[n] for n in names}
    m, d = stack_len(stack), sum(stack[n][0].numel() for n in names)
    like = stack[names[0]]
    # every product in pieces of `rows` points (vmapped, and each over the data in chunks): memory bounded
    # whatever the stack's size (a convnet's 110 points at once over 1000 examples took ~20 GB)
    t, _ = lanczos(pieces_hvp(task, stack, rows), random_unit((m, d), generator, like), lanczos_steps, generator)
    top = torch.linalg.eigvalsh(t)[:, -1]
    hvp = pieces_hvp(task, tiled(stack, probes), rows)  # all probes of all points: one tiled stack
    trace, se = block_traces(hvp, (m, d), [d], probes, generator, like)
    return {"trace": trace[:, 0].double().cpu(), "trace_se": se[:, 0].double().cpu(), "top_eig": top.double().cpu()}


def matched_steps(point: torch.Tensor, checkpoints: torch.Tensor, steps: list[int]) -> dict:
    """Where a point falls on a curve along direct training, per init: point [P] (e.g. the landings' trace),
    checkpoints [T, P] (the same quantity at each checkpoint of direct training from the same inits), steps [T].
    Per checkpoint the paired difference point - checkpoint with its 95% interval over the inits; a checkpoint
    matches when that interval holds 0. verdict: "matched" (some, not all, match: `matched` lists their steps),
    "inconclusive" (every one matches, or there is no interval: the curve cannot place the point), "between"
    (none matches and the difference changes sign: `between` lists the pairs of consecutive steps it crosses
    between), "above" / "below" (none matches: the point exceeds / stays under every checkpoint)."""
    diffs = [interval(point - checkpoints[t]) for t in range(len(steps))]
    out = {"differences": [{"step": int(s), **d} for s, d in zip(steps, diffs)]}
    if not all(math.isfinite(d["lo"]) and math.isfinite(d["hi"]) for d in diffs):
        return {**out, "verdict": "inconclusive", "why": "no interval (fewer than two finite inits)", "matched": []}
    side = [separated(d, 0.0) for d in diffs]
    matched = [int(s) for s, v in zip(steps, side) if v == 0]
    if len(matched) == len(steps):
        return {**out, "verdict": "inconclusive", "why": "the difference's interval holds 0 at every checkpoint",
                "matched": matched}
    if matched:
        return {**out, "verdict": "matched", "matched": matched, "first": matched[0], "last": matched[-1]}
    if all(v > 0 for v in side) or all(v < 0 for v in side):
        return {**out, "verdict": "above" if side[0] > 0 else "below", "matched": []}
    crossings = [[int(steps[t]), int(steps[t + 1])] for t in range(len(steps) - 1) if side[t] != side[t + 1]]
    return {**out, "verdict": "between", "matched": [], "between": crossings}
