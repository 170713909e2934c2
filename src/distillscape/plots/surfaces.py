"""Cost surfaces (surface.npz) as matplotlib figures: one metric's contours (or line), the rank difference
of two costs, and the report's grid of centres x metrics on one colour scale per metric; the marked points
(drawn at their projections, or named as left out when mostly off the plane) and trajectories drawn on them."""
from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from ..landscape import rank_map
from .common import _titled, save_figure


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
