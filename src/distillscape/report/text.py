"""Numbers as the page's text: a summary {mean, std, n} as "0.873 ± 0.021" or a rate "9/10", an
interval as "0.873 [0.85, 0.90] (n=5)". Every section formats through these."""
from __future__ import annotations

import math

from ..stats import interval_of


def binary_count(mean, std, n, known_rate: bool = False) -> int | None:
    """k when (mean, std, n) summarise n values that are all 0 or 1 with k ones (a rate: 9 of 10
    images), else None. For 0/1 values the std follows from the mean (Bessel-corrected, as
    stats.describe computes it), which tells a rate from a continuous statistic when 0 < k < n; all
    zeros or all ones (std 0) look like any constant, so they count only for a `known_rate`."""
    if not (_is_number(mean) and _is_number(std) and _is_number(n)) or n < 1 or n != int(n):
        return None
    n = int(n)
    k = round(mean * n)
    if abs(mean * n - k) > 1e-6 * n or not 0 <= k <= n or (not known_rate and k in (0, n)):
        return None
    p = k / n
    expected = math.sqrt(p * (1 - p) * n / (n - 1)) if n > 1 else 0.0
    return k if abs(std - expected) <= 1e-4 + 1e-3 * expected else None


def stat_text(d: dict | None, with_n: bool = True, known_rate: bool = False) -> str:
    """One summary ({"mean", "std", "n"}) as table text: "9/10" for a rate of 0/1 events, otherwise
    "0.873 ± 0.021" (and " (n=50)")."""
    if not isinstance(d, dict) or not _is_number(d.get("mean")):
        return "–"
    mean, std, n = d["mean"], d.get("std"), d.get("n")
    if (k := binary_count(mean, std, n, known_rate)) is not None:
        return f"{k}/{int(n)}"
    text = f"{mean:.4g}" + (f" ± {std:.3g}" if _is_number(std) else "")
    return text + (f" (n={int(n)})" if with_n and _is_number(n) else "")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def mean_interval(d: dict, level: float = 0.95) -> tuple[float, float]:
    """The t interval of a mean from its {"mean", "std", "n"} summary; (nan, nan) for n < 2."""
    from scipy.stats import t as student_t

    n = d.get("n")
    if not (_is_number(d.get("mean")) and _is_number(d.get("std")) and _is_number(n)) or n < 2:
        return math.nan, math.nan
    half = student_t.ppf(0.5 + level / 2, n - 1) * d["std"] / math.sqrt(n)
    return d["mean"] - half, d["mean"] + half


def ci_text(d: dict | None, pct: bool = False) -> str:
    """A {"mean", "lo", "hi", "n"} summary as "0.873 [0.85, 0.90] (n=5)" (percent with pct)."""
    if not isinstance(d, dict) or not _is_number(d.get("mean")) or not math.isfinite(d["mean"]):
        return "–"
    f = (lambda v: f"{v:.1%}") if pct else (lambda v: f"{v:.3g}")
    lo, hi = d.get("lo"), d.get("hi")
    spread = f" [{f(lo)}, {f(hi)}]" if _is_number(lo) and math.isfinite(lo) else " [no interval]"
    return f"{f(d['mean'])}{spread}" + (f" (n={int(d['n'])})" if _is_number(d.get("n")) else "")


def _ci(d: dict | None) -> dict | None:
    """The 95% t-interval of a {"mean", "std", "n"} summary (a stat of landing_stats.json)."""
    if not isinstance(d, dict) or not all(_is_number(d.get(k)) for k in ("mean", "std", "n")) or not d["n"]:
        return None
    return interval_of(d["mean"], d["std"], int(d["n"]))
