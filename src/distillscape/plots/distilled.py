"""The distilled batch: its images with their soft labels (one figure, or pages of a large batch), and
the distillation's logged learning curves (metrics.csv)."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from ..data import to_pixels
from ..inner import label_distribution
from .common import _titled, save_figure


def _lr_text(lrs) -> str:
    lr = lrs.detach().cpu().flatten()
    return f"{lr.item():.4g}" if lr.numel() == 1 else f"{lr.numel()} rates, {lr.min():.3g}..{lr.max():.3g}"


def distilled_figure(images, labels, lrs, mean, std, inner_loss: str, classes=None, path=None,
                     max_cols: int = 5, first_index: int = 0, total: int | None = None, context: str = ""):
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
    fig.suptitle(_titled(context, f"{shown}, inner lr {_lr_text(lrs)}"), fontsize=10, y=1 - 0.12 / height)
    # fixed margins instead of tight_layout, which costs seconds per page of 40 axes
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.25 / height, top=1 - 0.5 / height, wspace=0.45, hspace=0.5)
    if path is not None:
        save_figure(fig, path)
    return fig


def distilled_pages(images, labels, lrs, mean, std, inner_loss: str, out_dir, classes=None,
                    per_page: int = 20, stem: str = "distilled", context: str = "") -> list[Path]:
    """The distilled batch as pages of `per_page` images (<stem>_p01.png, ...): 100 images stay readable."""
    n = images.shape[0]
    paths = []
    for p, start in enumerate(range(0, n, per_page), 1):
        path = Path(out_dir) / f"{stem}_p{p:02d}.png"
        fig = distilled_figure(images[start:start + per_page], labels[start:start + per_page], lrs, mean, std,
                               inner_loss, classes=classes, path=path, first_index=start, total=n, context=context)
        plt.close(fig)
        paths.append(path)
    return paths


def learning_curves_figure(csv_path, title: str, path=None):
    """A distillation's logged curves (Lightning's csv/metrics.csv: a row per logging step, a column per
    metric, empty where a row has no value) against the step: a panel each for losses, accuracies (a mean
    over inits with its min..max band), the learned inner learning rate and any other curve; the
    direct-baseline curves left out (their own axis)."""
    import csv

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    series: dict[str, tuple[list[float], list[float]]] = {}
    for row in rows:
        step = row.get("step")
        if not step:
            continue
        for key, value in row.items():
            if key in ("step", "epoch") or not value or key.startswith("direct/"):
                continue
            try:
                v = float(value)
            except ValueError:
                continue
            if math.isfinite(v):
                xs, ys = series.setdefault(key, ([], []))
                xs.append(float(step))
                ys.append(v)
    # curves only: metrics logged at least twice (the test and baseline numbers, logged once at the end, are
    # in the tables), and a mean's spread as a band around it rather than lines of its own
    spread = {k: series.pop(k) for k in list(series) if k.endswith(("_std", "_min", "_max", "_inits"))}
    series = {k: v for k, v in series.items() if len(v[0]) >= 2}
    panels = {"losses": [k for k in series if "loss" in k.rsplit("/", 1)[-1]],
              "accuracies": [k for k in series if "acc" in k.rsplit("/", 1)[-1]],
              "inner learning rate": [k for k in series if "lr" in k.rsplit("/", 1)[-1]]}
    used = {k for keys in panels.values() for k in keys}
    panels["other"] = [k for k in series if k not in used]
    panels = {name: keys for name, keys in panels.items() if keys}
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.6 * max(1, len(panels)), 3.6), squeeze=False)
    for ax, (name, keys) in zip(axes[0], panels.items()):
        for key in keys:
            xs, ys = series[key]
            line, = ax.plot(xs, ys, marker="o" if len(xs) <= 12 else None, ms=3, label=key)
            base = key.removesuffix("_mean")
            lo, hi = spread.get(f"{base}_min"), spread.get(f"{base}_max")
            if key.endswith("_mean") and lo and hi and lo[0] == xs and hi[0] == xs:
                ax.fill_between(xs, lo[1], hi[1], color=line.get_color(), alpha=0.15, lw=0,
                                label=f"{base} min..max over inits")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("outer step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    if not panels:
        axes[0, 0].text(0.5, 0.5, "no metric logged more than once in metrics.csv", ha="center", va="center")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig
