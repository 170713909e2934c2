"""distillscape-landscape: cost surfaces around the points of a distillation run.

Reads a run directory of distillscape-distill (`distilled=<dir>`: distilled.* and direct_minimum.*),
builds the named points (minimum, landing, init, or checkpoint files), the directions of the chosen
`sweep=` config, and sweeps one surface per centre (all centres share the directions), writing
<out_dir>/<centre>/surface.npz, directions.safetensors and one figure per metric.

Sharding: `shard=i num_shards=n` computes only the i-th part of every grid; a Hydra multirun over
shard=0,...,n-1 with a common landscape.out_dir covers it in parallel, a rerun skips finished shards,
and whichever run finds all shards present merges them.
"""
from __future__ import annotations

import json
from pathlib import Path

import hydra
import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch
from omegaconf import DictConfig

from ..artifacts import ArtifactError, load_distilled, read_tensors, write_json, write_tensors
from ..config import ConfigError
from ..direct import load_direct_minimum
from ..geometry import (flatten, grid_coordinates, line_between, norm_tensor_names, plane_through, project,
                        random_direction, reference_plane, swept_state, unflatten)
from ..inner import InitSampler, InnerLoop, unstack
from ..landscape import (CostSet, LandscapeModule, compute_shard, fingerprint, grid_axes, merge_shards,
                         missing_shards, read_npz, surface_figure, surface_summary)
from .common import CONF_DIR, build_datamodule, build_logger, build_trainer, console, net_from_meta, task

NAMED_POINTS = ("minimum", "landing", "init")


class RunPoints:
    """The named points of a distillation run as flat vectors (built on first use).

    minimum: the direct minimum (direct_minimum.safetensors of the run, or landscape.minimum);
    init: the init drawn with landscape.init_seed (the distilled batch's fixed init if it has one);
    landing: that init after the distilled batch's inner steps; any other name: a checkpoint file
    (.safetensors state dict, or a Lightning .ckpt of DirectModule)."""

    def __init__(self, cfg: DictConfig, run: Path, distilled, net):
        self.cfg, self.run, self.distilled, self.net = cfg, run, distilled, net
        self.swept, self.frozen = swept_state(net, cfg.sweep.buffers)
        self.names = list(self.swept)
        self._cache: dict[str, torch.Tensor] = {}

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._cache:
            self._cache[name] = flatten(self._params(name), self.names).detach().clone()
        return self._cache[name]

    def available(self, name: str) -> bool:
        try:
            self[name]
            return True
        except ArtifactError:
            return False

    def _from_state(self, state: dict[str, torch.Tensor], source) -> dict[str, torch.Tensor]:
        try:
            self.net.load_state_dict(state)
        except RuntimeError as e:
            raise ArtifactError(f"{source} does not fit arch {type(self.net).__name__} "
                                f"({str(e).splitlines()[0]}); give a checkpoint of the distilled run's arch") from None
        return swept_state(self.net, self.cfg.sweep.buffers)[0]

    def _params(self, name: str) -> dict[str, torch.Tensor]:
        d = self.distilled
        if name == "init":
            if d.fixed_init is not None:
                return d.fixed_init
            sampler = InitSampler(self.net, d.meta["inner"].get("init_scheme", "default"))
            return unstack(sampler.sample(1, seed=self.cfg.landscape.init_seed), 0)
        if name == "landing":
            loop = InnerLoop(self.net, d.meta["inner"]["loss"])
            init = {k: v for k, v in self._params("init").items()}
            return {k: v.detach() for k, v in loop.run(init, d.images, d.labels, d.lrs).items()}
        if name == "minimum":
            path = Path(self.cfg.landscape.minimum or self.run / "direct_minimum.safetensors")
            if not path.exists():
                raise ArtifactError(f"no direct minimum at {path}: rerun distillscape-distill (it writes one), "
                                    f"or train one with distillscape-train and pass landscape.minimum=<file>")
            load_direct_minimum(path, self.net)
            return swept_state(self.net, self.cfg.sweep.buffers)[0]
        path = Path(name)
        if not path.exists():
            raise ConfigError(f"point {name!r} is neither one of {', '.join(NAMED_POINTS)} nor an existing checkpoint file")
        if path.suffix == ".ckpt":
            state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
            state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
            return self._from_state(state, path)
        return self._from_state(read_tensors(path), path)


