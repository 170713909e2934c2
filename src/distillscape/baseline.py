"""One step on random real images: the baseline that is not distilled.

An equal number of class-balanced random training images, hard labels, the same inner procedure as
the distilled batch, and a learning rate of its own, tuned on the validation split (a distilled
batch learns its rate, so the baseline must get its best one for the comparison to be fair).
"""
from __future__ import annotations

import torch

from .config import BaselineConfig
from .distill import label_targets
from .inner import InitSampler, InnerLoop, evaluate_stack
from .seeds import seed_for
from .stats import flat_summary


def _one_step_real(loop: InnerLoop, sampler: InitSampler, dm, per_class: int, lr: float, steps: int,
                   n: int, seed: int, x_eval, y_eval, device):
    g = torch.Generator().manual_seed(seed)
    xs, ys = zip(*(dm.class_balanced_sample(per_class, g) for _ in range(n)))
    x = torch.stack(xs).to(device)
    targets = torch.stack([label_targets(y, dm.num_classes, loop.loss, hard=True) for y in ys]).to(device)
    lrs = torch.full((steps, 1), lr, device=device)
    inits = sampler.sample(n, seed=seed, device=device)
    landed = loop.run_stack(inits, x, targets, lrs, batched_data=True)
    landed = {k: v.detach() for k, v in landed.items()}
    return evaluate_stack(loop, landed, x_eval.to(device), y_eval.to(device))


def tune_random_real_lr(loop: InnerLoop, sampler: InitSampler, dm, per_class: int, steps: int,
                        lr_grid, tune_inits: int, seed: int, device="cpu") -> float:
    """The rate of the grid with the best mean val accuracy over `tune_inits` inits, each with its
    own random batch (rates whose landings diverge are out)."""
    val_acc = {}
    for lr in lr_grid:
        acc, _ = _one_step_real(loop, sampler, dm, per_class, lr, steps, tune_inits, seed, dm.val_x, dm.val_y, device)
        val_acc[lr] = acc.mean().item() if torch.isfinite(acc).all() else float("nan")
    return max((lr for lr in lr_grid if val_acc[lr] == val_acc[lr]), key=lambda lr: val_acc[lr])


def random_real_baseline(loop: InnerLoop, sampler: InitSampler, dm, per_class: int, steps: int,
                         settings: BaselineConfig, eval_inits: int, eval_seed: int, seed: int,
                         device="cpu") -> dict[str, float]:
    """Tune the rate on val (mean accuracy over `tune_inits` inits, each with its own random batch),
    then report test accuracy over `eval_inits` fresh inits and batches (seed streams of `eval_seed` and
    of the job's `seed`: the random batches are this baseline's counterpart of the distilled batch, which
    differs from seed to seed, so the baseline's spread over seeds is measured too)."""
    best = tune_random_real_lr(loop, sampler, dm, per_class, steps, list(settings.lr_grid), settings.tune_inits,
                               seed_for(eval_seed, "eval", "random_real_tune", seed), device)
    acc, loss = _one_step_real(loop, sampler, dm, per_class, best, steps, eval_inits,
                               seed_for(eval_seed, "eval", "random_real_test", seed), dm.test_x, dm.test_y, device)
    out = flat_summary(acc, "random_real/acc")
    out.update({"random_real/loss": loss.mean().item(), "random_real/lr": best,
                "random_real/inits": float(eval_inits)})
    return out
