"""Figures on the page: what each run's figure shows and how to read it (captions), the data files it was
drawn from, embedding as data URIs, what the report task drew itself (`Made`), and the vendored plotly.js."""
from __future__ import annotations

import base64
import functools
from dataclasses import dataclass, field
from pathlib import Path

from ..surface import SURFACE_FILE
from .reading import RunRecord


CAPTIONS = {
    "curve": "Mean train and test loss along the straight line (dashed) and along the trained curve (solid) from the "
             "landing (t = 0) to the direct minimum (t = 1); the legend gives each path's barrier (mean [95% interval] "
             "over the landings). Read: a curve that stays low where the line rises joins the two in one basin.",
    "density": "The Hessian's spectral density on the true task (stochastic Lanczos quadrature, Gaussian-smoothed, "
               "log scale), averaged over the points of each group: init, landing, direct minimum. Read: mass left "
               "of 0 is negative curvature; the right edge is the sharpest direction.",
    "distilled": "The distilled batch: each learned image in pixel space beside its soft label (a bar per "
                 "class; red: the largest, which also titles the image). The title gives the learned inner "
                 "learning rate. Read: does each image show its class, and how soft are the labels?",
    "neighbours": "Each row: a distilled image, then its nearest real training images in pixel space (blue "
                  "frames) and in the direct model's feature space (green frames). A neighbour's class is "
                  "red when it is not the distilled image's class. Read: same-class neighbours mean the image "
                  "sits among real images of its class.",
    "likeness": "Likeness statistics (bar: mean over images; whisker: for a rate its 95% Wilson interval, which "
                "stays within 0..1, else the std) of the distilled batch against "
                "random real images and noise, which set the scale; right: every distilled image's cosine to "
                "each real class mean (rows sorted by label; red: similar). Read: distilled bars near the real "
                "ones and far from noise mean real-looking images.",
    "confusion": "Row-normalised test confusion matrices (true class down, predicted across; a dark diagonal "
                 "is a good classifier): the directly trained model, the one-step models pooled, and their "
                 "ensemble. Read: which classes one step confuses that direct training does not.",
    "controls": "Left: test accuracy of networks trained from the landings' inits on random subsets of the training "
                "data, per subset size, beside the landings' interval (band). Right: agreement of the landing with "
                "its accuracy-matched direct-training checkpoint, with the subset networks, of those networks among "
                "themselves, and of the checkpoint with them (95% intervals over inits). Read: early training is "
                "encoded only if the first exceeds the second.",
    "mixing": "One-step test accuracy with k real images per class added to the distilled batch, and of the same "
              "real images alone (95% intervals over inits). Read: where the lines meet, the distilled batch adds "
              "nothing the real images do not carry.",
    "fair_baselines": "Train and test accuracy after one step on random real images with hard labels, with learned "
                      "soft labels and rates, on the distilled batch, and of direct training (95% intervals). Read: "
                      "the gap hard -> learned labels is what the labels carry, learned labels -> distilled what "
                      "the images carry.",
    "recognition": "Accuracy on the distilled images, each labelled by its label's argmax: left, of direct training "
                   "from the held-out inits, step by step, beside its test accuracy; right, of other architectures "
                   "trained directly, by epochs (95% intervals). Read: recognition that peaks early and falls later "
                   "marks an early-training summary.",
    "curvature": "The true task's Hessian trace (left) and top eigenvalue (middle) along direct training from the "
                 "held-out inits (95% intervals over inits; step 0 is the init, the axis symlog), the landings' as a "
                 "band (their 95% interval), the checkpoints the landing matches shaded green (the paired difference "
                 "landing − checkpoint holds 0). Right: the curvature of the distilled batch's own cost (the inner "
                 "loss on it) at the inits and the landings. Read: a band that meets the curve at an early step alone "
                 "places the landing's curvature early in training.",
    "influence": "Change of test loss when the one step is taken without each distilled image (95% intervals over "
                 "inits), sorted. Read: above 0 the image helps.",
    "trajectory": "The one-step landings against direct training on real data from the same inits: left, the "
                  "share of test predictions the landing shares with each direct-training checkpoint; middle, "
                  "the parameter distance to it; right, the run's test accuracy beside each kind's landing "
                  "accuracy (dashed). Step 0 is the init; the axis is symlog. Read: a peak of agreement at an "
                  "early step means one step mimics early training; a rise to the last step, a minimum.",
}