def point_label(name: str) -> str:
    return name if name in NAMED_POINTS else Path(name).stem


def build_directions(cfg: DictConfig, pts: RunPoints, centre: str) -> tuple[torch.Tensor, list[str]]:
    """Directions [k, D] and their names, built at `centre` (the sweep's first centre)."""
    s = cfg.sweep
    c = pts[centre]
    gen = torch.Generator().manual_seed(s.seed)
    norm_names = norm_tensor_names(pts.net)

    def eta():
        return flatten(random_direction(unflatten(c, pts.swept), gen, norm_names, s.bias, s.norm), pts.names)

    if s.directions == "random":
        k = len(s.resolution)
        return torch.stack([eta() for _ in range(k)]), [f"random direction {i} (seed {s.seed})" for i in range(k)]
    if s.directions == "through":
        if len(s.through) != 2:
            raise ConfigError(f"sweep.through={list(s.through)} must name the two other points of the plane")
        basis, _ = plane_through(c, pts[s.through[0]], pts[s.through[1]])
        return basis, [f"towards {point_label(s.through[0])} (unit)", f"towards {point_label(s.through[1])}, orthogonalised (unit)"]
    if s.directions == "reference":
        return reference_plane(c, pts[s.towards], eta()), [f"{point_label(s.towards)} - {point_label(centre)}",
                                                           f"random direction (seed {s.seed})"]
    if s.directions == "line":
        return line_between(c, pts[s.towards]), [f"{point_label(s.towards)} - {point_label(centre)}"]
    raise ConfigError(f"sweep.directions={s.directions!r}; choose one of: random, through, reference, line")


def sweep_ranges(cfg: DictConfig, pts: RunPoints, centre: torch.Tensor, directions: torch.Tensor) -> list[list[float]]:
    """sweep.range, or (range: null) the span of the marked points' coordinates plus a margin."""
    s = cfg.sweep
    if s.range is not None:
        ranges = [list(r) for r in s.range]
    else:
        coords = torch.stack([project(pts[p], centre, directions)[0] for p in s.mark if pts.available(p)]
                             + [torch.zeros(len(directions), dtype=centre.dtype)])
        lo, hi = coords.min(0).values, coords.max(0).values
        pad = s.margin * (hi - lo).clamp_min(1e-8)
        ranges = [[float(a), float(b)] for a, b in zip(lo - pad, hi + pad)]
    if len(ranges) != len(directions) or len(s.resolution) != len(directions):
        raise ConfigError(f"sweep.range has {len(ranges)} and sweep.resolution {len(s.resolution)} axes, "
                          f"directions={s.directions} has {len(directions)}: give one [lo, hi] and one count per axis")
    return ranges


