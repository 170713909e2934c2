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
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch
from omegaconf import DictConfig
from rich.markup import escape

from ..artifacts import remove_temporaries, write_json, write_tensors
from ..config import RL_COSTS, LandscapeJob, SweepConfig, settings
from ..costs import Cost, PPOLossCost, build_costs, check_costs_fit_run
from ..curvature import hessian_directions
from ..direct import DIRECT_TRAJECTORY
from ..rl import one_thread
from ..rl_objective import REFERENCE_POLICY
from ..errors import ArtifactError, ConfigError
from ..geometry import (grid_coordinates, line_between, norm_tensor_names, pca_directions, plane_through, project,
                        random_direction, reference_plane)
from ..landing import TrueTask
from ..landscape import (DISTILLED_COST, LandscapeModule, centre_curvature, compute_shard, cost_comparisons, grid_axes,
                         merge_shards, missing_shards, precision_certificate, read_npz, recorded_batching,
                         refuse_other_sweeps, surface_summary)
from ..params import flatten, unflatten
from ..plots import difference_figure, surface_figure
from ..resume import check_owner, fingerprint, finished, holding, mark_finished
from ..run import Run, RunPoints, point_label
from ..surface import experience_arrays, experience_of
from ..tracking import log_surface
from .common import (RUNTIME_BYTES, CONF_DIR, build_logger, build_trainer, check_fits, console, console_script,
                     dataset_bytes, model_sizes, start_job, task)

def build_directions(sweep: SweepConfig, pts: RunPoints, centre: str) -> tuple[torch.Tensor, list[str]]:
    """Directions [k, D] and their names, built at `centre` (the sweep's first centre)."""
    c = pts[centre]
    gen = torch.Generator().manual_seed(sweep.seed)
    norm_names = norm_tensor_names(pts.net)

    def eta():
        return flatten(random_direction(unflatten(c, pts.swept), gen, norm_names, sweep.bias, sweep.norm), pts.names)

    if sweep.directions == "random":
        k = len(sweep.resolution)
        return torch.stack([eta() for _ in range(k)]), [f"random direction {i} (seed {sweep.seed})" for i in range(k)]
    if sweep.directions == "through":
        if len(sweep.through) != 2:
            raise ConfigError(f"sweep.through={list(sweep.through)} must name the two other points of the plane")
        basis, _ = plane_through(c, pts[sweep.through[0]], pts[sweep.through[1]])
        return basis, [f"towards {point_label(sweep.through[0])} (unit)",
                       f"towards {point_label(sweep.through[1])}, orthogonalised (unit)"]
    if sweep.directions == "reference":
        return reference_plane(c, pts[sweep.towards], eta()), [f"{point_label(sweep.towards)} - {point_label(centre)}",
                                                               f"random direction (seed {sweep.seed})"]
    if sweep.directions == "line":
        return line_between(c, pts[sweep.towards]), [f"{point_label(sweep.towards)} - {point_label(centre)}"]
    raise ConfigError(f"sweep.directions={sweep.directions!r}; choose one of: random, through, reference, line, "
                      f"hessian, trajectory_pca")


@dataclass
class Plane:
    """A sweep's directions [k, D] and names, what else surface.npz and plane.json record of them, and the
    trajectory drawn on it (directions=trajectory_pca: flat points [T, D] and their names)."""
    directions: torch.Tensor
    names: list[str]
    record: dict[str, Any] = field(default_factory=dict)
    trajectory: torch.Tensor | None = None
    trajectory_names: list[str] = field(default_factory=list)


def build_plane(sweep: SweepConfig, pts: RunPoints, centre: str, dm) -> Plane:
    """The sweep's plane at `centre`: Hessian eigenvectors, a trajectory's principal directions, or
    `build_directions`'."""
    if sweep.directions == "hessian":
        return hessian_plane(sweep, pts, centre, dm)
    if sweep.directions == "trajectory_pca":
        return trajectory_plane(sweep, pts)
    return Plane(*build_directions(sweep, pts, centre))


