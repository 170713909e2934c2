"""distillscape-landing: the landing analysis of issue 3 (see `distillscape.landing` for what is
measured and for the layout of landing_stats.json / landing_stats.csv).

Reads a run directory of distillscape-distill (`distilled=<dir>`: distilled.* and direct_minimum.*),
or, with `distill_first=true` (experiment=landing_stats), distills into <output_dir>/distill first.
Each batch kind's per-landing results are kept in <output_dir>/landing_parts/<kind>.safetensors as soon
as they are done, so a rerun into the same directory with the same settings skips finished kinds.
"""
from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig
from rich.table import Table

from ..artifacts import atomic_write, read_tensors, write_json, write_tensors
from ..baseline import tune_random_real_lr
from ..basins import CURVE_KEYS, basin_summary
from ..config import LandingConfig, LandingJob, RLConfig, as_settings
from ..errors import ArtifactError, ConfigError
from ..curvature import HVP_ACTIVATIONS, VERDICTS, certificate_summary, certify, density_curves, points_per_pass
from ..job import Job
from ..landing import (CURVES, DIRECT_STATS, STATS, LandingAnalysis, TrueTask, aggregate, precision_certificate,
                       random_real_batches, random_synthetic_batches)
from ..params import Params, detached, head, stack_len
from ..rl import episode_returns, episode_seeds, log_probs, one_thread, ppo_surrogate, train_ppo
from ..rl_objective import REFERENCE_POLICY, RETURN_ESTIMATE, gather_experience, ppo_objective
from ..plots import curve_figure, density_figure, trajectory_figure
from ..resume import check_owner, command_with, finished, fingerprint, mark_finished
from ..run import Run
from ..seeds import generator, seed_for
from ..stats import describe
from ..tracking import log_csv_table
from .landing_early import EARLY_KEYS, Early, check_early, early_parts
from .cli import compose_task, script
from .common import (RUNTIME_BYTES, build_logger, certificate_line, check_fits, console, dataset_bytes, model_sizes,
                     start_job)


def distill_overrides(s: LandingJob, run: Path) -> list[str]:
    """The distillation of distill_first=true: conf/distill.yaml with the landing's dataset, seed and
    distill_overrides, into `run`."""
    return [f"dataset={s.dataset.name}", f"paths.data_dir={s.paths.data_dir}", f"seed={s.seed}",
            *s.distill_overrides, f"paths.output_dir={run}"]


def distill_first(s: LandingJob, out: Path) -> Path:
    """Distill into <out>/distill with conf/distill.yaml + distill_overrides, unless a finished
    distillation is already there (then it is reused: an interrupted run resumes here)."""
    run = out / "distill"
    if (run / "distilled.safetensors").exists() and (run / "direct_minimum.safetensors").exists():
        console.print(f"reusing the distillation in {run}")
        return run
    from .distill import distill

    overrides = distill_overrides(s, run)
    console.print(f"distilling first, into {run} ({' '.join(overrides)})")
    distill(compose_task("distill", overrides))
    return run


def open_run(path, s: LandingJob) -> Run:
    """The run to analyse, its dataset checked against the config's (before the data is loaded)."""
    run = Run.open(path)
    if not run.is_rl:
        run.check_dataset(s.dataset)
    return run


def check_data(run: Run, s: LandingJob):
    """The run's data, set up, with what the analysis draws from it: the random_real kind's batches take as
    many training images of every class as the distilled batch has per class."""
    dm = run.datamodule(s.dataset)
    n, classes = run.distilled.images.shape[0], run.num_classes
    if "random_real" in s.analysis.kinds and n % classes == 0:
        dm.check_per_class(n // classes, "the random_real kind (class-balanced random real batches)",
                           "or leave random_real out of analysis.kinds")
    return dm


