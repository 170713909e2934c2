"""Figures across the jobs of a multirun, made by distillscape-report: a metric against one swept setting,
and the atlas's statistics (distillscape.report.atlas: one per job, with its 95% interval)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .common import _errorbar, _save, save_figure


def sweep_figure(groups: list[dict], x_key: str, metric: str, title: str, path=None):
    """A metric against one swept setting across the jobs of a multirun: a line per combination of the
    other settings, each point the mean over that combination's seeds with a ±1 std bar (n beside it)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    lines: dict[str, list] = {}
    for g in groups:
        if metric in g["stats"] and x_key in g["settings"]:
            rest = ", ".join(f"{k}={v}" for k, v in g["settings"].items() if k != x_key) or "all jobs"
            lines.setdefault(rest, []).append((g["settings"][x_key], g["stats"][metric]))
    for k, (label, pts) in enumerate(sorted(lines.items())):
        pts.sort(key=lambda p: _as_number(p[0]))
        xs = [_as_number(p[0]) for p in pts]
        ax.errorbar(xs, [p[1]["mean"] for p in pts], yerr=[p[1]["std"] for p in pts], marker="o", capsize=3,
                    label=label, color=f"C{k}")
        for x, (_, st) in zip(xs, pts):
            ax.annotate(f"n={st['n']}", (x, st["mean"]), textcoords="offset points", xytext=(4, -10), fontsize=6)
    ax.set_xlabel(x_key)
    ax.set_ylabel(f"{metric} (mean ± std over seeds)")
    ax.set_title(title, fontsize=9)
    if lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def _as_number(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def interval_figure(xs: list[str], series: dict[str, list[dict | None]], ylabel: str, title: str, path: Path,
                    percent: bool = False) -> Path:
    """Means with their 95% intervals ({"mean", "lo", "hi"}; None: no value) at each x, one colour per series
    (the atlas: x = method per dataset/arch, series = evaluation protocol), dodged side by side."""
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(xs) + 1.5), 3.6))
    width = 0.6 / max(len(series), 1)
    scale = 100.0 if percent else 1.0
    for i, (name, values) in enumerate(series.items()):
        x = np.arange(len(xs)) + (i - (len(series) - 1) / 2) * width
        _errorbar(ax, x, [{k: scale * d[k] for k in ("mean", "lo", "hi")} if d else None for d in values], label=name)
    ax.set_xticks(np.arange(len(xs)), xs, fontsize=8)
    ax.set_ylabel(ylabel + (" (%)" if percent else ""))
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8, title="protocol", title_fontsize=8)
    return _save(fig, path, title)
