"""The early-training parts of the landing analysis (distillscape.early): accuracy-matched controls, mixing
real images in, leave-one-out influence, recognition of the distilled images, fair baselines, curvature along
direct training. Each figure shows means with their 95% intervals."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .common import _errorbar, _save


def influence_figure(summary: dict, path: Path) -> Path:
    """Per distilled image, the change of test loss when the step is taken without it (95% interval over
    inits), images sorted by it: above 0 the image helps the step, below it harms."""
    rows = sorted(summary["images"], key=lambda d: -d["delta_test_loss"]["mean"])
    fig, ax = plt.subplots(figsize=(max(5.0, 0.18 * len(rows) + 2), 3.4))
    _errorbar(ax, np.arange(len(rows)), [d["delta_test_loss"] for d in rows], color="C0")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(rows)), [f"{d['image']}\n(c{d['class']})" for d in rows], fontsize=6)
    ax.set_xlabel("distilled image (class of its label)")
    ax.set_ylabel("test loss without it − with it")
    return _save(fig, path, f"leave-one-out influence of each distilled image ({summary['inits']} inits, 95% intervals)")


def mixing_figure(summary: dict, path: Path) -> Path:
    """One-step test accuracy against real images per class: the distilled batch with them added, and
    the same real images alone."""
    rows = summary["rows"]
    k = np.array([r["per_class"] for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    _errorbar(ax, k, [r["mixed"]["test_acc"] for r in rows], color="C0", label="distilled + real")
    _errorbar(ax, k, [r["real_alone"]["test_acc"] if r["real_alone"] else None for r in rows], color="C1",
              label="real alone")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("real images per class")
    ax.set_ylabel("one-step test accuracy")
    ax.legend(fontsize=8)
    return _save(fig, path, f"mixing real images into the distilled batch ({summary['inits']} inits, 95% intervals)")


def controls_figure(summary: dict, path: Path) -> Path:
    """Left: the subset controls' test accuracy per subset size beside the landings'. Right: agreement of the
    landing with its accuracy-matched checkpoint, with the controls, and of the controls among themselves."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    fr = summary["fractions"]
    _errorbar(axes[0], [r["fraction"] for r in fr], [r["test_acc"] for r in fr], color="C1", label="subset controls")
    land = summary["landing_test_acc"]
    axes[0].axhspan(land["lo"], land["hi"], color="C0", alpha=0.3, label="landings")
    axes[0].set_xscale("log")
    axes[0].set_xticks([r["fraction"] for r in fr], [f"{r['fraction']:g}" for r in fr])
    axes[0].minorticks_off()
    axes[0].set_xlabel("fraction of the training split")
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=8)
    names = list(summary["agreement"])
    _errorbar(axes[1], np.arange(len(names)), [summary["agreement"][n] for n in names], color="C0")
    axes[1].set_xticks(np.arange(len(names)), [n.replace("_", "\n") for n in names], fontsize=7)
    axes[1].set_ylabel("test predictions agreeing")
    return _save(fig, path, f"accuracy-matched controls (subset {summary['chosen']:g}, {summary['inits']} inits, "
                            f"95% intervals)")


def fair_figure(summary: dict, path: Path) -> Path:
    """Train and test accuracy of each arm: real images with hard labels, with learned labels and rates, the
    distilled batch, and direct training (mean over seeds)."""
    arms = {**summary["arms"], "direct": summary["direct"]}
    fig, ax = plt.subplots(figsize=(6, 3.4))
    x = np.arange(len(arms))
    for i, split in enumerate(("train_acc", "test_acc")):
        _errorbar(ax, x + (i - 0.5) * 0.2, [arms[a][split] for a in arms], color=f"C{i}", label=split.replace("_", " "))
    ax.set_xticks(x, [a.replace("_", "\n") for a in arms], fontsize=7)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    return _save(fig, path, f"fair baselines ({summary['inits']} inits; direct: {summary['direct_seeds']} seeds; 95% intervals)")


