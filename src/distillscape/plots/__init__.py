"""Figures of distilled instances, of the landing analysis and of cost surfaces (matplotlib, Agg
backend: no display needed)."""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import torch  # noqa: E402

from ..artifacts import atomic_write  # noqa: E402
from ..data import to_pixels  # noqa: E402
from ..inner import label_distribution  # noqa: E402
from ..landscape import rank_map  # noqa: E402
from ..stats import wilson_interval  # noqa: E402
from ..surface import metrics_of  # noqa: E402


def _lr_text(lrs) -> str:
    lr = lrs.detach().cpu().flatten()
    return f"{lr.item():.4g}" if lr.numel() == 1 else f"{lr.numel()} rates, {lr.min():.3g}..{lr.max():.3g}"


def _titled(context: str, title: str) -> str:
    """A figure title led by what it is of (dataset / architecture / run) when known."""
    return f"{context}: {title}" if context else title


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


# -- the early-training parts of the landing analysis (distillscape.early) ----------------------------
def _errorbar(ax, x, summaries: list[dict], **kw) -> None:
    """Means with their 95% intervals (the {"mean", "lo", "hi"} summaries of stats.interval)."""
    mean = np.array([d["mean"] if d else np.nan for d in summaries], dtype=float)
    lo = np.array([d["lo"] if d else np.nan for d in summaries], dtype=float)
    hi = np.array([d["hi"] if d else np.nan for d in summaries], dtype=float)
    ax.errorbar(x, mean, yerr=np.nan_to_num(np.stack([mean - lo, hi - mean])), fmt="o", capsize=3, **kw)


def _save(fig, path: Path, title: str) -> Path:
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


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


def surface_figure(surface: dict[str, np.ndarray], metric: str, log_scale: bool = True, path=None, context: str = ""):
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
    left_out = []
    if values.ndim == 2:
        a, b = surface["axis0"], surface["axis1"]
        cs = ax.contourf(a, b, (np.log10(values) if logged else values).T, levels=30, cmap="viridis")
        fig.colorbar(cs, ax=ax, label=f"log10 {metric}" if logged else metric)
        shown, left_out = drawn_marks(surface)
        for k, name, xy, off in shown:
            ax.plot(xy[0], xy[1], marker="o", ms=7, mfc="none" if off > 1e-3 else f"C{k + 1}",
                    mec=f"C{k + 1}", ls="none", label=mark_label(name, off))
        marks = [m[1:] for m in shown]
        if draw_trajectory(ax, surface):
            marks.append(("trajectory",))
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
    ax.set_title(_titled(context, f"{metric} around {surface.get('centre_name', 'centre')}")
                 + (f"\n{not_drawn_text(left_out)}" if left_out else ""), fontsize=9)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def draw_trajectory(ax, surface: dict) -> bool:
    """The trajectory of a trajectory_pca plane (surface.npz's trajectory_coords: its points projected onto
    the plane, in order) as a line with a marker per point, its first point hollow; False when it has none."""
    coords = surface.get("trajectory_coords")
    if coords is None or len(coords) == 0:
        return False
    ax.plot(coords[:, 0], coords[:, 1], color="white", lw=1.2, marker=".", ms=5, mec="black", mfc="white",
            label="trajectory (projected)")
    ax.plot(coords[0, 0], coords[0, 1], marker="s", ms=6, mfc="none", mec="white", ls="none")
    return True


