"""The one summary of a set of values (over inits, landings, images, grid points): mean, std, n.

Statistics are taken over the finite values only; `nonfinite` counts the others (a diverged step gives
an inf loss, which must not turn every mean into inf or nan). std has Bessel's correction, and is 0 for
a single value.
"""
from __future__ import annotations

import math

import torch


def describe(values: torch.Tensor) -> dict[str, float | int]:
    """{"mean", "std", "min", "max", "n", "nonfinite"} of the finite entries of `values`."""
    v = torch.as_tensor(values).detach().double().flatten().cpu()
    ok = v[torch.isfinite(v)]
    n = ok.numel()
    return {"mean": ok.mean().item() if n else math.nan,
            "std": ok.std().item() if n > 1 else 0.0 if n == 1 else math.nan,
            "min": ok.min().item() if n else math.nan, "max": ok.max().item() if n else math.nan,
            "n": n, "nonfinite": v.numel() - n}


def mean_std_n(values: torch.Tensor) -> dict[str, float | int]:
    """The {"mean", "std", "n"} part of `describe`, the form of the JSON results of the analyses."""
    d = describe(values)
    return {"mean": d["mean"], "std": d["std"], "n": d["n"]}


def flat_summary(values: torch.Tensor, prefix: str) -> dict[str, float]:
    """`describe` as flat metric names: prefix_mean, prefix_std, prefix_min, prefix_max (the form of
    Lightning's logged metrics, e.g. test/onestep_acc_mean)."""
    d = describe(values)
    return {f"{prefix}_{k}": float(d[k]) for k in ("mean", "std", "min", "max")}


def interval95(values: torch.Tensor) -> tuple[float, float]:
    """A 95% interval for the mean of the finite `values`: mean -+ 1.96 standard errors (the normal
    approximation, fine for the >= 100 inits it is used with)."""
    d = describe(values)
    half = 1.96 * d["std"] / math.sqrt(d["n"]) if d["n"] else math.nan
    return d["mean"] - half, d["mean"] + half
