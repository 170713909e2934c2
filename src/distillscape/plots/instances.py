"""The distilled instances against real data (distillscape-instances): nearest real neighbours, likeness
statistics of distilled / random real / noise batches, confusion matrices."""
from __future__ import annotations

import math
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..stats import wilson_interval
from .common import _titled


def _show(ax, img: torch.Tensor) -> None:
    img = img.permute(1, 2, 0).numpy()
    ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
              vmin=0, vmax=1)


def neighbours_figure(distilled_pix: torch.Tensor, real_pix: torch.Tensor, real_y: torch.Tensor,
                      pixel_nn: torch.Tensor, feature_nn: torch.Tensor, classes: torch.Tensor, names: list[str],
                      first_index: int = 0, context: str = ""):
    """One row per distilled image: the image, its nearest real training images in pixel space, then
    in the direct model's feature space; a neighbour's title is its class (red when not the image's)."""
    n, k = pixel_nn.shape
    cols = 1 + 2 * k
    fig, axes = plt.subplots(n, cols, figsize=(0.95 * cols + 0.6, 1.05 * n + 0.6), squeeze=False,
                             gridspec_kw={"width_ratios": [1.25] + [1] * (2 * k)})
    for r in range(n):
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
        _show(axes[r, 0], distilled_pix[r])
        axes[r, 0].set_ylabel(f"#{first_index + r}: {names[int(classes[r])]}", fontsize=7)
        for j, (space, nn_idx) in enumerate((("pixel", pixel_nn), ("feature", feature_nn))):
            for m in range(k):
                ax = axes[r, 1 + j * k + m]
                i = int(nn_idx[r, m])
                _show(ax, real_pix[i])
                c = int(real_y[i])
                ax.set_title(names[c], fontsize=6, color="black" if c == int(classes[r]) else "C3", pad=2)
                for s in ax.spines.values():
                    s.set_edgecolor("C0" if j == 0 else "C2")
    axes[0, 0].set_title("distilled", fontsize=7)
    height = fig.get_figheight()
    # broken into lines that fit the figure's width: on one line it ran past both edges of a narrow figure
    title = textwrap.fill(_titled(context, f"nearest real training images: the {k} nearest in pixel space "
                                           f"(blue frames), then the {k} nearest in direct-model features "
                                           f"(green frames)"), width=max(30, int(fig.get_figwidth() * 72 / (9 * 0.6))))
    lines = title.count("\n") + 1
    fig.suptitle(title, fontsize=9, y=1 - 0.1 / height)
    # fixed margins: tight_layout over this many axes costs seconds
    fig.subplots_adjust(left=0.6 / fig.get_figwidth(), right=0.99, bottom=0.05 / height,
                        top=1 - (0.4 + 0.16 * lines) / height, wspace=0.12, hspace=0.3)
    return fig


KIND_COLORS = {"distilled": "C3", "random_real": "C0", "noise": "C7"}


STAT_GROUPS = {
    "rates (fraction of images)": ["pixel_nn_same_class", "feature_nn_same_class", "class_mean_nearest_is_own",
                                   "direct_agrees"],
    "cosine to class means": ["class_mean_cosine_own", "class_mean_cosine_best_other"],
    "RMS distance to nearest real": ["pixel_nn_rms", "feature_nn_rms"],
}


def likeness_figure(summary: dict[str, dict[str, dict]], cosine: torch.Tensor, classes: torch.Tensor,
                    names: list[str], context: str = ""):
    """Bar charts of every likeness statistic for distilled / random real / noise batches (mean +- std
    over images), and the distilled images' cosine to every class mean."""
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2), gridspec_kw={"width_ratios": [1.6, 1, 1, 1.3]})
    for g, (ax, (title, keys)) in enumerate(zip(axes, STAT_GROUPS.items())):
        width = 0.8 / len(summary)
        for j, (kind, stats) in enumerate(summary.items()):
            xs = [i + (j - (len(summary) - 1) / 2) * width for i in range(len(keys))]
            means = [stats[k]["mean"] for k in keys]
            # a rate's whisker: its 95% Wilson interval, inside [0, 1]; mean ± std of 0/1 values ran past 1
            yerr = (rate_whiskers([stats[k] for k in keys]) if g == 0 else [stats[k]["std"] for k in keys])
            ax.bar(xs, means, width, yerr=yerr, color=KIND_COLORS.get(kind, f"C{j}"),
                   label=f"{kind} (n={stats[keys[0]]['n']})", capsize=2)
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels([k.replace("_", "\n", 2) for k in keys], fontsize=6)
        ax.set_title(title + (" ± 95% interval" if g == 0 else " ± std"), fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    axes[0].set_ylim(0, 1.0)
    # one legend for all panels, above them: inside a panel it covered the bars
    handles, kinds = axes[0].get_legend_handles_labels()
    fig.legend(handles, kinds, loc="upper center", ncol=len(kinds), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.93))
    order = classes.argsort(stable=True)
    im = axes[3].imshow(cosine[order].numpy(), aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1)
    axes[3].set_xticks(range(len(names)))
    axes[3].set_xticklabels(names, fontsize=6, rotation=90 if max(map(len, names)) > 2 else 0)
    axes[3].set_ylabel("distilled image (by label)", fontsize=7)
    axes[3].set_title("distilled: cosine to class means", fontsize=9)
    axes[3].tick_params(axis="y", labelsize=6)
    fig.colorbar(im, ax=axes[3], fraction=0.05)
    if context:
        fig.suptitle(_titled(context, "likeness to real data"), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.88))  # room for the title and the legend above the panels
    return fig


def rate_whiskers(stats: list[dict]) -> np.ndarray:
    """[2, len(stats)] error bar lengths (below, above the mean) of rates given as {"mean", "n"}: each its
    95% Wilson interval (stats.wilson_interval), so that no whisker leaves [0, 1]."""
    out = np.zeros((2, len(stats)))
    for i, st in enumerate(stats):
        n, mean = st["n"], st["mean"]
        lo, hi = wilson_interval(mean * n, n)
        out[:, i] = (max(0.0, mean - lo), max(0.0, hi - mean)) if math.isfinite(lo) else (0.0, 0.0)
    return out


def confusion_figure(matrices: dict[str, torch.Tensor], names: list[str], context: str = ""):
    """Row-normalized confusion matrices side by side (true class down, predicted across)."""
    fig, axes = plt.subplots(1, len(matrices), figsize=(3.9 * len(matrices), 3.8), squeeze=False)
    c = len(names)
    for ax, (title, cm) in zip(axes[0], matrices.items()):
        rates = cm.float() / cm.sum(1, keepdim=True).clamp_min(1)
        ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
        if c <= 12:
            for i in range(c):
                for j in range(c):
                    ax.text(j, i, f"{rates[i, j]:.2f}".lstrip("0") if rates[i, j] < 1 else "1", ha="center",
                            va="center", fontsize=5.5, color="white" if rates[i, j] > 0.5 else "black")
        ax.set_xticks(range(c))
        ax.set_yticks(range(c))
        ax.set_xticklabels(names, fontsize=6, rotation=90 if max(map(len, names)) > 2 else 0)
        ax.set_yticklabels(names, fontsize=6)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
        ax.set_title(title, fontsize=8)
    if context:
        fig.suptitle(_titled(context, "test confusion matrices"), fontsize=10)
    fig.tight_layout()
    return fig