def renormalize(x: torch.Tensor, dm, normalization: dict) -> torch.Tensor:
    """Data in the normalization the run was distilled with (a train_subset changes the datamodule's)."""
    if dm.normalization() == normalization:
        return x
    mean = torch.tensor(normalization["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(normalization["std"]).view(1, -1, 1, 1)
    return (dm.denormalize(x) - mean) / std


def build_costs(cfg: DictConfig, run: Path, distilled, dm) -> list[CostSet]:
    s, ls = cfg.sweep, cfg.landscape
    norm = distilled.meta["normalization"]
    kind = distilled.meta["inner"]["loss"]
    train_x, train_y = renormalize(dm.train_x, dm, norm), dm.train_y
    costs = []
    for cost in s.costs:
        if cost == "train":
            x, y = train_x, train_y
            if ls.train_subsample is not None and ls.train_subsample < len(y):
                idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(ls.subset_seed))[:ls.train_subsample]
                x, y = x[idx], y[idx]
            costs.append(CostSet("train", x, y))
        elif cost == "test":
            costs.append(CostSet("test", renormalize(dm.test_x, dm, norm), dm.test_y))
        elif cost == "distilled":
            costs.append(CostSet("distilled", distilled.images, distilled.labels, "inner", kind))
        elif cost == "snapshots":
            snaps = sorted((run / "snapshots").glob("distilled_step*.safetensors"))
            if not snaps:
                raise ArtifactError(f"no snapshots in {run / 'snapshots'}: rerun distillscape-distill with snapshot_every > 0")
            for p in snaps:
                d = load_distilled(p)
                costs.append(CostSet(p.stem, d.images, d.labels, "inner", kind))
        elif cost == "random_batch":
            # the sanity check: a batch shaped like the distilled one, of pure noise, should make no minimum
            g = torch.Generator().manual_seed(ls.random_batch_seed)
            costs.append(CostSet("random_batch", torch.randn(distilled.images.shape, generator=g),
                                 torch.randn(distilled.labels.shape, generator=g), "inner", kind))
        elif cost == "train_subsets":
            perm = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(ls.subset_seed))
            sizes = [n for n in ls.subset_sizes if n <= len(train_y)]
            dropped = [n for n in ls.subset_sizes if n > len(train_y)]
            if dropped:
                console.print(f"train_subsets: {cfg.dataset.name} has {len(train_y)} training images; "
                              f"sizes {dropped} skipped")
            for n in sizes:  # nested: each subset contains the smaller ones
                costs.append(CostSet(f"train_subset{n}", train_x[perm[:n]], train_y[perm[:n]]))
        else:
            raise ConfigError(f"sweep.costs entry {cost!r}; choose from: train, test, distilled, snapshots, "
                              f"random_batch, train_subsets")
    return costs


def log_surface(logger, name: str, figures: dict[str, Path], summary: dict[str, float]) -> None:
    """Scalars to any logger; figures to loggers that take images (TensorBoard, W&B)."""
    if not logger:
        return
    logger.log_metrics({f"{name}/{k}": v for k, v in summary.items()}, step=0)
    try:
        from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
        import matplotlib.image as mpimg

        for metric, path in figures.items():
            if isinstance(logger, WandbLogger):
                logger.log_image(key=f"{name}/{metric}", images=[str(path)])
            elif isinstance(logger, TensorBoardLogger):
                img = mpimg.imread(path)[..., :3]
                logger.experiment.add_image(f"{name}/{metric}", img, 0, dataformats="HWC")
    finally:
        logger.save()