def parts_fingerprint(job: Job, run: Run, direct_path: Path) -> str:
    """What the per-kind results depend on; a finished kind is reused only when it matches (the early parts'
    own keys left out: adding one to a finished analysis keeps its kinds)."""
    weights = [run.path / "distilled.safetensors", direct_path]
    analysis = {k: v for k, v in job.resolved("analysis").items() if k not in EARLY_KEYS and k not in CURVE_KEYS}
    if analysis.get("precision", "fp32") == "fp32":  # fp32 parts keep the fingerprints they were written with
        analysis = {k: v for k, v in analysis.items() if not k.startswith("precision")}
    if analysis.get("eval_path") == "auto":  # as do parts of the rule's path
        analysis.pop("eval_path")
    what = {"analysis": analysis, "baseline": job.resolved("baseline"), "dataset": job.resolved("dataset"),
            "distilled": str(run.path.resolve()), "direct_minimum": str(job.settings.direct_minimum),
            "mtimes": [p.stat().st_mtime_ns if p.exists() else None for p in weights]}
    return fingerprint(data=what)


def land(kind: str, s: LandingJob, run: Run, loop, sampler, inits, dm, device):
    """Landings of `inits` for one batch kind, and the (mean) inner learning rate it used."""
    a, d = s.analysis, run.distilled
    steps = d.lrs.shape[0]
    if kind == "distilled":
        return run.land(inits, loop, a.init_chunk), d.lrs.mean().item()
    n, classes = d.images.shape[0], run.num_classes
    if kind == "random_real":
        if n % classes:
            raise ArtifactError(f"the distilled batch has {n} images for {classes} classes: a class-balanced "
                                f"random real batch of that size does not exist; use analysis.kinds without random_real")
        lr = tune_random_real_lr(loop, sampler, dm, n // classes, steps, list(s.baseline.lr_grid), s.baseline.tune_inits,
                                 seed=seed_for(a.seed, "analysis", "random_real_tune"), device=device)
        x, targets = random_real_batches(dm, n // classes, a.inits, loop.loss,
                                         seed=seed_for(a.seed, "analysis", "random_real_batches"))
        lrs = torch.full((steps, 1), lr)
    else:  # random_synthetic: noise images, random labels, the distilled rate
        x, targets = random_synthetic_batches(a.inits, n, d.images.shape[1:], classes, loop.loss,
                                              seed=seed_for(a.seed, "analysis", "random_synthetic"))
        lrs, lr = d.lrs, d.lrs.mean().item()
    landed = loop.run_stack(inits, x.to(device), targets.to(device), lrs.to(device), a.init_chunk, batched_data=True)
    return detached(landed), lr


def write_csv(path: Path, results: dict[str, dict[str, torch.Tensor]]) -> None:
    """One row per (kind, landing); empty cells where a stat covers fewer landings."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["kind", "landing", *STATS])
    for kind, stats in results.items():
        for i in range(len(stats["landing_test_acc"])):
            w.writerow([kind, i, *(f"{stats[k][i].item():.6g}" if k in stats and i < len(stats[k]) else ""
                                   for k in STATS)])
    atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))


def summary_table(summary: dict) -> Table:
    kinds = list(summary["kinds"])
    t = Table(title=f"landings on the true task ({summary['dataset']} / {summary['arch']}): mean ± std over n "
                    f"landings (* some non-finite, left out)")
    t.add_column("statistic")
    t.add_column("n", justify="right")
    for k in kinds:
        t.add_column(f"{k}\nlr {summary['lr'][k]:.3g}", justify="right")
    for stat in STATS:
        cells = [summary["kinds"][k].get(stat) for k in kinds]
        if all(c is None for c in cells):
            continue
        n = max(c["n"] + c["nonfinite"] for c in cells if c)
        t.add_row(stat, str(n), *("" if c is None else f"{c['mean']:.4g} ± {c['std']:.2g}" + ("*" if c["nonfinite"] else "")
                                  for c in cells))
    t.add_section()
    dm = summary["direct_minimum"]
    # a line per statistic: the cells stay as narrow as the others' at any console width
    t.add_row("direct minimum", "1", "\n".join(f"{k} {dm[k]:.4g}" for k in DIRECT_STATS[:4]),
              *("\n".join(f"{k} {dm[k]:.4g}" for k in DIRECT_STATS[4:]) if i == 0 else "" for i in range(len(kinds) - 1)))
    return t


CERTIFICATE_KEYS = ("certificate_inits", "certificate_examples", "certificate_eigs", "lanczos_steps", "slq_starts",
                    "slq_steps", "hutchinson_probes", "grad_tol", "negative_tol", "density_sigma", "seed")


def certificate(s: LandingJob, run: Run, loop, dm, inits, direct, out: Path, stamp: str, device) -> dict:
    """The curvature certificate (distillscape.curvature) of the first `certificate_inits` inits, their
    distilled landings and the direct minimum, on the true task over the training split (or its fixed
    subsample): certificate.json and density.png. Reused when certificate.json holds these settings' work."""
    a = s.analysis
    x, y = dm.train_x, dm.train_y
    if a.certificate_examples is not None and a.certificate_examples < len(y):
        keep = torch.randperm(len(y), generator=generator(a.seed, "analysis", "certificate_subsample"))[:a.certificate_examples]
        x, y = x[keep], y[keep]
    _, acts = model_sizes(run.net(), run.meta["image_shape"])
    task = TrueTask(loop, x.to(device), y.to(device), a.data_chunk, certificate_chunk(a, acts))
    return certify_points(s, run, task, loop, inits, direct, out, stamp, f"the true task ({len(y)} training examples)",
                          {"examples": len(y)}, f"{run.dataset_name} / {run.arch_name}")


