"""Section "What do the cost surfaces show?": surfaces grouped by the landscape job that swept them, and
whether each centre is its plane's minimum."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..landscape import DISTILLED_COST, TRUE_COSTS, grid_minimum, rank_correlation
from ..surface import SURFACE_FILE, axes_of, centre_index, metrics_of
from .reading import RunRecord


def surface_summary(name: str, surface: dict) -> list[str]:
    """Per loss metric of a surface: is the centre the lowest point of the plane?"""
    out = []
    for metric in metrics_of(surface):
        if not metric.endswith("/loss"):
            continue
        v = surface[metric]
        axes = axes_of(surface, metric)
        origin = centre_index(axes)
        best = tuple(int(i) for i in np.unravel_index(np.nanargmin(v), v.shape))
        step = max(float(np.abs(np.diff(a)).min()) for a in axes) if all(len(a) > 1 for a in axes) else 1.0
        where = ", ".join(f"{(x if abs(x) > 1e-6 * step else 0.0):.3g}" for x in (axes[i][best[i]] for i in range(v.ndim)))
        at, low = float(v[origin]), float(v[best])
        if best == origin:
            out.append(f"Around {name}, {metric} is lowest at the centre ({at:.3g}).")
        else:
            out.append(f"Around {name}, {metric} is {at:.3g} at the centre and lowest at ({where}): {low:.3g}, "
                       f"{(at - low) / abs(at) if at else 0:.0%} lower, so the centre is not this plane's minimum "
                       f"of {metric} on this grid.")
    return out


def cost_agreement(name: str, surface: dict) -> list[str]:
    """Per true-task cost swept beside the distilled cost: Spearman's rank correlation of the two over the
    grid (recomputed here from surface.npz) and how far apart their grid minima are in plane coordinates."""
    if DISTILLED_COST not in surface:
        return []
    out = []
    for true in TRUE_COSTS:
        if true not in surface:
            continue
        rho = rank_correlation(surface[DISTILLED_COST], surface[true])
        apart = float(np.linalg.norm(grid_minimum(surface, DISTILLED_COST) - grid_minimum(surface, true)))
        out.append(f"Around {name}, {DISTILLED_COST} and {true} order the plane's {surface[true].size} grid points "
                   f"with Spearman rank correlation {rho:+.2f} (+1: the same order, 0: no monotone relation, -1: "
                   f"the reverse order); their grid minima are {apart:.3g} apart in plane coordinates.")
    return out


@dataclass
class SurfaceGroup:
    """The surfaces one landscape job swept (same directions): centre name -> surface.npz."""
    run: RunRecord
    name: str                   # the group's directory relative to the run ("" for the run dir itself)
    surfaces: dict[str, Path]

    @property
    def key(self) -> str:
        return f"{self.run.label}/{self.name}".rstrip("/")


def surface_groups(runs: list[RunRecord]) -> list[SurfaceGroup]:
    groups = []
    for run in runs:
        by_dir: dict[Path, dict[str, Path]] = {}
        for npz in run.surfaces:
            if npz.name == SURFACE_FILE:
                by_dir.setdefault(npz.parent.parent, {})[npz.parent.name] = npz
        for d, surfaces in by_dir.items():
            name = d.relative_to(run.path).as_posix() if d != run.path else ""
            groups.append(SurfaceGroup(run, "" if name == "." else name, surfaces))
    return groups


def cost_metrics(surface: dict) -> list[str]:
    """The costs a surface holds, losses first: every metric but accuracies (an RL surface's
    `episode/return` is its task's cost, read the other way up)."""
    metrics = metrics_of(surface)
    return [m for m in metrics if m.endswith("/loss")] + [m for m in metrics if not m.endswith(("/loss", "/acc"))]
