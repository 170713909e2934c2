"""Figures of distilled instances (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
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


def distilled_figure(images, labels, lrs, mean, std, inner_loss: str, classes=None, path=None,
                     max_cols: int = 10):
    """Each distilled image in pixel space with its soft label as a bar chart beneath it;
    the learned learning rate(s) in the title."""
    pix = to_pixels(images.detach().cpu(), mean, std)
    dist = label_distribution(labels.detach().cpu(), inner_loss)
    n, c = pix.shape[0], labels.shape[1]
    cols = min(max_cols, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(1.3 * cols, 2.6 * rows),
                             gridspec_kw={"height_ratios": [3, 1.4] * rows}, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        r, col = divmod(i, cols)
        ax = axes[2 * r, col]
        img = pix[i].permute(1, 2, 0).numpy()
        ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                  vmin=0, vmax=1)
        ax.set_title(str(classes[int(dist[i].argmax())]) if classes else str(int(dist[i].argmax())), fontsize=8)
        bx = axes[2 * r + 1, col]
        bx.axis("on")
        bx.bar(range(c), dist[i].numpy(), color=["C3" if j == int(dist[i].argmax()) else "C0" for j in range(c)])
        bx.set_xticks(range(c))
        bx.set_xticklabels([str(j) for j in range(c)], fontsize=5)
        bx.tick_params(axis="y", labelsize=5)
    lr = lrs.detach().cpu().flatten()
    lr_text = f"{lr.item():.4g}" if lr.numel() == 1 else f"{lr.numel()} rates, {lr.min():.3g}..{lr.max():.3g}"
    fig.suptitle(f"{n} distilled images, inner lr {lr_text}", fontsize=10)
    fig.tight_layout()
    if path is not None:
        atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=110, format=Path(path).suffix.lstrip(".") or "png"))
    return fig