def caption_of(path: Path) -> str:
    stem = path.stem
    key = next((k for k in CAPTIONS if stem.startswith(k)), None)
    if key:
        return CAPTIONS[key]
    if (path.parent / SURFACE_FILE).exists():
        return (f"{stem.replace('_', '/', 1)} over the plane around {path.parent.name} (contours; log10 for "
                f"losses), the marked points at their projections.")
    return f"A figure the run wrote ({stem.replace('_', ' ')})."


# what a run's figure was drawn from, by the figure's name (beside it in the run directory)
FIGURE_DATA = {"distilled": ("distilled.safetensors", "distilled.json"),
               "likeness": ("instances.json",), "neighbours": ("instances.json",), "confusion": ("instances.json",),
               "trajectory": ("landing_stats.json", "landing_stats.csv")}


def data_files(run: RunRecord, path: Path) -> list[Path]:
    """The files a run's figure shows the numbers of, where they exist: a surface's surface.npz, the
    distilled batch's tensors, the instances' or the landing's results."""
    if (path.parent / SURFACE_FILE).exists():
        return [path.parent / SURFACE_FILE]
    names = next((v for k, v in FIGURE_DATA.items() if path.stem.startswith(k)), ())
    here = [run.path / n for n in names if (run.path / n).exists()]
    source = run.results.get("instances.json", {}).get("source")
    if not here and isinstance(source, str):  # the instances' pages of the batch: the batch's own files
        here = [Path(source) / n for n in names if (Path(source) / n).exists()]
    return here


def _figure(run: RunRecord, path: Path, caption: str | None = None) -> dict:
    rel = path.relative_to(run.path).as_posix()
    return {"src": _data_uri(path), "caption": caption or caption_of(path), "file": f"{run.label}/{rel}",
            "alt": f"{path.stem} of {run.identity}", "data": data_files(run, path)}


def _by_stem(run: RunRecord, prefix: str) -> list[Path]:
    return [p for p in run.figures if p.stem.startswith(prefix) and p.parent == run.path]


MIME = {".png": "image/png", ".jpg": "image/jpeg", ".svg": "image/svg+xml"}


@dataclass
class Made:
    """What the report task drew for the page from the runs' files (with `plots`): keyed by
    SurfaceGroup.key / the surface.npz path / the multirun directory."""
    surface_grids: dict[str, Path] = field(default_factory=dict)
    interactive: dict[str, dict] = field(default_factory=dict)   # surface.npz path -> Plotly figure (JSON dict)
    vtk: dict[str, Path] = field(default_factory=dict)           # surface.npz path -> its .vtu
    sweep_figures: dict[str, Path] = field(default_factory=dict)
    curves: dict[str, Path] = field(default_factory=dict)        # run directory -> its learning curves figure
    out: Path | None = None                                      # the report's directory (vtk paths are relative to it)


def _data_uri(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:{MIME[path.suffix.lower()]};base64,{data}"


def _plain_figure(path: Path, caption: str, name: str, data: list[Path] | None = None) -> dict:
    return {"src": _data_uri(path), "caption": caption, "file": name, "alt": caption.split(":")[0],
            "data": list(data or [])}


PLOTLY_BUNDLE = "vendor/plotly-gl3d.min.js"  # plotly.js's 3-D partial bundle, 1.8 of the full 4.8 MB (vendor/README.md)


@functools.lru_cache(maxsize=1)
def plotly_js() -> str:
    """The plotly.js the page inlines: the package's vendored gl3d bundle (every trace the report draws:
    surface, scatter3d)."""
    import importlib.resources

    return (importlib.resources.files("distillscape") / PLOTLY_BUNDLE).read_text(encoding="utf-8")