def recognition_figure(summary: dict, path: Path) -> Path:
    """Accuracy on the distilled images (labelled by their labels' argmax) of directly trained networks: left,
    along direct training from the held-out inits, beside their test accuracy; right, per architecture
    against training epochs."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    along = summary["along_training"]
    steps = [r["step"] for r in along]
    _errorbar(axes[0], steps, [r["distilled_acc"] for r in along], color="C0", label="on the distilled images")
    _errorbar(axes[0], steps, [r["test_acc"] for r in along], color="k", label="on the test set")
    axes[0].set_xscale("symlog", linthresh=1)
    axes[0].set_xlabel("direct-training step from the held-out inits")
    axes[0].legend(fontsize=8)
    for i, arch in enumerate(dict.fromkeys(r["arch"] for r in summary["archs"])):
        rows = [r for r in summary["archs"] if r["arch"] == arch]
        _errorbar(axes[1], [r["epochs"] for r in rows], [r["distilled_acc"] for r in rows], color=f"C{i}", label=arch)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("epochs of direct training")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_ylabel("accuracy")
    return _save(fig, path, f"recognition of the distilled images ({summary['inits']} inits; {summary['seeds']} "
                            f"networks per architecture; 95% intervals)")


def curvature_along_figure(summary: dict, path: Path) -> Path:
    """Left and middle: the true task's Hessian trace and top eigenvalue along direct training from the held-out
    inits, the landings' as a band (their 95% interval), the checkpoints they match (paired difference holding 0)
    shaded. Right: the curvature of the distilled batch's own cost at the inits and at the landings."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    along, landing, steps = summary["true_task"]["along"], summary["true_task"]["landing"], summary["steps"]
    for ax, key, name in ((axes[0], "trace", "Hessian trace"), (axes[1], "top_eig", "top Hessian eigenvalue")):
        _errorbar(ax, steps, [r[key] for r in along], color="k", label="direct training (true task)")
        land = landing[key]
        if math.isfinite(land["lo"]):
            ax.axhspan(land["lo"], land["hi"], color="C0", alpha=0.25, label="landings (true task)")
        ax.axhline(land["mean"], color="C0", lw=1)
        match = summary["match"][key]
        for s in match.get("matched", []) if match["verdict"] == "matched" else []:
            ax.axvspan(*((s / 1.15, s * 1.15) if s else (-0.2, 0.2)), color="C2", alpha=0.25, lw=0)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(-0.3, max(steps) * 1.5 + 1)
        ax.set_xlabel("direct-training step (0: the init)")
        ax.set_ylabel(f"{name} (true task)")
        where = {"matched": "matches steps " + ", ".join(map(str, match["matched"])), "inconclusive": "inconclusive",
                 "above": "above every checkpoint", "below": "below every checkpoint",
                 "between": "between steps " + "; ".join(f"{a}, {b}" for a, b in match.get("between", []))}
        ax.set_title(f"landing: {where[match['verdict']]}", fontsize=9)
    axes[0].legend(fontsize=7)
    own = summary["distilled_cost"]
    for i, key in enumerate(("trace", "top_eig")):
        _errorbar(axes[2], np.array([0, 1]) + (i - 0.5) * 0.1, [own["init"][key], own["landing"][key]], color=f"C{i + 3}",
                  label=key.replace("top_eig", "top eigenvalue"))
    axes[2].set_yscale("symlog", linthresh=1)  # the cost's curvature can grow by orders of magnitude in the step
    axes[2].set_xticks([0, 1], ["inits", "landings"])
    axes[2].set_xlim(-0.5, 1.5)
    axes[2].set_ylabel(f"distilled batch's own cost ({summary['inner_loss']})")
    axes[2].legend(fontsize=7)
    return _save(fig, path, f"curvature along direct training ({summary['inits']} inits, true task on {summary['examples']} "
                            f"training examples, {summary['probes']} probes; 95% intervals)")
