"""Intervals of rates: the Wilson score interval against its definition, checked point by point."""
from __future__ import annotations

import math

import numpy as np
import pytest

from distillscape.stats import wilson_interval


def _by_definition(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The slow, obvious way: every rate p on a fine grid whose binomial standard error puts k/n within z of
    it, i.e. |k/n - p| <= z * sqrt(p (1 - p) / n); the interval is their span."""
    p = np.linspace(0, 1, 200_001)
    inside = np.abs(k / n - p) <= z * np.sqrt(p * (1 - p) / n) + 1e-12
    return float(p[inside].min()), float(p[inside].max())


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (0, 10), (3, 10), (8, 10), (10, 10), (1, 3), (49, 50), (0, 200)])
def test_wilson_interval_is_the_set_of_rates_that_explain_k_of_n(k, n):
    lo, hi = wilson_interval(k, n)
    want_lo, want_hi = _by_definition(k, n)
    assert lo == pytest.approx(want_lo, abs=2e-5) and hi == pytest.approx(want_hi, abs=2e-5)
    assert 0.0 <= lo <= k / n <= hi <= 1.0  # never past the ends, always around the observed rate
    assert hi - lo > 0  # not empty at 0/n or n/n, where mean ± std of 0/1 values is a point


def test_wilson_interval_of_nothing_is_nan():
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_rate_whiskers_stay_inside_zero_one():
    """The likeness figure's rate bars: mean ± std of 8/10 ones ran to 1.22."""
    from distillscape.plots import rate_whiskers

    stats = [{"mean": k / 10, "std": math.sqrt(k / 10 * (1 - k / 10) * 10 / 9), "n": 10} for k in range(11)]
    below, above = rate_whiskers(stats)
    tops = [s["mean"] + a for s, a in zip(stats, above)]
    bottoms = [s["mean"] - b for s, b in zip(stats, below)]
    assert max(tops) <= 1.0 and min(bottoms) >= 0.0
    assert stats[8]["mean"] + stats[8]["std"] > 1.0  # what the std whisker did
    assert all(a > 0 for a in above[:10]) and all(b > 0 for b in below[1:])


def test_likeness_figure_keeps_whiskers_in_range_and_its_legend_off_the_bars():
    import torch

    from distillscape.plots import STAT_GROUPS, likeness_figure

    keys = [k for ks in STAT_GROUPS.values() for k in ks]
    rates = set(next(iter(STAT_GROUPS.values())))

    def kind(mean):
        return {k: {"mean": mean if k in rates else 0.5, "std": 0.42 if k in rates else 0.1, "n": 10} for k in keys}

    summary = {"distilled": kind(0.8), "random_real": kind(1.0), "noise": kind(0.0)}
    names = [f"c{i}" for i in range(10)]
    fig = likeness_figure(summary, torch.rand(10, 10), torch.arange(10), names, context="digits / MLP")
    rates_ax, heat = fig.axes[0], fig.axes[3]
    segments = [seg for coll in rates_ax.collections for seg in coll.get_segments()]
    assert segments and max(y for seg in segments for _, y in seg) <= 1.0 + 1e-9  # whiskers: 0..1
    assert min(y for seg in segments for _, y in seg) >= -1e-9
    assert rates_ax.get_legend() is None and fig.legends  # one legend above the panels, none on the bars
    assert [t.get_text() for t in heat.get_xticklabels()] == names  # the class names, not the kinds
