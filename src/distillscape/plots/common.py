"""What every figure module shares: the Agg backend (no display needed; set here, before any pyplot import,
and the package imports this module first), saving a figure atomically, titles led by their context, and the
means-with-95%-intervals error bars of the analyses' summaries."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..artifacts import atomic_write  # noqa: E402


def _titled(context: str, title: str) -> str:
    """A figure title led by what it is of (dataset / architecture / run) when known."""
    return f"{context}: {title}" if context else title


def save_figure(fig, path, dpi: int = 110) -> Path:
    path = Path(path)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png"))


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