def hessian_plane(sweep: SweepConfig, pts: RunPoints, centre: str, dm) -> Plane:
    """Two unit eigenvectors of the true task's Hessian at `centre` (curvature.hessian_directions: one
    Lanczos run on the training split or its fixed subsample sweep.hessian_examples), with their
    eigenvalues, residuals and the centre's gradient norm (a Hessian direction at a point that is not
    stationary shows curvature, not a minimum)."""
    if dm is None:
        raise ConfigError("sweep.directions=hessian takes the Hessian of a dataset's training loss; this is an RL "
                          "run: use sweep.directions=random or through")
    loop = pts.run.loop()
    if loop.names != pts.names:
        raise ConfigError("sweep.directions=hessian spans the network's parameters, but sweep.buffers=sweep also "
                          "moves its buffers: use sweep.buffers=freeze")
    x, y = dm.train_x, dm.train_y
    gen = torch.Generator().manual_seed(sweep.seed)
    if sweep.hessian_examples is not None and sweep.hessian_examples < len(y):
        keep = torch.randperm(len(y), generator=gen)[:sweep.hessian_examples]
        x, y = x[keep], y[keep]
    task = TrueTask(loop, x, y)
    point = unflatten(pts[centre], pts.swept)
    console.print(f"hessian plane: Lanczos ({sweep.lanczos_steps} steps) on the true task's Hessian at "
                  f"{point_label(centre)} ({len(y)} training examples), pair {sweep.hessian_pair} ...")
    found = hessian_directions(task, point, sweep.hessian_pair, sweep.lanczos_steps, gen)
    grad_norm = flatten(task.grad({k: v.unsqueeze(0) for k, v in point.items()}), loop.names).norm().item()
    values, residuals = found["eigenvalues"].tolist(), found["residuals"].tolist()
    ends = {"top_bottom": ("top", "bottom"), "top2": ("top", "second from top"),
            "bottom2": ("bottom", "second from bottom")}[sweep.hessian_pair]
    names = [f"Hessian {end} eigenvector (lambda {v:+.3g})" for end, v in zip(ends, values)]
    record = {"hessian_pair": sweep.hessian_pair, "eigenvalues": values, "residuals": residuals,
              "hessian_examples": len(y), "lanczos_steps": sweep.lanczos_steps, "centre_grad_norm": grad_norm}
    return Plane(found["directions"].to(pts[centre].dtype), names, record)


def trajectory_points(sweep: SweepConfig, pts: RunPoints) -> tuple[list[str], torch.Tensor]:
    """The trajectory's points in order, flat [T, D], and their names: each entry of sweep.trajectory is
    "snapshots" (the landings of the landscape's init under each of the run's snapshots/ batches),
    "direct" (direct training's parameter snapshots, <run>/direct_trajectory/), a named point or a
    checkpoint file."""
    run, names, vecs = pts.run, [], []
    for entry in sweep.trajectory:
        if entry == "snapshots":
            for f in run.snapshot_files("sweep.trajectory=snapshots"):
                landing = Run.open(f).landing(pts.landscape.init_seed)
                names.append(f"landing of {f.stem}")
                vecs.append(flatten(landing, pts.names).detach())
        elif entry == "direct":
            files = sorted((run.path / DIRECT_TRAJECTORY).glob("*.safetensors"))
            if not files:
                raise ArtifactError(f"sweep.trajectory=direct, but {run.path / DIRECT_TRAJECTORY} holds no snapshots: "
                                    f"rerun distillscape-distill (or distillscape-train) with direct.snapshot_every > 0")
            for f in files:
                names.append(f"direct {f.stem}")
                vecs.append(pts[str(f)])
        else:
            names.append(point_label(entry))
            vecs.append(pts[entry])
    return names, torch.stack(vecs)


def trajectory_plane(sweep: SweepConfig, pts: RunPoints) -> Plane:
    """The first two principal directions of the trajectory (geometry.pca_directions; unit, orthogonal),
    the share of its variance each explains, and the trajectory itself (drawn at its projection)."""
    names, trajectory = trajectory_points(sweep, pts)
    directions, explained = pca_directions(trajectory)
    return Plane(directions, [f"trajectory PC{i + 1} ({e:.0%} of its variance)" for i, e in enumerate(explained.tolist())],
                 {"trajectory": list(sweep.trajectory), "explained_variance": explained.tolist()},
                 trajectory.clone(), names)


def step_length(pts: RunPoints) -> float:
    """The distilled step's length ||landing - init||, the unit of sweep.range_unit=step."""
    return float((pts["landing"] - pts["init"]).double().norm())


def sweep_ranges(sweep: SweepConfig, pts: RunPoints, centre: torch.Tensor, directions: torch.Tensor,
                 also: torch.Tensor | None = None) -> list[list[float]]:
    """sweep.range (range_unit=step: in step lengths of parameter distance along each direction, i.e.
    times ||landing - init|| / ||direction||), or (range: null) the span of the marked points' (and `also`'s
    rows') coordinates plus a margin."""
    if sweep.range is not None:
        ranges = [list(r) for r in sweep.range]
        if sweep.range_unit == "step" and len(ranges) == len(directions):
            unit = step_length(pts)
            norms = directions.double().norm(dim=1).tolist()
            ranges = [[lo * unit / n, hi * unit / n] for (lo, hi), n in zip(ranges, norms)]
    else:
        extra = [project(v, centre, directions)[0] for v in also] if also is not None else []
        coords = torch.stack([project(pts[p], centre, directions)[0] for p in sweep.mark if pts.available(p)]
                             + extra + [torch.zeros(len(directions), dtype=centre.dtype)])
        lo, hi = coords.min(0).values, coords.max(0).values
        pad = sweep.margin * (hi - lo).clamp_min(1e-8)
        ranges = [[float(a), float(b)] for a, b in zip(lo - pad, hi + pad)]
    if len(ranges) != len(directions) or len(sweep.resolution) != len(directions):
        raise ConfigError(f"sweep.range has {len(ranges)} and sweep.resolution {len(sweep.resolution)} axes, "
                          f"directions={sweep.directions} has {len(directions)}: give one [lo, hi] and one count per axis")
    return ranges


def costs_for(s: LandscapeJob, run: Run, dm, pts: RunPoints | None = None, centre: str | None = None) -> list[Cost]:
    """`costs.build_costs`, its warnings shown on the console."""
    built = build_costs(s, run, dm, pts, centre)
    for line in built.warnings:
        console.print(line)
    return built.costs


def experience_record(costs: list[Cost]) -> dict[str, np.ndarray]:
    """surface.npz's record of whose experience each PPO-loss metric is on: {"experience": JSON {metric: words}}
    (nothing for a sweep without one)."""
    return experience_arrays({f"{c.name}/loss": c.experience for c in costs if isinstance(c, PPOLossCost)})


@dataclass
class Planned:
    """A surface of a job before anything of it is written (`Sweep.plan`)."""
    label: str
    centre: torch.Tensor
    sweep_dir: Path
    axes: list[torch.Tensor]
    module: LandscapeModule
    fp: str
    marks: list[str]


