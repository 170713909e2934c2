"""The one summary of a set of values (over inits, landings, images, grid points): mean, std, n; and how far a
bf16 sample is from the same sample in fp32 (`precision_difference`, shared by every error certificate).

Statistics are taken over the finite values only; `nonfinite` counts the others (a diverged step gives
an inf loss, which must not turn every mean into inf or nan). std has Bessel's correction, and is 0 for
a single value.
"""
from __future__ import annotations

import math

import numpy as np
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


def wilson_interval(k: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a rate, k successes of n (95% for z=1.96): the rates p whose own
    binomial standard error puts k/n within z of them. It stays inside [0, 1] and is not empty at 0/n or
    n/n, where mean ± std of 0/1 values runs past the ends or shrinks to a point. (nan, nan) for n < 1."""
    if not n >= 1:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def interval(values: torch.Tensor, level: float = 0.95) -> dict[str, float | int]:
    """Mean of the finite entries of `values` with its t-interval at `level` (the sample standard error
    times Student's t quantile with n-1 degrees of freedom): {"mean", "lo", "hi", "std", "n"}; lo and hi
    are nan with fewer than two values (no spread to judge by)."""
    d = describe(values)
    return interval_of(d["mean"], d["std"], d["n"], level)


def interval_of(mean: float, std: float, n: int, level: float = 0.95) -> dict[str, float | int]:
    """`interval` from a summary already taken (mean, Bessel std, n), e.g. a stat of landing_stats.json."""
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n) if n > 1 else math.nan
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "std": std, "n": n}


def separated(a: dict, b: dict | float) -> int:
    """+1 when interval a lies wholly above b (an interval, or a number), -1 wholly below, 0 when they
    overlap or either is undefined: a reading is stated only when its interval excludes the alternative."""
    lo_b, hi_b = (b, b) if isinstance(b, (int, float)) else (b.get("lo", math.nan), b.get("hi", math.nan))
    if a.get("lo", math.nan) > hi_b:
        return 1
    if a.get("hi", math.nan) < lo_b:
        return -1
    return 0


def interval95(values: torch.Tensor) -> tuple[float, float]:
    """The 95% t-interval (`interval`) for the mean of the finite `values`, as (low, high)."""
    i = interval(values)
    return i["lo"], i["hi"]


# -- rank correlation; how far a lower-precision result is from fp32 (the bf16 error certificates) ----------
def average_ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a sample, tied values sharing the mean of their ranks (Spearman's convention)."""
    v = np.asarray(v, dtype=float).ravel()
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(1, len(v) + 1)
    _, group, counts = np.unique(v, return_inverse=True, return_counts=True)
    sums = np.bincount(group, weights=ranks)
    return sums[group] / counts[group]


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two paired samples: the Pearson correlation of their average ranks
    (ties handled); nan when either sample is constant or holds a non-finite value."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if not (np.isfinite(a).all() and np.isfinite(b).all()) or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / np.sqrt((ra * ra).sum() * (rb * rb).sum()))


def precision_difference(approx, exact, relative: bool, tolerance: float) -> dict:
    """A sample of values computed in lower precision (`approx`) against the same computed in fp32 (`exact`):
    the largest difference, relative to |exact| for a loss (`relative`), absolute for an accuracy (a fraction
    already); the rank correlation of the two samples (is their order kept?); `passed`: the largest
    difference within `tolerance`. Non-finite pairs (a diverged model) count as passed only where both
    agree on being non-finite."""
    a, e = np.asarray(approx, dtype=float).ravel(), np.asarray(exact, dtype=float).ravel()
    both = np.isfinite(a) & np.isfinite(e)
    diff = np.abs(a[both] - e[both]) / (np.maximum(np.abs(e[both]), np.finfo(float).tiny) if relative else 1.0)
    worst = float(diff.max()) if diff.size else 0.0
    agree_nonfinite = bool(np.array_equal(np.isfinite(a), np.isfinite(e)))
    return {"max_difference": worst, "relative": bool(relative), "rank_correlation": rank_correlation(a[both], e[both]) if both.sum() > 1 else float("nan"),
            "passed": bool(worst <= tolerance and agree_nonfinite)}


def precision_summary(precision: str, tolerance: float, entries: dict[str, dict], **extra) -> dict:
    """An error certificate from its `precision_difference` entries (name -> entry): the precision and
    tolerance it was judged by, `extra` (what was sampled), every entry, the largest difference of any, and
    `passed` when every entry passed."""
    return {"precision": precision, "tolerance": float(tolerance), **extra, "entries": entries,
            "max_difference": max((e["max_difference"] for e in entries.values()), default=0.0),
            "passed": all(e["passed"] for e in entries.values())}