def certify_points(s: LandingJob, run: Run, task, loop, inits, direct, out: Path, stamp: str, on: str, record: dict,
                   context: str) -> dict:
    """The certificate of the first `certificate_inits` inits, their distilled landings and the direct minimum
    on `task` (a `curvature.Objective`; `on` says which loss in words, `record` what certificate.json's settings
    add about it): certificate.json and density.png, reused when certificate.json holds these settings' work."""
    a = s.analysis
    path = out / "certificate.json"
    if (done := finished(path, stamp, on_mismatch="redo")) is not None:
        console.print(f"certificate: reusing {path}")
        return done
    n = min(a.certificate_inits, a.inits)
    first = head(inits, n)
    landed = run.land(first, loop, a.init_chunk)
    # one stack: every Hessian-vector product of the Lanczos runs covers init, landing and minimum at once
    points = {k: torch.cat([first[k], landed[k], direct[k].unsqueeze(0)]) for k in loop.names}
    console.print(f"certificate: Lanczos on the Hessian of {on} at {n} inits, their landings and the direct minimum ...")
    t0 = time.perf_counter()
    cert = certify(task, points, k=a.certificate_eigs, lanczos_steps=a.lanczos_steps, slq_starts=a.slq_starts,
                   slq_steps=a.slq_steps, probes=a.hutchinson_probes, grad_tol=a.grad_tol, negative_tol=a.negative_tol,
                   generator=generator(a.seed, "analysis", "certificate"))
    parts = {"init": slice(0, n), "landing": slice(n, 2 * n), "direct_minimum": slice(2 * n, 2 * n + 1)}
    certs = {g: {k: v[part] for k, v in cert.items()} for g, part in parts.items()}
    settings = {k: getattr(a, k) for k in CERTIFICATE_KEYS}
    settings.update(record, objective=on)
    summary = certificate_summary(certs, loop.names, settings)
    dm_point = summary["groups"]["direct_minimum"]["points"][0]
    summary["direct_minimum_verdict"] = dm_point["verdict"]
    summary["seconds"] = time.perf_counter() - t0
    grid, densities = density_curves(summary, a.density_sigma)
    density_figure(grid, densities, {g: d["counts"] for g, d in summary["groups"].items()},
                   f"Hessian spectral density of {on} ({context}; SLQ, {a.slq_starts} starts x {a.slq_steps} steps)",
                   out / "density.png")
    write_json(path, {"fingerprint": stamp, **summary})
    console.print(certificate_table(summary))
    if dm_point["verdict"] != "minimum":
        console.print(f"[yellow]the direct minimum is not certified as a minimum: {dm_point['verdict'].replace('_', ' ')} "
                      f"(||grad|| {dm_point['grad_norm']:.3g}, grad_tol {a.grad_tol:g}; {dm_point['negative_count']} "
                      f"significantly negative eigenvalues)[/yellow]")
    console.print(f"certificate: {path} (+ density.png), {summary['seconds']:.0f} s")
    return summary