@dataclass
class Sweep:
    """The surfaces of one landscape job: the same directions and costs around each centre, this job's
    shard of every grid computed by `trainer`, the surfaces written under `out`."""
    job: LandscapeJob
    points: RunPoints
    directions: torch.Tensor
    direction_names: list[str]
    costs: list[Cost]
    trainer: L.Trainer
    out: Path
    logger: Any = None
    name: str | None = None  # the surfaces' directory under `out` (default: the centre's name)
    plane_record: dict[str, Any] = field(default_factory=dict)  # Plane.record: plane.json
    trajectory: torch.Tensor | None = None  # Plane.trajectory, drawn at its projection
    trajectory_names: list[str] = field(default_factory=list)

    def plan(self, centre_name: str) -> "Planned":
        """One surface of this job, planned: where it goes and the fingerprint its shards must hold. Writes nothing."""
        job, ls = self.job, self.job.landscape
        label, centre = point_label(centre_name), self.points[centre_name]
        axes = grid_axes(sweep_ranges(job.sweep, self.points, centre, self.directions, self.trajectory),
                         job.sweep.resolution)
        module = LandscapeModule(self.points.net, centre, self.directions, self.points.swept, self.costs,
                                 self.points.frozen, ls.batching, ls.data_batch, job.sweep.precision)
        data = {"train_subsample": ls.train_subsample}
        if job.sweep.precision != "fp32":  # fp32 surfaces keep the fingerprints their shards were written with
            data["precision"] = job.sweep.precision
        if any(c in RL_COSTS for c in job.sweep.costs):  # what an RL cost's values depend on besides the points
            data.update({k: getattr(ls, k) for k in ("episodes", "episode_seed", "experience_steps", "experience_envs",
                                                     "experience_seed")})
        # ppo_loss_reference's values depend on the reference policy, whatever the centre
        reference = [self.points[REFERENCE_POLICY]] if "ppo_loss_reference" in job.sweep.costs else []
        fp = fingerprint(centre, self.directions, *axes, *reference, data=[module.metric_names, data])
        marks = [p for p in job.sweep.mark if self.points.available(p)]
        sweep_dir = self.out / (self.name or label)
        # the shards still to come are computed as the finished ones were (the paths round differently)
        if (done := recorded_batching(sweep_dir, job.num_shards, fp)) is not None:
            if ls.batching not in ("auto", done[0]) or (ls.batching != "auto" and ls.data_batch != done[1]):
                console.print(f"{self.name or label}: landscape.batching={ls.batching} data_batch={ls.data_batch} "
                              f"set aside: this sweep's finished shards were computed with batching={done[0]}, "
                              f"data_batch={done[1]}, and its other shards must be too (delete {sweep_dir / 'shards'} "
                              f"to recompute every shard another way)")
            module.batching, module.data_batch = done
        return Planned(label, centre, sweep_dir, axes, module, fp, marks)

    def surface(self, planned: "Planned") -> Path | None:
        """One surface: compute this job's shard, merge if every shard is there. Returns surface.npz or None."""
        job, ls = self.job, self.job.landscape
        label, centre, sweep_dir, axes, module, fp, marks = (planned.label, planned.centre, planned.sweep_dir,
                                                             planned.axes, planned.module, planned.fp, planned.marks)
        with holding(sweep_dir / ".sweep.lock"):  # every shard job writes this file; one at a time
            remove_temporaries(sweep_dir, recursive=False)
            self._write_directions(sweep_dir, label, centre, marks)
        _, computed = compute_shard(module, self.trainer, grid_coordinates(axes), job.shard, job.num_shards,
                                    sweep_dir, fp, ls.points_per_batch)
        if not self.trainer.is_global_zero:  # a multi-device run: rank 0 reports, merges, draws and logs
            return None
        how = f"batching={module.batching}, data_batch={module.data_batch}"
        console.print(f"{self.name or label}: shard {job.shard}/{job.num_shards} "
                      + (f"computed, {how}" if computed else "already done, skipped"))
        missing = missing_shards(sweep_dir, job.num_shards, fp)
        if missing:
            console.print(f"{self.name or label}: waiting for shards {missing}; rerun with those shard= values (then any run merges)")
            return None
        with holding(sweep_dir / ".sweep.lock"):  # two jobs finishing together both merge: one after the other
            remove_temporaries(sweep_dir, recursive=False)  # of a job killed while it merged or drew
            path = merge_shards(sweep_dir, job.num_shards, fp, axes, module.metric_names,
                                self._marked(label, centre, marks) | self._plane_arrays(centre)
                                | {"precision": np.array(job.sweep.precision)} | experience_record(module.costs))
            surface = read_npz(path)
            certificate = self._certify(module, surface, axes, sweep_dir, fp)
            self._report(surface, sweep_dir, self.name or label, module.metric_names, certificate)
        return path

    def _certify(self, module: LandscapeModule, surface: dict[str, np.ndarray], axes: list[torch.Tensor],
                 sweep_dir: Path, fp: str) -> dict | None:
        """A bf16 surface's error certificate (landscape.precision_certificate), in precision.json beside it;
        kept across reruns of the same surface (its fingerprint). None for an fp32 surface."""
        sweep = self.job.sweep
        if sweep.precision == "fp32":
            return None
        marker = sweep_dir / "precision.json"
        if (done := finished(marker, fp, on_mismatch="redo")) is not None:
            return done["certificate"]
        certificate = precision_certificate(module, surface, grid_coordinates(axes), sweep.precision_tolerance,
                                            sweep.precision_points, seed=sweep.seed)
        mark_finished(marker, fp, certificate=certificate)
        return certificate

    def _write_directions(self, sweep_dir: Path, label: str, centre: torch.Tensor, marks: list[str]) -> None:
        """Centre, directions and marked points: any point of the surface can be rebuilt from this file."""
        tensors = {"centre": centre.clone(), "directions": self.directions}
        tensors.update({f"point.{point_label(p)}": self.points[p].clone() for p in marks})
        write_tensors(sweep_dir / "directions.safetensors", tensors,
                      metadata={"param_shapes": json.dumps({k: list(v.shape) for k, v in self.points.swept.items()}),
                                "centre": label, "directions": json.dumps(self.direction_names)})

    def _plane_arrays(self, centre: torch.Tensor) -> dict[str, np.ndarray]:
        """What surface.npz records of the plane: the range's unit (and the step length, for range_unit=step),
        the Hessian directions' eigenvalues, the trajectory at its projected coordinates."""
        sweep = self.job.sweep
        out = {"range_unit": np.array(sweep.range_unit)}
        if sweep.range_unit == "step":
            out["step_length"] = np.array(step_length(self.points))
        if "eigenvalues" in self.plane_record:
            out["direction_eigenvalues"] = np.array(self.plane_record["eigenvalues"])
        if self.trajectory is not None:
            projected = [project(v, centre, self.directions) for v in self.trajectory]
            out.update({"trajectory_names": np.array(self.trajectory_names),
                        "trajectory_coords": np.array([c.double().numpy() for c, _ in projected]),
                        "trajectory_offplane": np.array([r for _, r in projected])})
        return out

    def _marked(self, label: str, centre: torch.Tensor, marks: list[str]) -> dict[str, np.ndarray]:
        """The surface's names and marked points at their (projected) coordinates."""
        projected = [project(self.points[p], centre, self.directions) for p in marks]
        return {"centre_name": np.array(label), "direction_names": np.array(self.direction_names),
                "marked_names": np.array([point_label(p) for p in marks]),
                "marked_coords": np.array([c.double().numpy() for c, _ in projected]).reshape(len(marks),
                                                                                             len(self.directions)),
                "marked_offplane": np.array([r for _, r in projected])}

    def _report(self, surface: dict[str, np.ndarray], sweep_dir: Path, label: str, metrics: list[str],
                certificate: dict | None = None) -> None:
        """A figure per metric, summary.json, the logger, and one console line per metric (and the bf16
        certificate's, with the fp32 command when it fails)."""
        figures, summary = {}, {}
        for metric in metrics:
            fig_path = sweep_dir / f"{metric.replace('/', '_')}.png"
            plt.close(surface_figure(surface, metric, self.job.sweep.log_scale, fig_path,
                                     context=f"{self.points.run.dataset_name} / {self.points.run.arch_name}"))
            figures[metric] = fig_path
            summary.update({f"{metric}/{k}": v for k, v in surface_summary(surface, metric).items()})
        for pair, numbers in cost_comparisons(surface, self.directions).items():
            summary.update({f"compare/{pair}/{k}": v for k, v in numbers.items()})
            if surface[DISTILLED_COST].ndim == 2:
                true = f"{pair.removeprefix('distilled_vs_')}/loss"
                fig_path = sweep_dir / f"difference_{pair}.png"
                plt.close(difference_figure(surface, DISTILLED_COST, true, numbers, fig_path))
                figures[f"difference/{pair}"] = fig_path
        record = {"directions": self.job.sweep.directions, "direction_names": self.direction_names,
                  "range_unit": self.job.sweep.range_unit, **self.plane_record}
        if "eigenvalues" in self.plane_record:  # the surface's own curvature along each eigenvector, beside its eigenvalue
            norms = self.directions.double().norm(dim=1).cpu().numpy()
            for metric in (m for m in metrics if m.endswith("/loss")):
                curvature = centre_curvature(surface, metric, norms)
                record.setdefault("centre_curvature", {})[metric] = curvature
                summary.update({f"{metric}/centre_curvature_axis{i}": c for i, c in enumerate(curvature)})
        if "step_length" in surface:
            record["step_length"] = float(surface["step_length"])
        write_json(sweep_dir / "plane.json", record)
        if certificate is not None:
            summary["precision/passed"] = float(certificate["passed"])
            for metric, c in certificate["metrics"].items():
                summary[f"precision/{metric}/max_difference"] = c["max_difference"]
                summary[f"precision/{metric}/rank_correlation"] = c["rank_correlation"]
        write_json(sweep_dir / "summary.json", summary)
        log_surface(self.logger, f"landscape/{label}", figures, summary)
        for metric in metrics:
            sm = surface_summary(surface, metric)
            where = ", ".join(f"{sm[f'best_axis{i}']:+.3f}" for i in range(surface[metric].ndim))
            console.print(f"  {metric:32s} centre {sm['centre']:.4g}  best {sm['best']:.4g} at ({where})")
        for metric, said in experience_of(surface).items():
            console.print(f"  {metric:32s} experience {said}")
        for key, v in summary.items():
            if key.startswith("compare/") and key.endswith("/spearman"):
                pair = key.split("/")[1]
                console.print(f"  {pair.replace('_', ' '):32s} Spearman {v:+.3f} over the grid, minima "
                              f"{summary[f'compare/{pair}/minima_distance_params']:.3g} apart (parameter norm)")
        if certificate is not None:
            worst = max(certificate["metrics"].items(), key=lambda kv: kv[1]["max_difference"])
            line = (f"  {certificate['precision']} against fp32 at {len(certificate['points'])} points: largest "
                    f"difference {worst[1]['max_difference']:.2g} ({worst[0]}), tolerance {certificate['tolerance']:g}")
            if certificate["passed"]:
                console.print(line + ": passed (precision.json)")
            else:
                failed = [m for m, c in certificate["metrics"].items() if not c["passed"]]
                console.print(f"[bold]distillscape: warning:[/bold] {escape(line)}: FAILED for {', '.join(failed)} "
                              f"(precision.json); this surface's values are not to be trusted to that tolerance: "
                              f"rerun the same command with sweep.precision=fp32")