def difference_figure(surface: dict[str, np.ndarray], first: str, second: str, numbers: dict[str, float], path=None):
    """Where two costs of one plane disagree: rank(first) - rank(second), each cost's grid values as
    percentile ranks in [0, 1] (landscape.rank_map), on the fixed scale [-1, 1] (red: the first ranks the
    point higher than the second). Ranks, not values: the costs have different scales, and the order of
    the grid's points is what their Spearman correlation (in the title) measures. Each cost's grid
    minimum is marked."""
    diff = rank_map(surface[first]) - rank_map(surface[second])
    a, b = surface["axis0"], surface["axis1"]
    fig, ax = plt.subplots(figsize=(5.4, 4.4))
    cs = ax.contourf(a, b, diff.T, levels=np.linspace(-1, 1, 21), cmap="RdBu_r", vmin=-1, vmax=1)
    fig.colorbar(cs, ax=ax, label=f"rank({first}) - rank({second})", ticks=np.linspace(-1, 1, 5))
    for k, (metric, marker) in enumerate(((first, "o"), (second, "x"))):
        where = [numbers[f"minimum_{metric.split('/')[0]}_axis{i}"] for i in range(2)]
        ax.plot(*where, marker=marker, ms=9, mew=2, mfc="none", color=f"C{k + 1}", ls="none",
                label=f"grid minimum of {metric}")
    draw_trajectory(ax, surface)
    dirs = [str(d) for d in surface.get("direction_names", [])]
    ax.set_xlabel(dirs[0] if dirs else "axis 0", fontsize=8)
    ax.set_ylabel(dirs[1] if len(dirs) > 1 else "axis 1", fontsize=8)
    ax.legend(fontsize=7)
    ax.set_title(f"{first} against {second} around {surface.get('centre_name', 'centre')}\n"
                 f"Spearman {numbers['spearman']:+.3f}; minima {numbers['minima_distance_params']:.3g} apart "
                 f"(parameter norm)", fontsize=9)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


# -- the report's own figures (made by distillscape-report from the runs' files) -------------------
def _surface_values(surface: dict, metric: str) -> tuple[np.ndarray, bool]:
    """A metric's grid, as log10 when it is a positive loss (the colour scale of a loss spans decades)."""
    v = np.asarray(surface[metric], dtype=float)
    logged = metric.endswith("/loss") and bool(np.all(v > 0))
    return (np.log10(v) if logged else v), logged


def _marks(surface: dict) -> list[tuple[str, np.ndarray, float]]:
    return list(zip([str(n) for n in surface.get("marked_names", [])], surface.get("marked_coords", []),
                    [float(o) for o in surface.get("marked_offplane", [])]))


# a marked point with more than this share of its offset from the centre off the plane is not drawn: its
# projection tells little of where it is and nears the centre as the share nears 1 (off-plane points of
# random planes all sat on the centre's marker); the figure names it instead (`not_drawn_text`)
OFFPLANE_DRAWN = 0.5


def drawn_marks(surface: dict) -> tuple[list[tuple[int, str, np.ndarray, float]], list[tuple[str, np.ndarray, float]]]:
    """The marked points drawn on a plane (in it, or near it), each with its index among all marked points
    (its colour), and those left out (mostly off it)."""
    marks = _marks(surface)
    return ([(k, *m) for k, m in enumerate(marks) if m[2] <= OFFPLANE_DRAWN],
            [m for m in marks if m[2] > OFFPLANE_DRAWN])


def not_drawn_text(left_out, width: int | None = None) -> str:
    """What a figure says of the marked points it leaves out; broken into lines of `width` characters
    where given (a panel's title)."""
    text = ("not drawn, mostly off this plane: " + ", ".join(f"{n} ({off:.0%} off)" for n, _, off in left_out)
            if left_out else "")
    return textwrap.fill(text, width) if width else text


def mark_label(name: str, offplane: float) -> str:
    """A marked point's legend entry: in the plane, or at its projection with the share of its offset
    from the centre that lies off the plane (landscape's `marked_offplane`)."""
    return name if offplane <= 1e-3 else f"{name} (projected; {offplane:.0%} off-plane)"


