"""Cost surfaces: the true-task and distilled-data cost around a point of parameter space.

A sweep is a centre (flat parameter vector), one or two directions and a grid of coordinates. The
`LandscapeModule` is an analysis LightningModule whose "dataset" is that grid: every predict step
takes a chunk of grid points, builds their parameters as `centre + coords @ directions` and evaluates
each on every cost (true-task train / test loss and accuracy, the distilled batch's inner loss, ...).
The data lives on the device as buffers, moved there once; points are evaluated functionally
(`torch.func.functional_call`): vmapped over a chunk of points, or one point after another with the
weights as they are or with 4-D (conv) weights in channels-last memory format, and with the data in
forwards of `data_batch` or of 128 examples: `batching=auto` takes the path `batching_rule` gives for the
net and the device, a pure function of them (never a timing: the paths round differently, and a surface
must not depend on which was faster that day). (On CPU, channels-last convolutions on cache-sized
batches ran ~2.5x faster than the default here.)

What a point is measured on is a list of costs (`costs.Cost`: cross-entropy on labelled data, the inner
loss of a distilled batch, ...); the module hands each the chunk's models and takes back one value per
point and metric, whatever the cost computes.

A grid can be cut into shards (contiguous ranges of the flattened grid). Each shard's values are
written atomically to shards/shard_IIII_of_NNNN.npz (by a Lightning prediction writer, at the end of
the shard's predict run); a rerun skips the shards already there, and `merge_shards` assembles
surface.npz once all are present. Figures of a surface are drawn in `plots`.
"""
from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

from .costs import Cost, Models, OneModel, StackedModels
from .errors import ArtifactError
from .geometry import points
from .config import PRECISIONS
from .inner import CHANNELS_LAST_EXAMPLES, PRECISION_DTYPES, InnerLoop, eval_path_rule
from .models import channels_last_params, features_channels_last, fused_conv_relu
from .params import Params, unflatten, unflatten_stack
from .resume import claim, matches
from .stats import average_ranks, precision_difference, rank_correlation  # noqa: F401  (rank_correlation: for report.surfaces)
from .surface import SURFACE_FILE, axes_of, centre_index, read_npz, write_npz

BATCHINGS = ("auto", "vmap", "loop", "channels_last")
# a forward runs in PRECISION_DTYPES[precision]; losses and counts are always reduced in float32 and summed in float64
SMALL_DATA_BATCH = CHANNELS_LAST_EXAMPLES["fp32"]  # a forward whose activations stay in a CPU's cache


def batching_rule(net: nn.Module, example_bytes: int, device_type: str, data_batch: int,
                  precision: str = "fp32") -> tuple[str, int]:
    """The path and examples per forward of `batching=auto`, a pure function of the net, the bytes of its
    layer outputs per example, the device kind, data_batch and the precision: where evaluation runs models
    one at a time with channels-last weights (`inner.eval_path_rule`: on a CPU, conv nets with large layer
    outputs), channels-last on forwards of `inner.CHANNELS_LAST_EXAMPLES[precision]` examples (at most data_batch;
    128 in fp32, which measured fastest for simple_convnet on MNIST, README: 2.00 s against 5.97 s vmapped;
    512 in bf16); otherwise vmapped over the chunk's points with data_batch examples per forward.
    bench/bench_paths.py times every path on the machine at hand."""
    if eval_path_rule(net, example_bytes, device_type) == "channels_last":
        return "channels_last", min(CHANNELS_LAST_EXAMPLES[precision], data_batch)
    return "vmap", data_batch