def check(cfg: DictConfig) -> tuple[LandscapeJob, Run]:
    """The checks before work (also run for each job of a multirun at submission): the settings, the run, the
    costs it can serve, and its data (read here: a missing dataset is refused before any sweep is planned)."""
    if not cfg.distilled:
        raise ConfigError("distilled= is not set: run distillscape-distill first and pass its output "
                          "directory, e.g. distilled=outputs/distill/<date>/<time>")
    s = settings(cfg)
    L.seed_everything(s.seed, workers=True, verbose=False)
    check_owner(cfg, Path(cfg.paths.output_dir))
    # the surfaces' directory may be shared with other landscape jobs (the shards of a sweep), no other task's
    check_owner(cfg, Path(s.landscape.out_dir), config=False)
    run = Run.open(s.distilled)
    check_costs_fit_run(s, run)
    if not run.is_rl:
        check_fits("this sweep", memory_parts(s, run), "lower landscape.points_per_batch (grid points per step) or "
                   "landscape.data_batch (examples per forward)", s.trainer.accelerator)
        run.datamodule(s.dataset)
    return s, run


def memory_parts(s: LandscapeJob, run: Run) -> dict[str, int]:
    """Bytes a dataset run's sweep holds at its peak, from its settings (float32): the dataset; per predict step
    the chunk's points as parameter stacks (flat and unflattened) and their activations on one data batch; the
    centres and directions (flat vectors)."""
    params, acts = model_sizes(run.net(), run.meta["image_shape"])
    points, f32 = s.landscape.points_per_batch, 4
    centres = 1 if isinstance(s.sweep.centres, str) else len(s.sweep.centres)
    return {"runtime": RUNTIME_BYTES, "dataset": dataset_bytes(run.dataset_name),
            "grid_points": 2 * points * params * f32,
            "forward": 2 * points * s.landscape.data_batch * acts * f32,
            "directions": (centres + 2 + len(s.sweep.mark)) * params * f32}