def surface_grid_figure(surfaces: dict[str, dict], metrics: list[str], title: str, path=None):
    """Cost surfaces as one grid: a row per centre, a column per cost metric, every panel of a column on
    ONE colour scale (log10 for losses), so that the centres can be compared by colour. Marked points
    sit at their projections onto the plane; a hollow marker is a point off the plane (legend: the share
    of its offset from the centre that lies off the plane)."""
    rows = list(surfaces)
    fig, axes = plt.subplots(len(rows), len(metrics), figsize=(4.6 * len(metrics) + 0.6, 3.7 * len(rows) + 0.9),
                             squeeze=False, layout="constrained")
    for j, metric in enumerate(metrics):
        grids = {c: _surface_values(surfaces[c], metric) for c in rows if metric in surfaces[c]}
        finite = np.concatenate([g[np.isfinite(g)].ravel() for g, _ in grids.values()] or [np.zeros(1)])
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        levels = np.linspace(lo, hi if hi > lo else lo + 1e-9, 25)
        cs = None
        for i, centre in enumerate(rows):
            ax = axes[i, j]
            if centre not in grids:
                ax.axis("off")
                continue
            s = surfaces[centre]
            values, logged = grids[centre]
            if values.ndim != 2:  # a line: alpha along it, its marked points as vertical lines
                ax.plot(s["axis0"], values)
                for k, (name, xy, off) in enumerate(_marks(s)):
                    ax.axvline(xy[0], color=f"C{k + 1}", ls="--" if off > 1e-3 else "-", label=mark_label(name, off))
                ax.set_title(f"{metric} along the line from {s.get('centre_name', centre)}", fontsize=9)
                dirs = [str(d) for d in s.get("direction_names", [])]
                ax.set_xlabel(f"alpha ({dirs[0]})" if dirs else "alpha", fontsize=8)
                ax.tick_params(labelsize=7)
                if _marks(s):
                    ax.legend(fontsize=6, loc="upper right", framealpha=0.7)
                continue
            cs = ax.contourf(s["axis0"], s["axis1"], values.T, levels=levels, cmap="viridis")
            shown, left_out = drawn_marks(s)
            draw_trajectory(ax, s)
            for k, name, xy, off in shown:  # C{k + 1}: a point keeps its colour in every panel
                ax.plot(xy[0], xy[1], marker="o", ms=8, mfc="none" if off > 1e-3 else f"C{k + 1}",
                        mec=f"C{k + 1}", mew=2, ls="none", label=mark_label(name, off))
            ax.set_title(f"{metric} around {s.get('centre_name', centre)}", fontsize=9)
            if left_out:  # under the title, within the panel's width
                ax.text(0.5, 1.02, not_drawn_text(left_out, 48), transform=ax.transAxes, ha="center",
                        va="bottom", fontsize=6.5, color="#444")
                ax.set_title(f"{metric} around {s.get('centre_name', centre)}",
                             fontsize=9, pad=6 + 9 * (not_drawn_text(left_out, 48).count("\n") + 1))
            dirs = [str(d) for d in s.get("direction_names", [])]
            ax.set_xlabel(dirs[0] if dirs else "axis 0", fontsize=8)
            ax.set_ylabel(dirs[1] if len(dirs) > 1 else "axis 1", fontsize=8)
            ax.tick_params(labelsize=7)
            if shown:
                ax.legend(fontsize=6, loc="upper right", framealpha=0.7)
        if cs is not None:
            logged = any(lg for _, lg in grids.values())
            bar = fig.colorbar(cs, ax=list(axes[:, j]), label=f"log10 {metric}" if logged else metric, shrink=0.9,
                               format="%.3g")
            bar.locator = MaxNLocator(6)
            bar.update_ticks()
    fig.suptitle(title, fontsize=10)
    if path is not None:
        save_figure(fig, path)
    return fig


MARK_COLORS = ("#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")  # matplotlib's C1.. (the 2-D marks)