class LandscapeModule(L.LightningModule):
    """Evaluates grid points `centre + coords @ directions` on every cost, in predict steps.

    like: the swept tensors' names and shapes (for unflatten); frozen: tensors held fixed at every
    point (buffers not swept). batching: "vmap" (a chunk of points per forward), "loop" (one point
    per forward), "channels_last" (loop, conv weights in channels-last format) or "auto" (`batching_rule`
    for the net and the device, resolved by `resolve_batching` before the first point). data_batch: examples
    per forward of one point; with vmap the chunk's points share it (data_batch // points each).
    """
    progress_unit = "grid chunks"  # what the progress display counts (tasks/progress.py)

    def __init__(self, net: nn.Module, centre: torch.Tensor, directions: torch.Tensor, like: Params,
                 costs: list[Cost], frozen: Params | None = None, batching: str = "auto",
                 data_batch: int = 4096, precision: str = "fp32"):
        super().__init__()
        if batching not in BATCHINGS:
            raise ValueError(f"batching={batching!r}; allowed: {', '.join(BATCHINGS)}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r}; allowed: {', '.join(PRECISIONS)}")
        self.precision = precision
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
        self._cost_keys = []
        for i, c in enumerate(costs):  # buffers: the Trainer moves each cost's tensors to the device once
            tensors = c.tensors()
            self._cost_keys.append(list(tensors))
            for k, t in tensors.items():
                self.register_buffer(f"cost{i}_{k}", t, persistent=False)
        self._frozen_names = list(frozen or {})
        for i, (k, v) in enumerate((frozen or {}).items()):
            self.register_buffer(f"frozen{i}", v.detach().clone(), persistent=False)

    @property
    def metric_names(self) -> list[str]:
        return [m for c in self.costs for m in c.metrics]

    def _data(self, i: int) -> dict[str, torch.Tensor]:
        return {k: getattr(self, f"cost{i}_{k}") for k in self._cost_keys[i]}

    def _frozen(self) -> Params:
        return {k: getattr(self, f"frozen{i}") for i, k in enumerate(self._frozen_names)}

    def forward_one(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        dtype = PRECISION_DTYPES[self.precision]
        if dtype == torch.float32:
            return functional_call(self.net, (params, self._frozen()), (x,))
        frozen = {k: v.to(dtype) if v.is_floating_point() else v for k, v in self._frozen().items()}
        x = x.to(dtype) if x.is_floating_point() else x
        return functional_call(self.net, (params, frozen), (x,)).float()

    def _cast(self, p: Params) -> Params:
        """A point's (or a stack's) weights in the forward's dtype, cast once per point, not per data batch."""
        dtype = PRECISION_DTYPES[self.precision]
        return p if dtype == torch.float32 else {k: v.to(dtype) for k, v in p.items()}

    # -- the two ways to evaluate a chunk of points ---------------------------------------------
    @torch.no_grad()
    def evaluate(self, vecs: torch.Tensor, batching: str, max_examples: int | None = None) -> dict[str, torch.Tensor]:
        """Every metric at every point of `vecs` [M, D]: name -> tensor [M] (float64).
        max_examples truncates each cost's data (bench/ times the paths on part of it)."""
        if batching == "channels_last":  # in bf16 on a CPU with each conv's ReLU fused into it (models.fused_conv_relu)
            with features_channels_last(self.net), fused_conv_relu(self.net, self.precision == "bf16" and vecs.device.type == "cpu"):
                return self._evaluate(vecs, batching, max_examples)
        return self._evaluate(vecs, batching, max_examples)

    def _evaluate(self, vecs: torch.Tensor, batching: str, max_examples: int | None) -> dict[str, torch.Tensor]:
        if batching == "vmap":
            models = StackedModels(self.forward_one, self._cast(unflatten_stack(vecs, self.like)), self.data_batch)
            return self._scores(models, max_examples)
        per_point = [self._scores(OneModel(self.forward_one, self._point(v, batching), self.data_batch), max_examples)
                     for v in vecs]
        return {m: torch.cat([r[m] for r in per_point]) for m in self.metric_names}

    def _point(self, vec: torch.Tensor, batching: str) -> Params:
        p = self._cast(unflatten(vec, self.like))
        return channels_last_params(p) if batching == "channels_last" else p

    def _scores(self, models: Models, max_examples: int | None) -> dict[str, torch.Tensor]:
        out = {}
        for i, c in enumerate(self.costs):
            values = c.evaluate(models, self._data(i), max_examples)
            if set(values) != set(c.metrics):
                raise ValueError(f"cost {c.name!r} returned {list(values)}, its metrics are {c.metrics}")
            out.update(values)
        return out

    def resolve_batching(self, device_type: str) -> None:
        """Turn batching=auto into the path and data batch of `batching_rule` for the net on `device_type`
        (a pinned path, or one set from a sweep's finished shards, stays as it is)."""
        if self.batching == "auto":
            examples = [getattr(self, f"cost{i}_{k}") for i, keys in enumerate(self._cost_keys) for k in keys
                        if k in ("x", "obs")]  # what the costs feed the net (none: the episode costs, no conv net)
            size = InnerLoop(self.net).activation_bytes(examples[0]) if examples else 0
            self.batching, self.data_batch = batching_rule(self.net, size, device_type, self.data_batch, self.precision)

    def on_predict_batch_start(self, batch, batch_idx, dataloader_idx=0):
        # Lightning's SIGTERM handler only sets a flag, which its fit and evaluation loops read and its
        # predict loop does not: without this a terminated sweep ran on to the end of its grid
        if self.trainer.received_sigterm:
            raise SIGTERMException()

    def predict_step(self, batch, batch_idx):
        index, coords = batch
        vecs = points(self.centre, self.directions, coords)
        self.resolve_batching(vecs.device.type)
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


def finished_shard(path: Path, fp: str) -> bool:
    """True if `path` holds this sweep's shard (`fp`: `resume.fingerprint` of the centre, directions,
    axes, metrics and what else the values depend on); a shard of another sweep is an error."""
    if not path.exists():
        return False
    found = str(read_npz(path).get("fingerprint", ""))
    return matches(found, fp, "refuse", f"{path} belongs to a different sweep (fingerprint {found}, this one {fp}); "
                                        f"write this sweep elsewhere (landscape.out_dir=...) or delete {path.parent}")


def part_path(path: Path, rank: int, world: int) -> Path:
    """The part of shard `path` that process `rank` of `world` computed."""
    return path.with_name(f"{path.stem}.rank{rank}of{world}.npz")


def shard_arrays(predictions: list[dict[str, torch.Tensor]], module: LandscapeModule, fp: str) -> dict[str, np.ndarray]:
    """A shard's (or a part's) file contents: the grid indices, one array per metric, and how they were computed."""
    arrays = {"index": (torch.cat([p["index"].cpu() for p in predictions]) if predictions
                        else torch.zeros(0, dtype=torch.long)).numpy(),
              "fingerprint": np.array(fp), "batching": np.array(module.batching), "data_batch": np.array(module.data_batch)}
    for m in module.metric_names:
        arrays[m] = torch.cat([p[m].cpu() for p in predictions]).numpy() if predictions else np.zeros(0)
    return arrays


class ShardWriter(BasePredictionWriter):
    """Writes what this process computed of a shard when its predict run ends, atomically: the shard
    itself in a one-process run, else this rank's part file (rank 0 assembles the parts)."""

    def __init__(self, path: Path, fp: str):
        super().__init__(write_interval="epoch")
        self.path, self.fp = path, fp

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        world = trainer.world_size
        write_npz(self.path if world == 1 else part_path(self.path, trainer.global_rank, world),
                  shard_arrays(predictions, pl_module, self.fp))


def assemble_parts(path: Path, world: int, metrics: list[str], fp: str) -> Path:
    """The shard from the part files of its `world` processes, in grid order; the parts are removed."""
    parts = [part_path(path, r, world) for r in range(world)]
    read = [read_npz(q) for q in parts]
    order = np.argsort(np.concatenate([r["index"] for r in read]), kind="stable")
    merged = {k: np.concatenate([r[k] for r in read])[order] for k in ["index", *metrics]}
    merged.update({"fingerprint": np.array(fp), "batching": np.array(" ".join(sorted({str(r["batching"]) for r in read}))),
                   "data_batch": read[0]["data_batch"], "processes": np.array(world)})
    write_npz(path, merged)
    for q in parts:
        q.unlink()
    return path


def compute_shard(module: LandscapeModule, trainer: L.Trainer, coords: torch.Tensor, shard: int, num_shards: int,
                  sweep_dir, fp: str, points_per_batch: int) -> tuple[Path, bool]:
    """Evaluate one shard of the grid (unless already done) and write it atomically.
    Returns (path, computed_now).

    With a multi-device Trainer (e.g. trainer.devices=2 trainer.strategy=ddp) every process runs this:
    Lightning's distributed sampler deals the shard's points out among the processes, each writes
    the points it computed to a part file (`ShardWriter`), and rank 0 assembles the shard from the parts."""
    path = shard_path(sweep_dir, shard, num_shards)
    module.resolve_batching(trainer.strategy.root_device.type)
    if trainer.global_rank == 0:  # a second process on this shard is refused (the other ranks are this run's)
        claim(path, lock_file=path.with_name(f".{path.stem}.lock"), what=f"shard {shard} of {num_shards} in {sweep_dir}")
        for stale in path.parent.glob(f".{path.stem}.*.tmp"):  # this shard's (or its parts') half-written files
            stale.unlink(missing_ok=True)                        # of a killed job: no one else writes them
    if finished_shard(path, fp):
        return path, False
    start, stop = shard_range(len(coords), shard, num_shards)
    if start == stop:  # an empty shard: nothing to compute, nothing to deal out or wait for
        write_npz(path, shard_arrays([], module, fp))
        return path, True
    ds = TensorDataset(torch.arange(start, stop), coords[start:stop].float())
    loader = DataLoader(ds, batch_size=max(1, points_per_batch), shuffle=False)
    callbacks = trainer.callbacks
    trainer.callbacks = [*callbacks, ShardWriter(path, fp)]  # this shard's writer, for this predict run only
    try:
        trainer.predict(module, dataloaders=loader, return_predictions=False)
    finally:
        trainer.callbacks = callbacks
    world = trainer.world_size
    if world == 1:
        return path, True
    trainer.strategy.barrier()
    if trainer.global_rank == 0:
        assemble_parts(path, world, module.metric_names, fp)
    trainer.strategy.barrier()  # no process reads the shard before it is whole
    return path, True


def refuse_other_sweeps(sweep_dir, fp: str) -> None:
    """ConfigError, naming the file, if `sweep_dir` holds a shard (or a process's part of one) of a sweep
    other than `fp`: checked before a job writes anything, so a refused job leaves the directory as it was."""
    for path in sorted((Path(sweep_dir) / "shards").glob("shard_*_of_*.npz")):
        finished_shard(path, fp)


def recorded_batching(sweep_dir, num_shards: int, fp: str) -> tuple[str, int] | None:
    """The path and data batch this sweep's finished shards were computed with (the first that holds
    points), for the shards still to come: a surface is computed one way throughout, also when its
    shards run on different days or machines. None when no shard holds points yet."""
    for i in range(num_shards):
        path = shard_path(sweep_dir, i, num_shards)
        if finished_shard(path, fp):
            part = read_npz(path)
            batching = str(part.get("batching", ""))
            if len(part["index"]) and batching in BATCHINGS[1:]:
                return batching, int(part["data_batch"])
    return None


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
    paths: set[tuple[str, int]] = set()  # how the shards were computed
    for i in range(num_shards):
        path = shard_path(sweep_dir, i, num_shards)
        if not finished_shard(path, fp):
            raise ArtifactError(f"{path} is missing; run shard={i} num_shards={num_shards} before merging")
        part = read_npz(path)
        for m in metrics:
            values[m][part["index"]] = part[m]
        seen[part["index"]] = True
        if len(part["index"]):
            paths.add((str(part.get("batching", "")), int(part.get("data_batch", 0))))
    if not seen.all():
        raise ArtifactError(f"shards in {sweep_dir} leave {int((~seen).sum())} grid points uncovered; delete them and rerun")
    arrays = {f"axis{i}": a.numpy() for i, a in enumerate(axes)}
    arrays.update({m: v.reshape(shape) for m, v in values.items()})
    arrays.update(meta)
    # the path(s) and data batch(es) the values were computed with (one pair unless shards of earlier releases,
    # timed in each job, took different ones)
    arrays["batching"] = np.array(" ".join(sorted({b for b, _ in paths})))
    arrays["data_batch"] = np.array(sorted({d for _, d in paths}))
    arrays["metrics"] = np.array(metrics)
    arrays["fingerprint"] = np.array(fp)
    return write_npz(Path(sweep_dir) / SURFACE_FILE, arrays)


def certificate_sample(surface: dict[str, np.ndarray], metrics: list[str], random_points: int, seed: int,
                       near_best: int = 4) -> np.ndarray:
    """Flat grid indices to recompute in fp32: the point nearest the centre, each loss metric's `near_best`
    lowest points (so the grid minimum can be compared with its rivals) and `random_points` others, drawn
    with `seed`. Sorted, without repeats."""
    shape = surface[metrics[0]].shape
    picked = {int(np.ravel_multi_index(centre_index(axes_of(surface, metrics[0])), shape))}
    for m in metrics:
        if m.endswith("/loss"):
            picked.update(int(i) for i in np.argsort(surface[m].ravel(), kind="stable")[:near_best])
    n = int(np.prod(shape))
    rest = np.setdiff1d(np.arange(n), sorted(picked))
    draw = np.random.default_rng(seed).permutation(rest)[:random_points]
    return np.array(sorted(picked | {int(i) for i in draw}), dtype=np.int64)


def precision_certificate(module: LandscapeModule, surface: dict[str, np.ndarray], coords: torch.Tensor,
                          tolerance: float, random_points: int = 8, seed: int = 0) -> dict:
    """How far a surface computed in `module.precision` (bf16) is from fp32, measured, not assumed: the
    sample points (`certificate_sample`) recomputed in fp32 with the same path and data. Per metric: the
    largest relative difference of a loss (|low - fp32| / |fp32|) or absolute difference of an accuracy,
    a fraction already; the rank correlation over the sample; for a loss, whether its grid minimum is the
    same point in fp32 (the lowest in fp32 of the sampled rivals, or within `tolerance` of it). `passed`:
    every loss within `tolerance` and every minimum kept, every accuracy within `tolerance` absolute."""
    metrics = list(module.metric_names)
    index = certificate_sample(surface, metrics, random_points, seed)
    vecs = points(module.centre, module.directions, coords[index].to(module.centre.device))
    module.resolve_batching(vecs.device.type)  # a merge-only job computed no shard: its path is still `auto`
    low = module.precision
    try:
        module.precision = "fp32"
        exact = {m: v.cpu().numpy() for m, v in module.evaluate(vecs, module.batching).items()}
    finally:
        module.precision = low
    out: dict = {"precision": low, "tolerance": float(tolerance), "points": index.tolist(), "metrics": {}}
    passed = True
    for m in metrics:
        approx, ref = surface[m].ravel()[index], exact[m]
        is_loss = m.endswith("/loss")
        entry = precision_difference(approx, ref, is_loss, tolerance)
        if is_loss:
            best = int(np.nanargmin(surface[m]))
            at = int(np.searchsorted(index, best))
            entry["same_minimum"] = bool(ref[at] <= ref.min() + tolerance * abs(ref.min()))
            entry["passed"] = entry["passed"] and entry["same_minimum"]
        passed = passed and entry["passed"]
        out["metrics"][m] = entry
    out["passed"] = passed
    return out


def surface_summary(surface: dict[str, np.ndarray], metric: str) -> dict[str, float]:
    """Value at the centre (the grid point nearest the origin), the grid minimum and where it is:
    whether the surface has its minimum at the centre is what the 2x2 and sanity checks ask."""
    v = surface[metric]
    axes = axes_of(surface, metric)
    origin = centre_index(axes)
    best = np.unravel_index(np.nanargmin(v) if metric.endswith("/loss") else np.nanargmax(v), v.shape)
    out = {"centre": float(v[origin]), "best": float(v[best])}
    out.update({f"best_axis{i}": float(axes[i][best[i]]) for i in range(v.ndim)})
    return out


# -- comparing two costs of one surface ------------------------------------------------------------------
# each distilled-data cost is compared with each true-task cost it was swept with
TRUE_COSTS = ("train/loss", "test/loss")
DISTILLED_COST = "distilled/loss"


def rank_map(v: np.ndarray) -> np.ndarray:
    """A grid's values as their percentile ranks in [0, 1] (0: the grid's lowest, 1: its highest), in
    the grid's shape: the normalisation of the difference map, under which two costs of different scales
    compare by how they order the grid's points, the order Spearman's correlation measures."""
    v = np.asarray(v, dtype=float)
    return ((average_ranks(v) - 1) / max(v.size - 1, 1)).reshape(v.shape)


def grid_minimum(surface: dict[str, np.ndarray], metric: str) -> np.ndarray:
    """The plane coordinates [k] of a metric's lowest grid point."""
    v = surface[metric]
    best = np.unravel_index(int(np.nanargmin(v)), v.shape)
    return np.array([float(surface[f"axis{i}"][j]) for i, j in enumerate(best)])


def compare_costs(surface: dict[str, np.ndarray], gram: np.ndarray, first: str, second: str) -> dict[str, float]:
    """How alike two costs of one surface are: Spearman's rank correlation over the grid points, and the
    distance between their grid minima in plane coordinates and in parameter norm (||delta @ directions||
    = sqrt(delta^T G delta), G = directions @ directions^T the directions' Gram matrix [k, k])."""
    a, b = grid_minimum(surface, first), grid_minimum(surface, second)
    delta = a - b
    out = {"spearman": rank_correlation(surface[first], surface[second]),
           "minima_distance_plane": float(np.linalg.norm(delta)),
           "minima_distance_params": float(np.sqrt(max(float(delta @ np.asarray(gram, dtype=float) @ delta), 0.0)))}
    out.update({f"minimum_{name.split('/')[0]}_axis{i}": float(x) for name, m in ((first, a), (second, b))
                for i, x in enumerate(m)})
    return out


def cost_comparisons(surface: dict[str, np.ndarray], directions: torch.Tensor) -> dict[str, dict[str, float]]:
    """`compare_costs` of the distilled cost with every true-task cost swept beside it, keyed
    "distilled_vs_train", ...; empty when the surface lacks either."""
    if DISTILLED_COST not in surface:
        return {}
    d = directions.double()
    gram = (d @ d.T).cpu().numpy()
    return {f"distilled_vs_{true.split('/')[0]}": compare_costs(surface, gram, DISTILLED_COST, true)
            for true in TRUE_COSTS if true in surface}


def centre_curvature(surface: dict[str, np.ndarray], metric: str, norms: np.ndarray) -> list[float]:
    """Per axis, the metric's second difference at the grid's centre point over the squared spacing in
    parameter distance, (v(+h) - 2 v(0) + v(-h)) / (h ||d_i||)^2: the directional second derivative along
    direction i at the grid's spacing (for a unit Hessian eigenvector, its eigenvalue up to O(h^2)).
    nan along an axis whose grid does not hold the centre (coordinate 0) with a neighbour on each side."""
    v = surface[metric]
    axes = [surface[f"axis{i}"] for i in range(v.ndim)]
    origin = [int(np.abs(a).argmin()) for a in axes]
    out = []
    for i, a in enumerate(axes):
        j = origin[i]
        spacing = float(a[1] - a[0]) if len(a) > 1 else 0.0
        if not (0 < j < len(a) - 1) or abs(a[j]) > 1e-6 * abs(spacing):
            out.append(float("nan"))
            continue
        at = list(origin)
        values = []
        for k in (j - 1, j, j + 1):
            at[i] = k
            values.append(float(v[tuple(at)]))
        out.append((values[0] - 2 * values[1] + values[2]) / (spacing * float(norms[i])) ** 2)
    return out
