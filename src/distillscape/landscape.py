"""Cost surfaces: the true-task and distilled-data cost around a point of parameter space.

A sweep is a centre (flat parameter vector), one or two directions and a grid of coordinates. The
`LandscapeModule` is an analysis LightningModule whose "dataset" is that grid: every predict step
takes a chunk of grid points, builds their parameters as `centre + coords @ directions` and evaluates
each on every cost (true-task train / test loss and accuracy, the distilled batch's inner loss, ...).
The data lives on the device as buffers, moved there once; points are evaluated functionally
(`torch.func.functional_call`): vmapped over a chunk of points, or one point after another with the
weights as they are or with 4-D (conv) weights in channels-last memory format, and with the data in
forwards of `data_batch` or of a few hundred examples: whichever measured fastest on the first points.
(On CPU, channels-last convolutions on cache-sized batches ran ~2.5x faster than the default here.)

A grid can be cut into shards (contiguous ranges of the flattened grid). Each shard's values are
written atomically to shards/shard_IIII_of_NNNN.npz; a rerun skips the shards already there, and
`merge_shards` assembles surface.npz once all are present.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.func import functional_call, vmap  # noqa: E402
from lightning.pytorch.utilities.exceptions import SIGTERMException  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from .artifacts import ArtifactError, atomic_write  # noqa: E402
from .geometry import points, unflatten, unflatten_stack  # noqa: E402
from .inner import Params, accuracy_and_loss, inner_loss, timed  # noqa: E402
from .models import channels_last_params, features_channels_last  # noqa: E402

BATCHINGS = ("auto", "vmap", "loop", "channels_last")
SMALL_DATA_BATCH = 128  # a forward whose activations stay in a CPU's cache; one of the measured candidates
MEASURE_POINTS = 4      # grid points that batching=auto times each candidate path on


@dataclass
class CostSet:
    """One cost function of a sweep: data and how to score a model on it.

    kind "ce": cross-entropy and accuracy on labelled images (metrics name/loss, name/acc);
    kind "inner": the inner loss a distilled batch trains with, `targets` being its label vectors
    (metric name/loss)."""
    name: str
    x: torch.Tensor
    y: torch.Tensor
    kind: str = "ce"
    inner_loss: str = "mse"

    @property
    def metrics(self) -> list[str]:
        return [f"{self.name}/loss", f"{self.name}/acc"] if self.kind == "ce" else [f"{self.name}/loss"]


class LandscapeModule(L.LightningModule):
    """Evaluates grid points `centre + coords @ directions` on every cost set, in predict steps.

    like: the swept tensors' names and shapes (for unflatten); frozen: tensors held fixed at every
    point (buffers not swept). batching: "vmap" (a chunk of points per forward), "loop" (one point
    per forward), "channels_last" (loop, conv weights in channels-last format) or "auto" (time them on
    the first chunk, also at a cache-sized data batch, and keep the fastest). data_batch: examples per
    forward of one point; with vmap the chunk's points share it (data_batch // points each).
    """

    def __init__(self, net: nn.Module, centre: torch.Tensor, directions: torch.Tensor, like: Params,
                 costs: list[CostSet], frozen: Params | None = None, batching: str = "auto",
                 data_batch: int = 4096):
        super().__init__()
        if batching not in BATCHINGS:
            raise ValueError(f"batching={batching!r}; allowed: {', '.join(BATCHINGS)}")
        # a copy of its own: ReLUs in place (it only ever evaluates, without autograd) save their
        # output's allocation, and channels_last is toggled per path
        self.net, self.batching, self.data_batch = copy.deepcopy(net), batching, data_batch
        for m in self.net.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = True
        self.like = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in like.items()}
        self.costs = costs
        self.register_buffer("centre", centre.detach().clone(), persistent=False)
        self.register_buffer("directions", directions.detach().clone(), persistent=False)
        for i, c in enumerate(costs):  # buffers: the Trainer moves the data to the device once
            self.register_buffer(f"cost{i}_x", c.x, persistent=False)
            self.register_buffer(f"cost{i}_y", c.y, persistent=False)
        self._frozen_names = list(frozen or {})
        for i, (k, v) in enumerate((frozen or {}).items()):
            self.register_buffer(f"frozen{i}", v.detach().clone(), persistent=False)
        self.timings: dict[str, float] = {}

    @property
    def metric_names(self) -> list[str]:
        return [m for c in self.costs for m in c.metrics]

    def _data(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"cost{i}_x"), getattr(self, f"cost{i}_y")

    def _frozen(self) -> Params:
        return {k: getattr(self, f"frozen{i}") for i, k in enumerate(self._frozen_names)}

    def forward_one(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.net, (params, self._frozen()), (x,))

    # -- the two ways to evaluate a chunk of points ---------------------------------------------
    @torch.no_grad()
    def evaluate(self, vecs: torch.Tensor, batching: str, max_examples: int | None = None) -> dict[str, torch.Tensor]:
        """Every metric at every point of `vecs` [M, D]: name -> tensor [M] (float64).
        max_examples truncates each cost's data (only for timing the paths)."""
        if batching == "channels_last":
            with features_channels_last(self.net):
                return self._evaluate(vecs, batching, max_examples)
        return self._evaluate(vecs, batching, max_examples)

    def _evaluate(self, vecs: torch.Tensor, batching: str, max_examples: int | None) -> dict[str, torch.Tensor]:
        if batching == "vmap":
            stack = unflatten_stack(vecs, self.like)
            fwd = vmap(self.forward_one, in_dims=(0, None))
            logits_of = lambda x: fwd(stack, x)  # noqa: E731  [M, B, C]
            batch = max(1, self.data_batch // vecs.shape[0])
            return self._scores(logits_of, batch, vecs.shape[0], max_examples)
        per_point = [self._scores(lambda x, p=self._point(v, batching): self.forward_one(p, x).unsqueeze(0),
                                  self.data_batch, 1, max_examples) for v in vecs]
        return {m: torch.cat([r[m] for r in per_point]) for m in self.metric_names}

    def _point(self, vec: torch.Tensor, batching: str) -> Params:
        p = unflatten(vec, self.like)
        return channels_last_params(p) if batching == "channels_last" else p

    def _scores(self, logits_of, batch: int, m: int, max_examples: int | None) -> dict[str, torch.Tensor]:
        out = {}
        for i, c in enumerate(self.costs):
            x, y = self._data(i)
            if max_examples is not None:
                x, y = x[:max_examples], y[:max_examples]
            if c.kind == "inner":  # a distilled batch is small: one forward, the loss of the whole batch
                logits = logits_of(x)
                out[f"{c.name}/loss"] = torch.stack([inner_loss(l, y, c.inner_loss) for l in logits]).double()
                continue
            correct = torch.zeros(m, dtype=torch.float64, device=x.device)
            loss = torch.zeros(m, dtype=torch.float64, device=x.device)
            for s in range(0, len(y), batch):
                cor, lo = accuracy_and_loss(logits_of(x[s:s + batch]), y[s:s + batch])
                correct += cor
                loss += lo.double()
            out[f"{c.name}/loss"], out[f"{c.name}/acc"] = loss / len(y), correct / len(y)
        return out

    def measure_batching(self, vecs: torch.Tensor) -> str:
        """Time every path on the first few of these points (on the same data_batch examples each; the
        first call of each is a warm-up), the loop paths also at a cache-sized data batch; keep the
        fastest path and its data batch. Returns the path; `timings` holds every measurement.

        Four points are enough: a vmapped forward holds data_batch examples whatever the number of
        points, and on a 10k-image MNIST grid timing the whole first chunk of 16 points on 2 x data_batch
        examples cost ~150 s per surface, longer than some grids themselves."""
        vecs = vecs[:MEASURE_POINTS]
        configured = self.data_batch
        candidates = [("vmap", configured), ("loop", configured), ("channels_last", configured)]
        if SMALL_DATA_BATCH < configured:
            candidates += [("loop", SMALL_DATA_BATCH), ("channels_last", SMALL_DATA_BATCH)]
        best = None
        for path, data_batch in candidates:
            self.data_batch = data_batch
            took = timed(lambda: self.evaluate(vecs, path, configured), vecs.device)
            self.timings[f"{path}@{data_batch}"] = took
            if best is None or took < best[0]:
                best = (took, path, data_batch)
        _, path, self.data_batch = best
        return path

    def on_predict_batch_start(self, batch, batch_idx, dataloader_idx=0):
        # Lightning's SIGTERM handler only sets a flag, which its fit and evaluation loops read and its
        # predict loop does not: without this a terminated sweep ran on to the end of its grid
        if self.trainer.received_sigterm:
            raise SIGTERMException()

    def predict_step(self, batch, batch_idx):
        index, coords = batch
        vecs = points(self.centre, self.directions, coords)
        if self.batching == "auto":
            self.batching = self.measure_batching(vecs)
        return {"index": index, **self.evaluate(vecs, self.batching)}


# -- grids, shards, merge ---------------------------------------------------------------------------
def grid_axes(ranges: list[list[float]], resolution: list[int]) -> list[torch.Tensor]:
    """Evenly spaced coordinates per axis (float64, both ends included)."""
    return [torch.linspace(float(lo), float(hi), int(n), dtype=torch.float64) for (lo, hi), n in zip(ranges, resolution)]


def shard_range(n_points: int, shard: int, num_shards: int) -> tuple[int, int]:
    """Contiguous [start, stop) of the flattened grid that shard `shard` of `num_shards` covers."""
    bounds = np.linspace(0, n_points, num_shards + 1).round().astype(int)
    return int(bounds[shard]), int(bounds[shard + 1])


def shard_path(sweep_dir, shard: int, num_shards: int) -> Path:
    return Path(sweep_dir) / "shards" / f"shard_{shard:04d}_of_{num_shards:04d}.npz"


def fingerprint(centre: torch.Tensor, directions: torch.Tensor, axes: list[torch.Tensor], metrics: list[str],
                extra: dict | None = None) -> str:
    """What a shard was computed for: shards of a different sweep in the same directory are refused."""
    h = hashlib.sha256()
    for t in (centre, directions, *axes):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps([metrics, extra or {}], sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def write_npz(path, arrays: dict[str, np.ndarray]) -> Path:
    def w(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a path
            np.savez(f, **arrays)
    return atomic_write(path, w)


def read_npz(path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError) as e:
        raise ArtifactError(f"{path} is not a readable .npz ({e}); delete it and rerun the sweep to recompute it") from None


def finished_shard(path: Path, fp: str) -> bool:
    """True if `path` holds this sweep's shard; a shard of another sweep is an error."""
    if not path.exists():
        return False
    found = str(read_npz(path).get("fingerprint", ""))
    if found != fp:
        raise ArtifactError(f"{path} belongs to a different sweep (fingerprint {found}, this one {fp}); "
                            f"write this sweep elsewhere (landscape.out_dir=...) or delete {path.parent}")
    return True


def compute_shard(module: LandscapeModule, trainer: L.Trainer, coords: torch.Tensor, shard: int, num_shards: int,
                  sweep_dir, fp: str, points_per_batch: int) -> tuple[Path, bool]:
    """Evaluate one shard of the grid (unless already done) and write it atomically.
    Returns (path, computed_now).

    With a multi-device Trainer (e.g. trainer.devices=2 trainer.strategy=ddp) every process runs this:
    Lightning's distributed sampler deals the shard's points out among the processes, each writes
    the points it computed to a part file, and rank 0 assembles the shard from the parts."""
    path = shard_path(sweep_dir, shard, num_shards)
    if finished_shard(path, fp):
        return path, False
    start, stop = shard_range(len(coords), shard, num_shards)
    ds = TensorDataset(torch.arange(start, stop), coords[start:stop].float())
    loader = DataLoader(ds, batch_size=max(1, points_per_batch), shuffle=False)
    preds = trainer.predict(module, dataloaders=loader, return_predictions=True) if len(ds) else []
    arrays = {"index": (torch.cat([p["index"].cpu() for p in preds]) if preds else torch.zeros(0, dtype=torch.long)).numpy(),
              "fingerprint": np.array(fp), "batching": np.array(module.batching), "data_batch": np.array(module.data_batch)}
    for m in module.metric_names:
        arrays[m] = (torch.cat([p[m].cpu() for p in preds]).numpy() if preds else np.zeros(0))
    world = trainer.world_size if len(ds) else 1
    if world == 1:
        write_npz(path, arrays)
        return path, True
    rank = trainer.global_rank
    write_npz(path.with_name(f"{path.stem}.rank{rank}of{world}.npz"), arrays)
    trainer.strategy.barrier()
    if rank == 0:
        parts = [path.with_name(f"{path.stem}.rank{r}of{world}.npz") for r in range(world)]
        read = [read_npz(q) for q in parts]
        order = np.argsort(np.concatenate([r["index"] for r in read]), kind="stable")
        merged = {k: np.concatenate([r[k] for r in read])[order] for k in ["index", *module.metric_names]}
        merged.update({"fingerprint": np.array(fp), "batching": np.array(" ".join(sorted({str(r["batching"]) for r in read}))),
                       "data_batch": arrays["data_batch"], "processes": np.array(world)})
        write_npz(path, merged)
        for q in parts:
            q.unlink()
    trainer.strategy.barrier()  # no process reads the shard before it is whole
    return path, True


def missing_shards(sweep_dir, num_shards: int, fp: str) -> list[int]:
    return [i for i in range(num_shards) if not finished_shard(shard_path(sweep_dir, i, num_shards), fp)]


def merge_shards(sweep_dir, num_shards: int, fp: str, axes: list[torch.Tensor], metrics: list[str],
                 meta: dict[str, np.ndarray]) -> Path:
    """Assemble surface.npz from all shards: axis0 (, axis1), one grid-shaped array per metric,
    plus `meta` (names of centre and directions, marked points...)."""
    shape = tuple(len(a) for a in axes)
    n = int(np.prod(shape))
    values = {m: np.full(n, np.nan) for m in metrics}
    seen = np.zeros(n, dtype=bool)
    for i in range(num_shards):
        path = shard_path(sweep_dir, i, num_shards)
        if not finished_shard(path, fp):
            raise ArtifactError(f"{path} is missing; run shard={i} num_shards={num_shards} before merging")
        part = read_npz(path)
        for m in metrics:
            values[m][part["index"]] = part[m]
        seen[part["index"]] = True
    if not seen.all():
        raise ArtifactError(f"shards in {sweep_dir} leave {int((~seen).sum())} grid points uncovered; delete them and rerun")
    arrays = {f"axis{i}": a.numpy() for i, a in enumerate(axes)}
    arrays.update({m: v.reshape(shape) for m, v in values.items()})
    arrays.update(meta)
    arrays["metrics"] = np.array(metrics)
    arrays["fingerprint"] = np.array(fp)
    return write_npz(Path(sweep_dir) / "surface.npz", arrays)


# -- figures ------------------------------------------------------------------------------------------
def surface_figure(surface: dict[str, np.ndarray], metric: str, log_scale: bool = True, path=None):
    """Contour plot (plane) or line plot (line) of one metric, with the marked points at their
    coordinates (hollow markers: the point lies off the plane, at its projection)."""
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
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    return fig


def surface_summary(surface: dict[str, np.ndarray], metric: str) -> dict[str, float]:
    """Value at the centre (the grid point nearest the origin), the grid minimum and where it is:
    whether the surface has its minimum at the centre is what the 2x2 and sanity checks ask."""
    v = surface[metric]
    axes = [surface[f"axis{i}"] for i in range(v.ndim)]
    origin = tuple(int(np.abs(a).argmin()) for a in axes)
    best = np.unravel_index(np.nanargmin(v) if metric.endswith("/loss") else np.nanargmax(v), v.shape)
    out = {"centre": float(v[origin]), "best": float(v[best])}
    out.update({f"best_axis{i}": float(axes[i][best[i]]) for i in range(v.ndim)})
    return out