def sweep_centre(cfg, pts: RunPoints, centre_name: str, directions, direction_names, costs, axes,
                 net, trainer, out: Path, logger=None) -> Path | None:
    """One surface: compute this run's shard, merge if every shard is there. Returns surface.npz or None."""
    s, ls = cfg.sweep, cfg.landscape
    label = point_label(centre_name)
    sweep_dir = out / label
    centre = pts[centre_name]
    module = LandscapeModule(net, centre, directions, pts.swept, costs, pts.frozen, ls.batching, ls.data_batch)
    fp = fingerprint(centre, directions, axes, module.metric_names, {"train_subsample": ls.train_subsample})
    coords = grid_coordinates(axes)
    tensors = {"centre": centre.clone(), "directions": directions}
    marks = [p for p in s.mark if pts.available(p)]
    tensors.update({f"point.{point_label(p)}": pts[p].clone() for p in marks})
    write_tensors(sweep_dir / "directions.safetensors", tensors,
                  metadata={"param_shapes": json.dumps({k: list(v.shape) for k, v in pts.swept.items()}),
                            "centre": label, "directions": json.dumps(direction_names)})
    _, computed = compute_shard(module, trainer, coords, cfg.shard, cfg.num_shards, sweep_dir, fp, ls.points_per_batch)
    if not trainer.is_global_zero:  # a multi-device run: rank 0 reports, merges, draws and logs
        return None
    how = f"batching={module.batching}, data_batch={module.data_batch}" + (" (measured: " + ", ".join(f"{k} {v:.3f}s" for k, v in module.timings.items())
                                           + ")" if module.timings else "")
    console.print(f"{label}: shard {cfg.shard}/{cfg.num_shards} " + (f"computed, {how}" if computed else "already done, skipped"))
    missing = missing_shards(sweep_dir, cfg.num_shards, fp)
    if missing:
        console.print(f"{label}: waiting for shards {missing}; rerun with those shard= values (then any run merges)")
        return None
    projected = [project(pts[p], centre, directions) for p in marks]
    meta = {"centre_name": np.array(label), "direction_names": np.array(direction_names),
            "marked_names": np.array([point_label(p) for p in marks]),
            "marked_coords": np.array([c.double().numpy() for c, _ in projected]).reshape(len(marks), len(directions)),
            "marked_offplane": np.array([r for _, r in projected])}
    path = merge_shards(sweep_dir, cfg.num_shards, fp, axes, module.metric_names, meta)
    surface = read_npz(path)
    figures, summary = {}, {}
    for metric in module.metric_names:
        fig_path = sweep_dir / f"{metric.replace('/', '_')}.png"
        plt.close(surface_figure(surface, metric, s.log_scale, fig_path))
        figures[metric] = fig_path
        summary.update({f"{metric}/{k}": v for k, v in surface_summary(surface, metric).items()})
    write_json(sweep_dir / "summary.json", summary)
    log_surface(logger, f"landscape/{label}", figures, summary)
    for metric in module.metric_names:
        sm = surface_summary(surface, metric)
        where = ", ".join(f"{sm[f'best_axis{i}']:+.3f}" for i in range(len(axes)))
        console.print(f"  {metric:32s} centre {sm['centre']:.4g}  best {sm['best']:.4g} at ({where})")
    return path


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="landscape")
@task
def main(cfg: DictConfig) -> list[Path]:
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if not cfg.distilled:
        raise ConfigError("distilled= is not set: run distillscape-distill first and pass its output "
                          "directory, e.g. distilled=outputs/distill/<date>/<time>")
    if not 0 <= cfg.shard < cfg.num_shards:
        raise ConfigError(f"shard={cfg.shard} must be in [0, num_shards={cfg.num_shards})")
    run = Path(cfg.distilled)
    distilled = load_distilled(run)
    if distilled.meta["dataset"] != cfg.dataset.name:
        raise ConfigError(f"{run} was distilled from {distilled.meta['dataset']}, the config loads "
                          f"{cfg.dataset.name}: add dataset={distilled.meta['dataset']}")
    net = net_from_meta(distilled.meta)
    dm = build_datamodule(cfg)
    pts = RunPoints(cfg, run, distilled, net)
    centres = [cfg.sweep.centres] if isinstance(cfg.sweep.centres, str) else list(cfg.sweep.centres)
    directions, direction_names = build_directions(cfg, pts, centres[0])
    costs = build_costs(cfg, run, distilled, dm)
    out = Path(cfg.landscape.out_dir)
    trainer = build_trainer(cfg, logger=False, enable_checkpointing=False)
    surfaces, logger = [], build_logger(cfg)
    for centre in centres:
        axes = grid_axes(sweep_ranges(cfg, pts, pts[centre], directions), cfg.sweep.resolution)
        path = sweep_centre(cfg, pts, centre, directions, direction_names, costs, axes, net, trainer, out, logger)
        if path is not None:
            surfaces.append(path)
    if surfaces and trainer.is_global_zero:
        console.print(f"surfaces: {', '.join(str(p) for p in surfaces)}")
    return surfaces


if __name__ == "__main__":
    main()