def curve_part(s: LandingJob, run: Run, loop, analysis: LandingAnalysis, inits, out: Path, stamp: str) -> dict:
    """One basin or two (distillscape.basins): curves from the first curve_inits distilled landings to the direct
    minimum, their barriers beside the straight lines'. landing_parts/curve.safetensors (per landing) and
    curve.json (the summary, with its fingerprint: the kinds' and the curve keys), curve.png; reused when finished."""
    a = s.analysis
    part = out / "landing_parts" / "curve.safetensors"
    own = fingerprint(data={"kinds": stamp, **{k: getattr(a, k) for k in CURVE_KEYS}})
    if (done := finished(part.with_suffix(".json"), own, on_mismatch="redo")) is not None:
        console.print(f"curve: reusing {part}")
        return done["summary"]
    n = min(a.curve_inits, a.inits)
    console.print(f"curve: training {n} {a.curve} curves landing -> direct minimum ({a.curve_steps} steps) ...")
    t0 = time.perf_counter()
    landed = run.land(head(inits, n), loop, a.init_chunk)
    summary, per_landing = basin_summary(a.curve, landed, analysis, a, generator(a.seed, "analysis", "curve"))
    summary["seconds"] = time.perf_counter() - t0
    write_tensors(part, per_landing)
    mark_finished(part.with_suffix(".json"), own, summary=summary)
    curve_figure(summary, f"{run.dataset_name} / {run.arch_name}", out / "curve.png")
    b = summary["barriers"]
    console.print(f"curve: train-loss barrier straight {b['barrier_line_train']['mean']:.4g}, {a.curve} "
                  f"{b['barrier_curve_train']['mean']:.4g} ({n} landings, {summary['seconds']:.0f} s; curve.png)")
    return summary


def certificate_table(summary: dict) -> Table:
    t = Table(title="is the point a minimum? (k of n, Wilson 95% interval; means over the points)")
    for col in ("points", *(v.replace("_", " ") for v in VERDICTS), "lambda_max", "lambda_min", "|lmin|/lmax", "||grad||"):
        t.add_column(col, justify="right")
    for group, d in summary["groups"].items():
        c, st = d["counts"], d["stats"]
        t.add_row(group, *(f"{c[v]['k']}/{c[v]['n']} [{c[v]['low']:.2f}, {c[v]['high']:.2f}]" for v in VERDICTS),
                  *(f"{st[k]['mean']:.4g}" for k in ("lambda_max", "lambda_min", "abs_ratio", "grad_norm")))
    return t


def check(job: Job):
    """The checks before work (also run for each job of a multirun at submission): the run and its data;
    (run, data), both None for a run distilled here first (distill_first=true)."""
    s = job.settings
    L.seed_everything(s.seed, workers=True, verbose=False)
    if not s.distilled and not s.distill_first:
        raise ConfigError("distilled= is not set: pass the output directory of distillscape-distill "
                          "(distilled=outputs/distill/<date>/<time>), or distill_first=true to distill here first")
    if s.analysis.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("analysis.device=cuda but no CUDA device is available: use analysis.device=cpu")
    check_owner(job)
    if not s.distilled:  # what is distilled here first is checked by the distillation itself
        from .distill import check as check_distill

        check_distill(Job.of(compose_task("distill", distill_overrides(s, job.out / "distill"))))
        return None, None
    # a wrong distilled= or dataset refused before the directory is touched, its data too (missing files,
    # a split too small for the random_real kind), and early parts this run or data cannot do
    run = open_run(s.distilled, s)
    if run.is_rl and s.analysis.certificate and s.analysis.certificate_examples is not None:
        raise ConfigError("analysis.certificate_examples subsamples a dataset's training split; an RL run is certified "
                          "on the PPO loss of its fixed reference experience: leave analysis.certificate_examples=null")
    if run.is_rl and s.analysis.curve != "none":
        raise ConfigError(f"analysis.curve={s.analysis.curve} trains curves on a dataset's true task; this run is an "
                          "RL run: leave analysis.curve=none")
    if run.is_rl and (s.analysis.precision != "fp32" or s.analysis.eval_path != "auto"):
        raise ConfigError("analysis.precision and analysis.eval_path set how image classifiers are evaluated on the "
                          "true task; an RL run's landing analysis runs episodes in fp32: leave them at fp32 and auto")
    if run.is_rl:
        check_early(s, run)
        return run, None
    check_fits("this landing analysis", memory_parts(s, run), "lower analysis.inits, or set analysis.init_chunk "
               "(models per vmapped forward) or a smaller analysis.data_chunk", s.analysis.device)
    dm = check_data(run, s)
    check_early(s, run, dm)
    return run, dm


def certificate_chunk(a: LandingConfig, acts: int) -> int:
    """Points per vmapped pass of the certificate: analysis.init_chunk, or curvature.points_per_pass's rule
    on the data chunk and the net's activations per example (`acts`). Its 2 * certificate_inits + 1 points
    were all one pass before: 65 conv nets ran out of 24 GB."""
    return a.init_chunk or points_per_pass(a.data_chunk, acts)


def memory_parts(s: LandingJob, run: Run) -> dict[str, int]:
    """Bytes a dataset run's landing analysis holds at its peak, from its settings (float32): the dataset; the
    inits and every kind's landings as parameter stacks; one vmapped chunk of models on one data chunk, kept
    for a gradient and a Hessian-vector product (about three times a forward)."""
    a, f32 = s.analysis, 4
    params, acts = model_sizes(run.net(), run.meta["image_shape"])
    chunk = min(a.init_chunk or a.inits, a.inits)
    return {"runtime": RUNTIME_BYTES, "dataset": dataset_bytes(run.dataset_name),
            "parameter_stacks": (2 + len(a.kinds)) * a.inits * params * f32,
            "forward": 3 * chunk * a.data_chunk * acts * f32,
            **({"certificate": HVP_ACTIVATIONS * min(certificate_chunk(a, acts), 2 * a.certificate_inits + 1)
                * a.data_chunk * acts * f32} if a.certificate else {})}


def landing(cfg: DictConfig) -> dict:
    """distillscape-landing: the landing statistics of a run. Returns the summary (landing_stats.json)."""
    job = Job.of(cfg)
    run, dm = check(job)
    s = job.settings
    out = start_job(job)
    if run is None:
        run = open_run(distill_first(s, out), s)
    if run.is_rl:
        check_early(s, run)
        return rl_landing(job, run)
    a = s.analysis
    device = torch.device(a.device)
    if dm is None:
        dm = check_data(run, s)
        check_early(s, run, dm)

    loop, sampler = run.loop(device), run.sampler()
    loop.eval_path = a.eval_path  # auto: inner.eval_path_rule; recorded in computed_with
    direct_path = run.direct_minimum_path(s.direct_minimum)
    direct = {k: v.detach().to(device) for k, v in run.direct_minimum(s.direct_minimum).named_parameters()}

    sub = torch.randperm(len(dm.train_y), generator=generator(a.seed, "analysis", "train_subsample"))
    sub = sub[: a.train_examples or len(dm.train_y)]
    n_test = a.test_examples or len(dm.test_y)
    train = TrueTask(loop, dm.train_x[sub].to(device), dm.train_y[sub].to(device), a.data_chunk, a.init_chunk, a.precision)
    test = TrueTask(loop, dm.test_x[:n_test].to(device), dm.test_y[:n_test].to(device), a.data_chunk, a.init_chunk,
                    a.precision)
    analysis = LandingAnalysis(loop, train, test, (dm.train_x.to(device), dm.train_y.to(device)), direct, a)

    inits = sampler.sample(a.inits, seed=a.init_seed, device=device)
    at_inits = traj = None
    stamp = parts_fingerprint(job, run, direct_path)
    results, lrs, certificates = {}, {}, {}
    for kind in a.kinds:
        part = out / "landing_parts" / f"{kind}.safetensors"
        if (done := finished(part.with_suffix(".json"), stamp, on_mismatch="redo")) is not None:
            results[kind], lrs[kind], certificates[kind] = read_tensors(part, finite=False), done["lr"], done.get("precision")
            console.print(f"{kind}: reusing {part}")
            continue
        console.print(f"{kind}: landing {a.inits} inits and measuring them on the true task ...")
        t0 = time.perf_counter()
        at_inits = at_inits if at_inits is not None else analysis.at_inits(inits)
        if traj is None and a.trajectory_inits:
            traj = analysis.trajectory(inits)
            write_tensors(out / "landing_parts" / "trajectory.safetensors",
                          {k: traj[k].cpu() for k in ("steps", "train_loss", "test_acc")})
        landed, lrs[kind] = land(kind, s, run, loop, sampler, inits, dm, device)
        results[kind] = analysis.landings(inits, landed, at_inits, traj)
        certificates[kind] = (None if a.precision == "fp32" else  # a sample of the bf16 stats again in fp32
                              precision_certificate(train, test, inits, landed, results[kind], a.precision_inits,
                                                    a.precision_tolerance))
        write_tensors(part, results[kind])
        mark_finished(part.with_suffix(".json"), stamp, lr=lrs[kind], precision=certificates[kind])
        console.print(f"{kind}: done ({len(results[kind]['landing_test_acc'])} landings, "
                      f"{time.perf_counter() - t0:.0f} s)")

    summary = {"dataset": run.dataset_name, "arch": run.arch_name,
               "distilled": str(run.source), "inner_loss": loop.loss, "settings": job.resolved("analysis"), "lr": lrs,
               # how the models were evaluated (inner.eval_path_rule: never by timing), on which threads
               "computed_with": {"eval_path": loop.eval_path_for(test.x), "device": device.type,
                                 "torch_threads": torch.get_num_threads()},
               "direct_minimum": analysis.direct_minimum(),
               "kinds": {kind: aggregate(stats) for kind, stats in results.items()}}
    path = out / "landing_parts" / "trajectory.safetensors"
    if a.trajectory_inits and path.exists():
        run_curve = read_tensors(path, finite=False)
        summary["trajectory"] = {
            "steps": run_curve["steps"].tolist(), "inits": int(run_curve["train_loss"].shape[1]),
            "train_loss": run_curve["train_loss"].mean(dim=1).tolist(), "test_acc": run_curve["test_acc"].mean(dim=1).tolist(),
            **{c: {kind: r[f"curve/{c}"].mean(dim=0).tolist() for kind, r in results.items() if f"curve/{c}" in r}
               for c in CURVES}}
        trajectory_figure(summary, out / "trajectory.png")
    if a.precision != "fp32":
        summary["precision"] = precision_record(a, certificates, out)
    if a.certificate:
        cert = certificate(s, run, loop, dm, inits, direct, out, stamp, device)
        summary["certificate"] = {g: d["counts"] for g, d in cert["groups"].items()}
    if a.curve != "none":
        summary["curve"] = curve_part(s, run, loop, analysis, inits, out, stamp)
    if a.early:
        held_out = head(inits, min(a.early_inits, a.inits))
        early = early_parts(Early(s, run, loop, sampler, dm, analysis, held_out, device), out, stamp)
        summary["early"] = {"parts": list(early), "file": "early.json"}
    write_json(out / "landing_stats.json", summary)
    write_csv(out / "landing_stats.csv", results)

    logger = build_logger(job)
    if logger:
        metrics = {f"landing/{kind}/{stat}": v["mean"] for kind, st in summary["kinds"].items() for stat, v in st.items()}
        metrics.update({f"landing/direct_minimum/{k}": v for k, v in summary["direct_minimum"].items()})
        logger.log_metrics(metrics, step=0)
        log_csv_table(logger, "landing/table", out / "landing_stats.csv")  # W&B only
        logger.save()
    console.print(summary_table(summary))
    if a.early:  # the report's early-training sentences, from the same files
        from ..report import early_training
        for line in early_training(summary, early)[0]:
            console.print(line, markup=False)  # plain text: "[controls]" in a sentence is not a rich tag
    if "precision" in summary:
        console.print(precision_line(summary["precision"]))
    console.print(f"landing statistics: {out / 'landing_stats.json'} (+ landing_stats.csv)")
    return summary


def precision_record(a, certificates: dict[str, dict], out: Path) -> dict:
    """landing_stats.json's `precision`: each kind's certificate (landing.precision_certificate), whether all
    passed, and the command that computes the same statistics in fp32."""
    return {"precision": a.precision, "tolerance": a.precision_tolerance, "kinds": certificates,
            "passed": all(c["passed"] for c in certificates.values()),
            "fp32_command": command_with(out, "analysis.precision=fp32")}


def precision_line(record: dict) -> str:
    worst = max(((c["max_difference"], kind) for kind, c in record["kinds"].items()), default=(0.0, "-"))
    return certificate_line(record["precision"], f"the first inits and landings (most: {worst[1]})", worst[0],
                            record["tolerance"], record["passed"], "landing_stats.json: precision",
                            "these statistics", record["fp32_command"])


# -- an RL run -------------------------------------------------------------------------------------------------
@one_thread()  # tiny policies (rl.one_thread)
def rl_landing(job: Job, run: Run) -> dict:
    """The landing analysis of an RL run: episode return and PPO loss at the inits, their one-step
    landings and the PPO minimum; PPO polish from the first landings (distance moved relative to the
    step, return gained); the return barrier on the straight line landing -> PPO minimum."""
    s, out = job.settings, job.out
    a, env = s.analysis, run.env()
    rl = as_settings(RLConfig, run.meta.get("config", {}).get("rl") or {})
    greedy = rl.eval_actions == "greedy"
    loop, sampler = run.loop(), run.sampler()
    seeds = episode_seeds(seed_for(a.seed, "analysis", "rl_episodes"), rl.eval_episodes)
    minimum = run.direct_minimum(s.direct_minimum)
    direct = {k: v.detach() for k, v in minimum.named_parameters()}
    best = {k: v.unsqueeze(0) for k, v in direct.items()}
    # the PPO loss's fixed experience: the PPO minimum acting in 10 environments for 205 steps each
    exp = gather_experience(run, direct, 2050, 10, seed_for(a.seed, "analysis", "rl_experience"), "reference",
                            REFERENCE_POLICY)
    obs, act, old, adv = exp.obs, exp.actions, exp.logp_old, exp.adv

    def returns(stack):
        return episode_returns(loop, stack, env, seeds, greedy).mean(1)

    def ppo_loss(stack):
        m = stack_len(stack)
        with torch.no_grad():
            logp, _ = log_probs(loop, stack, obs.expand(m, *obs.shape), act.expand(m, -1))
            return ppo_surrogate(logp, old.expand(m, -1), adv.expand(m, -1), rl.clip)

    t0 = time.perf_counter()
    inits = sampler.sample(a.inits, seed=a.init_seed)
    landed = run.land(inits, loop)
    names = loop.names
    step = torch.cat([(landed[k] - inits[k]).flatten(1) for k in names], 1).norm(dim=1)
    to_min = torch.cat([(best[k] - landed[k]).flatten(1) for k in names], 1).norm(dim=1)
    stats = {"init_return": returns(inits), "landing_return": returns(landed), "init_ppo_loss": ppo_loss(inits),
             "landing_ppo_loss": ppo_loss(landed), "step_norm": step, "distance_to_minimum": to_min}
    # the barrier on the line landing -> minimum: the largest drop of return below the straight line between the ends
    ts = torch.linspace(0, 1, a.barrier_points)
    line = {k: torch.lerp(landed[k].unsqueeze(1), best[k].unsqueeze(1).expand_as(landed[k].unsqueeze(1)),
                          ts.view(1, -1, *[1] * (landed[k].dim() - 1))).flatten(0, 1) for k in names}
    on_line = returns(line).view(a.inits, a.barrier_points)
    chord = torch.lerp(on_line[:, :1], on_line[:, -1:], ts.view(1, -1).double())
    stats["barrier_return"] = (chord - on_line).max(1).values.clamp_min(0)
    # polish: PPO updates from the first landings, the PPO minimum's critic to start from
    p = rl.ppo
    moved, gained = [], []
    for i in range(min(a.polish_inits, a.inits)):
        actor = run.net()
        actor.load_state_dict({k: landed[k][i] for k in names})
        train_ppo(actor, run.critic("direct"), env, a.polish_steps * p.envs * p.horizon // (p.epochs * p.minibatches),
                  envs=p.envs, horizon=p.horizon, epochs=p.epochs, minibatches=p.minibatches, lr=p.lr, gamma=rl.gamma,
                  lam=rl.gae_lambda, clip=rl.clip, seed=seed_for(a.seed, "analysis", "rl_polish") + i)
        polished = {k: v.detach().unsqueeze(0) for k, v in actor.named_parameters()}
        moved.append((torch.cat([(polished[k][0] - landed[k][i]).flatten() for k in names]).norm() / step[i]).item())
        gained.append((returns(polished)[0] - stats["landing_return"][i]).item())
    if moved:
        stats["polish_moved_over_step"], stats["polish_return_gained"] = torch.tensor(moved), torch.tensor(gained)
    summary = {"kind": "rl", "env": env.name, "arch": run.arch_name, "distilled": str(run.source),
               "episodes_per_policy": len(seeds), "settings": job.resolved("analysis"),
               "direct_minimum": {"return": returns(best)[0].item(), "ppo_loss": ppo_loss(best)[0].item()},
               "kinds": {"distilled": {k: describe(v) for k, v in stats.items()}},
               "seconds": time.perf_counter() - t0}
    if a.certificate:
        summary["certificate"] = rl_certificate(job, run, loop, inits, direct, exp)
    write_json(out / "landing_stats.json", summary)
    t = Table(title=f"{env.name}: {a.inits} one-step landings ({len(seeds)} episodes per policy)")
    for col in ("statistic", "mean ± std", "min", "max", "n"):
        t.add_column(col)
    for k, d in summary["kinds"]["distilled"].items():
        t.add_row(k, f"{d['mean']:.4g} ± {d['std']:.2g}", f"{d['min']:.4g}", f"{d['max']:.4g}", str(d["n"]))
    dm = summary["direct_minimum"]
    t.add_row("PPO minimum", f"return {dm['return']:.1f}, PPO loss {dm['ppo_loss']:.4g}", "", "", "1")
    console.print(t)
    console.print(f"landing statistics: {out / 'landing_stats.json'}")
    return summary


def rl_certificate(job: Job, run: Run, loop, inits, direct: Params, exp) -> dict:
    """The curvature certificate of an RL run's inits, landings and PPO minimum on the PPO loss of the fixed
    reference experience `exp` (rl_objective; no return estimate: `RETURN_ESTIMATE`). Its verdict counts."""
    s, out = job.settings, job.out
    stamp = parts_fingerprint(job, run, run.direct_minimum_path(s.direct_minimum))
    on = f"the PPO loss on fixed reference experience ({len(exp.actions)} samples of the direct PPO minimum acting)"
    cert = certify_points(s, run, ppo_objective(loop, exp, s.analysis.init_chunk), loop, inits, direct, out, stamp, on,
                          {"examples": len(exp.actions), "experience": exp.describe(), "return_estimate": RETURN_ESTIMATE},
                          f"{run.meta.get('env')} / {run.arch_name}")
    console.print(f"certificate: on the PPO loss only; return estimate {RETURN_ESTIMATE}")
    return {g: d["counts"] for g, d in cert["groups"].items()}


main, cli = script(landing, "landing")

if __name__ == "__main__":  # python -m: the module under its own name runs (tasks.cli.run)
    from .cli import run
    run("landing")