def landscape(cfg: DictConfig) -> list[Path]:
    """Every centre's surface of this job's shard; returns the surface.npz files merged by this job."""
    s, run = check(cfg)
    with one_thread() if run.is_rl else nullcontext():  # tiny policies (rl.one_thread)
        return sweep_run(cfg, s, run)


def sweep_run(cfg: DictConfig, s: LandscapeJob, run: Run) -> list[Path]:
    """The surfaces of an opened run: its points, the shared directions, the costs, one surface per centre."""
    dm = None if run.is_rl else run.datamodule(s.dataset)
    pts = RunPoints(run, s.landscape, s.sweep.buffers)
    centres = [s.sweep.centres] if isinstance(s.sweep.centres, str) else list(s.sweep.centres)
    plane = build_plane(s.sweep, pts, centres[0], dm)
    per_centre = "ppo_loss" in s.sweep.costs  # its experience is the centre's policy's
    costs = None if per_centre else costs_for(s, run, dm, pts)
    trainer = build_trainer(cfg, logger=False, enable_checkpointing=False)
    sweep = Sweep(s, pts, plane.directions, plane.names, costs, trainer, Path(s.landscape.out_dir),
                  plane_record=plane.record, trajectory=plane.trajectory, trajectory_names=plane.trajectory_names)
    planned: list[tuple[Sweep, Planned]] = []
    for centre in centres:
        if per_centre:
            sweep.costs = costs_for(s, run, dm, pts, centre)
        planned.append((sweep, sweep.plan(centre)))
    for start, end in s.sweep.lines:  # the lines of the same job: 1-D surfaces, each in <out_dir>/<start>_to_<end>/
        line = replace(s.sweep, directions="line", centres=[start], towards=end, range=[list(s.sweep.line_range)],
                       range_unit="coordinate",
                       resolution=[s.sweep.line_resolution], lines=[])
        job = replace(s, sweep=line)
        line_directions, line_names = build_directions(line, pts, start)
        line_costs = costs_for(job, run, dm, pts, start) if per_centre else sweep.costs
        along = Sweep(job, pts, line_directions, line_names, line_costs, trainer, sweep.out,
                      name=f"{point_label(start)}_to_{point_label(end)}")
        planned.append((along, along.plan(start)))
    # before anything is written: an output directory holding another sweep's shards is refused as it is
    for _, surface in planned:
        refuse_other_sweeps(surface.sweep_dir, surface.fp)
    start_job(cfg, exclusive=False)  # shard jobs may share a directory; each claims its shard
    logger = build_logger(cfg)
    surfaces = []
    for owner, surface in planned:
        owner.logger = logger
        if (path := owner.surface(surface)) is not None:
            surfaces.append(path)
    if surfaces and trainer.is_global_zero:
        console.print(f"surfaces: {', '.join(str(p) for p in surfaces)}")
    return surfaces


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="landscape")
@task
def main(cfg: DictConfig) -> list[Path]:
    return landscape(cfg)


cli = console_script(main, "landscape")

if __name__ == "__main__":  # python -m: the module under its own name runs (tasks.entry.run)
    from .entry import run
    run("landscape")
