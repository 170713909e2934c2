"""Figures of distilled instances and of the landing analysis (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import torch  # noqa: E402

from .artifacts import atomic_write  # noqa: E402


def to_pixels(images: torch.Tensor, mean, std) -> torch.Tensor:
    """Undo the dataset normalization and clip to [0, 1]: what the images look like as pictures."""
    mean = torch.as_tensor(mean).view(1, -1, 1, 1)
    std = torch.as_tensor(std).view(1, -1, 1, 1)
    return (images * std + mean).clamp(0, 1)


def label_distribution(labels: torch.Tensor, inner_loss: str) -> torch.Tensor:
    """What a soft label asks for, as shown to a reader: softmax of logits (soft_ce) or the raw vector (mse)."""
    return torch.softmax(labels, -1) if inner_loss == "soft_ce" else labels


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
