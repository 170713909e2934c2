"""Figures of distilled instances, of the landing analysis and of cost surfaces (matplotlib, Agg
backend: no display needed)."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import torch  # noqa: E402

from .artifacts import atomic_write  # noqa: E402
from .data import to_pixels  # noqa: E402
from .inner import label_distribution  # noqa: E402


def _lr_text(lrs) -> str:
    lr = lrs.detach().cpu().flatten()
    return f"{lr.item():.4g}" if lr.numel() == 1 else f"{lr.numel()} rates, {lr.min():.3g}..{lr.max():.3g}"


def distilled_figure(images, labels, lrs, mean, std, inner_loss: str, classes=None, path=None,
                     max_cols: int = 5, first_index: int = 0, total: int | None = None):
    """Each distilled image in pixel space with its soft label as a bar chart beside it (the argmax
    bar in red); the learned learning rate(s) in the title. `first_index` / `total` number the images
    when this figure is one page of a larger batch (see `distilled_pages`)."""
    pix = to_pixels(images.detach().cpu(), mean, std)
    dist = label_distribution(labels.detach().cpu(), inner_loss)
    n, c = pix.shape[0], labels.shape[1]
    cols = min(max_cols, n)
    rows = math.ceil(n / cols)
    # every cell is an (image, bar chart) pair of axes side by side
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(2.5 * cols, 1.45 * rows + 0.5),
                             gridspec_kw={"width_ratios": [1, 1.15] * cols}, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    names = [str(k) for k in (classes if classes else range(c))]
    short = max(len(s) for s in names) > 2  # long class names (cifar10) go on the bars as indices
    for i in range(n):
        r, col = divmod(i, cols)
        ax, bx = axes[r, 2 * col], axes[r, 2 * col + 1]
        img = pix[i].permute(1, 2, 0).numpy()
        ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                  vmin=0, vmax=1)
        top = int(dist[i].argmax())
        ax.set_title(f"#{first_index + i}: {names[top]}", fontsize=7)
        bx.axis("on")
        bx.barh(range(c), dist[i].numpy(), color=["C3" if j == top else "C0" for j in range(c)])
        bx.set_yticks(range(c))
        bx.set_yticklabels([str(j) for j in range(c)] if short else names, fontsize=5)
        bx.invert_yaxis()
        bx.xaxis.set_major_locator(MaxNLocator(3))
        bx.tick_params(axis="x", labelsize=5)
        for side in ("top", "right"):
            bx.spines[side].set_visible(False)
    shown = f"images {first_index}..{first_index + n - 1} of {total}" if total and total > n else f"{n} distilled images"
    height = fig.get_figheight()
    fig.suptitle(f"{shown}, inner lr {_lr_text(lrs)}", fontsize=10, y=1 - 0.12 / height)
    # fixed margins instead of tight_layout, which costs seconds per page of 40 axes
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.25 / height, top=1 - 0.5 / height, wspace=0.45, hspace=0.5)
    if path is not None:
        save_figure(fig, path)
    return fig


def distilled_pages(images, labels, lrs, mean, std, inner_loss: str, out_dir, classes=None,
                    per_page: int = 20, stem: str = "distilled") -> list[Path]:
    """The distilled batch as pages of `per_page` images (<stem>_p01.png, ...): 100 images stay readable."""
    n = images.shape[0]
    paths = []
    for p, start in enumerate(range(0, n, per_page), 1):
        path = Path(out_dir) / f"{stem}_p{p:02d}.png"
        fig = distilled_figure(images[start:start + per_page], labels[start:start + per_page], lrs, mean, std,
                               inner_loss, classes=classes, path=path, first_index=start, total=n)
        plt.close(fig)
        paths.append(path)
    return paths


def save_figure(fig, path, dpi: int = 110) -> Path:
    path = Path(path)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png"))


# -- distilled instances (distillscape-instances) --------------------------------------------------
def _show(ax, img: torch.Tensor) -> None:
    img = img.permute(1, 2, 0).numpy()
    ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
              vmin=0, vmax=1)


def neighbours_figure(distilled_pix: torch.Tensor, real_pix: torch.Tensor, real_y: torch.Tensor,
                      pixel_nn: torch.Tensor, feature_nn: torch.Tensor, classes: torch.Tensor, names: list[str],
                      first_index: int = 0):
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
    fig.suptitle(f"nearest real training images: pixel space (blue frames {k}), "
                 f"direct-model features (green frames {k})", fontsize=9, y=1 - 0.1 / height)
    # fixed margins: tight_layout over this many axes costs seconds
    fig.subplots_adjust(left=0.6 / fig.get_figwidth(), right=0.99, bottom=0.05 / height, top=1 - 0.55 / height,
                        wspace=0.12, hspace=0.3)
    return fig


KIND_COLORS = {"distilled": "C3", "random_real": "C0", "noise": "C7"}
STAT_GROUPS = {
    "rates (fraction of images)": ["pixel_nn_same_class", "feature_nn_same_class", "class_mean_nearest_is_own",
                                   "direct_agrees"],
    "cosine to class means": ["class_mean_cosine_own", "class_mean_cosine_best_other"],
    "RMS distance to nearest real": ["pixel_nn_rms", "feature_nn_rms"],
}


def likeness_figure(summary: dict[str, dict[str, dict]], cosine: torch.Tensor, classes: torch.Tensor,
                    names: list[str]):
    """Bar charts of every likeness statistic for distilled / random real / noise batches (mean +- std
    over images), and the distilled images' cosine to every class mean."""
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8), gridspec_kw={"width_ratios": [1.6, 1, 1, 1.3]})
    for ax, (title, keys) in zip(axes, STAT_GROUPS.items()):
        width = 0.8 / len(summary)
        for j, (kind, stats) in enumerate(summary.items()):
            xs = [i + (j - (len(summary) - 1) / 2) * width for i in range(len(keys))]
            ax.bar(xs, [stats[k]["mean"] for k in keys], width, yerr=[stats[k]["std"] for k in keys],
                   color=KIND_COLORS.get(kind, f"C{j}"), label=f"{kind} (n={stats[keys[0]]['n']})", capsize=2)
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels([k.replace("_", "\n", 2) for k in keys], fontsize=6)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    axes[0].legend(fontsize=7)
    axes[0].set_ylim(0, 1.1)  # a rate's std bar past 1 says nothing
    order = classes.argsort(stable=True)
    im = axes[3].imshow(cosine[order].numpy(), aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1)
    axes[3].set_xticks(range(len(names)))
    axes[3].set_xticklabels(names, fontsize=6, rotation=90 if max(map(len, names)) > 2 else 0)
    axes[3].set_ylabel("distilled image (by label)", fontsize=7)
    axes[3].set_title("distilled: cosine to class means", fontsize=9)
    axes[3].tick_params(axis="y", labelsize=6)
    fig.colorbar(im, ax=axes[3], fraction=0.05)
    fig.tight_layout()
    return fig