def surface_3d(surface: dict, title: str):
    """One cost surface as an interactive 3-D Plotly figure: a surface per metric (log10 for losses), a
    dropdown switching between them, and the marked points (init, landing, minimum, ...) drawn on the
    surface at their projections, named with their distance off the plane."""
    import plotly.graph_objects as go
    from scipy.interpolate import RegularGridInterpolator

    metrics = metrics_of(surface) or [k for k in surface if "/" in k]
    metrics = [m for m in metrics if np.asarray(surface[m]).ndim == 2]
    a, b = np.asarray(surface["axis0"], float), np.asarray(surface["axis1"], float)
    dirs = [str(d) for d in surface.get("direction_names", [])] or ["axis 0", "axis 1"]
    fig, visible = go.Figure(), []
    shown, left_out = drawn_marks(surface)
    for i, metric in enumerate(metrics):
        values, logged = _surface_values(surface, metric)
        label = f"log10 {metric}" if logged else metric
        fig.add_trace(go.Surface(x=a, y=b, z=values.T, colorscale="Viridis", name=label, visible=i == 0,
                                 colorbar={"title": {"text": label}}, hovertemplate="%{x:.3g}, %{y:.3g}: %{z:.4g}"))
        visible.append(metric)
        if shown:
            finite = np.where(np.isfinite(values), values, np.nanmax(np.where(np.isfinite(values), values, -np.inf)))
            at = RegularGridInterpolator((a, b), finite, bounds_error=False, fill_value=None)
            for k, name, xy, off in shown:
                # a legend entry per point, not a text label beside it: labels of nearby points overlapped
                x, y = float(np.asarray(xy, float)[0]), float(np.asarray(xy, float)[1])
                fig.add_trace(go.Scatter3d(
                    x=[x], y=[y], z=at([[x, y]]), mode="markers", visible=i == 0, name=mark_label(name, off),
                    marker={"size": 8, "color": MARK_COLORS[k % len(MARK_COLORS)],
                            "symbol": "circle-open" if off > 1e-3 else "circle", "line": {"width": 2, "color": "black"}},
                    hovertemplate=f"{mark_label(name, off)}<br>%{{x:.3g}}, %{{y:.3g}}: %{{z:.4g}}<extra></extra>"))
                visible.append(metric)
    buttons = [{"label": m, "method": "update",
                "args": [{"visible": [v == m for v in visible]},
                         {"scene.zaxis.title.text": f"log10 {m}" if _surface_values(surface, m)[1] else m}]}
               for m in metrics]
    first = metrics[0] if metrics else ""
    fig.update_layout(
        title={"text": title + (f"<br><sub>{not_drawn_text(left_out)}</sub>" if left_out else ""), "font": {"size": 13}},
        height=600, margin={"l": 10, "r": 10, "t": 60, "b": 10},
        showlegend=bool(shown),  # plotly shows no legend for a single named trace: one marked point kept its name
        legend={"x": 0.0, "y": 0.0, "xanchor": "left", "yanchor": "bottom", "bgcolor": "rgba(255,255,255,0.8)"},
        # the camera further out than plotly's default (1.25, 1.25, 1.25): there the titles of the two
        # bottom axes ran out of the figure
        scene={"camera": {"eye": {"x": 1.55, "y": 1.55, "z": 1.05}},
               "xaxis": {"title": {"text": dirs[0]}}, "yaxis": {"title": {"text": dirs[1] if len(dirs) > 1 else "axis 1"}},
               "zaxis": {"title": {"text": (f"log10 {first}" if first and _surface_values(surface, first)[1] else first)}}},
        updatemenus=[{"buttons": buttons, "direction": "down", "x": 0.0, "xanchor": "left", "y": 1.0,
                      "yanchor": "top", "showactive": True}] if len(metrics) > 1 else [])
    return fig


def surface_vtk(surface: dict, path) -> Path:
    """One cost surface for ParaView: an XML unstructured grid (.vtu, meshio) of quads over the plane's
    grid (z = 0), every metric as point data (and log10 of each loss); "Warp By Scalar" lifts it. The
    marked points go beside it as <stem>_marks.vtu, vertices with their off-plane distance."""
    import meshio

    path = Path(path)
    a, b = np.asarray(surface["axis0"], float), np.asarray(surface["axis1"], float)
    A, B = np.meshgrid(a, b, indexing="ij")
    points = np.column_stack([A.ravel(), B.ravel(), np.zeros(A.size)])
    n0, n1 = len(a), len(b)
    idx = np.arange(n0 * n1).reshape(n0, n1)
    quads = np.column_stack([idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()])
    metrics = metrics_of(surface) or [k for k in surface if "/" in k]
    data = {}
    for m in metrics:
        v = np.asarray(surface[m], float)
        if v.shape == (n0, n1):
            data[m.replace("/", "_")] = v.ravel()
            if m.endswith("/loss") and np.all(v > 0):
                data["log10_" + m.replace("/", "_")] = np.log10(v).ravel()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: meshio.write(tmp, meshio.Mesh(points, [("quad", quads)], point_data=data),
                                                file_format="vtu"))
    marks = _marks(surface)
    if marks:
        pts = np.array([[*np.asarray(xy, float)[:2], 0.0] for _, xy, _ in marks])
        mpath = path.with_name(path.stem + "_marks.vtu")
        atomic_write(mpath, lambda tmp: meshio.write(
            tmp, meshio.Mesh(pts, [("vertex", np.arange(len(marks))[:, None])],
                             point_data={"offplane": np.array([o for *_, o in marks]),
                                         "index": np.arange(len(marks), dtype=float)}), file_format="vtu"))
    return path


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


# -- the atlas (distillscape.report.atlas): one statistic per job, with its 95% interval -------------------------
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
