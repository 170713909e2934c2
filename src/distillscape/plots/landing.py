"""The landing analysis (distillscape-landing): landings against direct training, the Hessian's spectral
density at each group of points, and the loss along the paths landing -> direct minimum (basins)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from .common import _save, save_figure


def trajectory_figure(summary: dict, path: Path) -> Path:
    """Which point of direct training does each kind's landing behave like? Test-prediction agreement
    and parameter distance of the landing to the direct run's checkpoints, and that run's test accuracy
    beside each kind's landing accuracy; checkpoint steps on a symlog axis (0 is the init)."""
    t = summary["trajectory"]
    steps = t["steps"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for kind, curve in t["agreement"].items():
        axes[0].plot(steps, curve, marker="o", label=kind)
        axes[1].plot(steps, t["distance"][kind], marker="o", label=kind)
        axes[2].axhline(summary["kinds"][kind]["landing_test_acc"]["mean"], ls="--", lw=1,
                        color=axes[0].lines[-1].get_color(), label=f"{kind} landing")
    axes[2].plot(steps, t["test_acc"], marker="o", color="k", label="direct training")
    titles = ("test predictions agreeing with the landing", "||landing - checkpoint||", "test accuracy")
    for ax, title in zip(axes, titles):
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel("direct-training step from the same init")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    axes[2].legend(fontsize=8)
    fig.suptitle(f"landings against direct training from the same inits ({t['inits']} inits, "
                 f"{summary['dataset']} / {summary['arch']})", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def density_figure(grid, densities: dict[str, "torch.Tensor"], counts: dict[str, dict], title: str, path: Path) -> Path:
    """The Hessian's spectral density (stochastic Lanczos quadrature, Gaussian-smoothed) of each group of
    points (init, landing, direct minimum) on one log-scaled axis, the eigenvalue 0 marked; the legend
    gives each group's verdict counts."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    floor = 1e-8  # the density's tails underflow: clip them to show the log axis's useful range
    for group, dens in densities.items():
        c = counts.get(group, {})
        n = next(iter(c.values()), {}).get("n", 0)
        label = f"{group.replace('_', ' ')} ({n} point{'s' if n != 1 else ''}: " + ", ".join(
            f"{v['k']} {name.replace('_', ' ')}" for name, v in c.items()) + ")"
        ax.semilogy(np.asarray(grid), np.clip(np.asarray(dens), floor, None), label=label)
    ax.axvline(0, color="k", lw=0.6, ls=":")
    ax.set_xlabel("Hessian eigenvalue")
    ax.set_ylabel("density (smoothed)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def curve_figure(summary: dict, context: str, path: Path) -> Path:
    """One basin or two: the mean loss over the landings along the straight line and along the trained curve
    landing (t = 0) -> direct minimum (t = 1), train and test side by side; the titles give each path's barrier
    (mean over the landings with its 95% interval)."""
    t = np.asarray(summary["t"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharex=True)
    for ax, split in zip(axes, ("train", "test")):
        for name, label, style in (("line", "straight line", "--"), ("curve", f"{summary['kind']} curve", "-")):
            b = summary["barriers"][f"barrier_{name}_{split}"]
            ax.plot(t, summary[f"{name}_{split}_loss"], style, marker="o", ms=3,
                    label=f"{label}: barrier {b['mean']:.3g} [{b['lo']:.3g}, {b['hi']:.3g}]")
        ax.set_xlabel("t (0: landing, 1: direct minimum)")
        ax.set_ylabel(f"{split} loss (mean over {summary['landings']} landings)")
        ax.legend(fontsize=7)
    return _save(fig, path, f"Loss along the paths landing -> direct minimum ({context})")