def confusion_figure(matrices: dict[str, torch.Tensor], names: list[str]):
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
    fig.tight_layout()
    return fig


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


def surface_figure(surface: dict[str, np.ndarray], metric: str, log_scale: bool = True, path=None):
    """Contour plot (plane) or line plot (line) of one metric of a cost surface (the arrays of its
    surface.npz), with the marked points at their coordinates (hollow markers: the point lies off the
    plane, at its projection)."""
    values = surface[metric]
    loss_like = metric.endswith("/loss")
    logged = log_scale and loss_like and np.all(values > 0)
    marks = list(zip(surface.get("marked_names", []), surface.get("marked_coords", []),
                     surface.get("marked_offplane", [])))
    dirs = [str(d) for d in surface.get("direction_names", [])]
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    if values.ndim == 2:
        a, b = surface["axis0"], surface["axis1"]
        cs = ax.contourf(a, b, (np.log10(values) if logged else values).T, levels=30, cmap="viridis")
        fig.colorbar(cs, ax=ax, label=f"log10 {metric}" if logged else metric)
        for k, (name, xy, off) in enumerate(marks):
            ax.plot(xy[0], xy[1], marker="o", ms=7, mfc="none" if off > 1e-3 else f"C{k + 1}",
                    mec=f"C{k + 1}", ls="none", label=f"{name}" + (" (projected)" if off > 1e-3 else ""))
        ax.set_ylabel(dirs[1] if len(dirs) > 1 else "axis 1")
    else:
        a = surface["axis0"]
        ax.plot(a, values, color="C0")
        if logged:
            ax.set_yscale("log")
        ax.set_ylabel(metric)
        for k, (name, xy, off) in enumerate(marks):
            ax.axvline(xy[0], color=f"C{k + 1}", ls="--" if off > 1e-3 else "-", label=name)
    ax.set_xlabel(dirs[0] if dirs else "axis 0")
    if marks:
        ax.legend(fontsize=7)
    ax.set_title(f"{metric} around {surface.get('centre_name', 'centre')}", fontsize=9)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig
