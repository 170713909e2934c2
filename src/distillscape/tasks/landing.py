"""distillscape-landing: the landing analysis of issue 3 (see `distillscape.landing` for what is
measured and for the layout of landing_stats.json / landing_stats.csv).

Reads a run directory of distillscape-distill (`distilled=<dir>`: distilled.* and direct_minimum.*),
or, with `distill_first=true` (experiment=landing_stats), distills into <output_dir>/distill first.
Each batch kind's per-landing results are kept in <output_dir>/landing_parts/<kind>.safetensors as soon
as they are done, so a rerun into the same directory with the same settings skips finished kinds.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from dataclasses import fields
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf
from rich.table import Table

from ..artifacts import ArtifactError, atomic_write, load_distilled, read_json, read_tensors, write_json, write_tensors
from ..baseline import tune_random_real_lr
from ..config import ConfigError
from ..direct import load_direct_minimum
from ..inner import InitSampler, InnerLoop
from ..landing import (CURVES, DIRECT_STATS, STATS, LandingAnalysis, Settings, TrueTask, aggregate,
                       random_real_batches, random_synthetic_batches)
from ..plots import trajectory_figure
from ..tracking import log_csv_table
from .common import CONF_DIR, build_datamodule, build_logger, console, net_from_meta, output_dir, resolved, task

SPLIT_KEYS = ("val_size", "split_seed", "train_subset")


def distill_first(cfg: DictConfig, out: Path) -> Path:
    """Distill into <out>/distill with conf/distill.yaml + distill_overrides, unless a finished
    distillation is already there (then it is reused: an interrupted run resumes here)."""
    run = out / "distill"
    if (run / "distilled.safetensors").exists() and (run / "direct_minimum.safetensors").exists():
        console.print(f"reusing the distillation in {run}")
        return run
    from .distill import main as distill_main

    overrides = [f"dataset={cfg.dataset.name}", f"paths.data_dir={cfg.paths.data_dir}", f"seed={cfg.seed}",
                 *cfg.distill_overrides, f"paths.output_dir={run}"]
    if GlobalHydra.instance().is_initialized():
        sub = compose(config_name="distill", overrides=overrides)
    else:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            sub = compose(config_name="distill", overrides=overrides)
    console.print(f"distilling first, into {run} ({' '.join(overrides)})")
    distill_main(sub)
    return run


def check_dataset(cfg: DictConfig, meta: dict, dm, run: Path) -> None:
    """The data must be the data the batch was distilled from, split and normalized the same way
    (the dataset name is checked before the data is loaded, in `main`)."""
    theirs = meta.get("config", {}).get("dataset", {})
    for k in SPLIT_KEYS:
        if k in theirs and theirs[k] != cfg.dataset[k]:
            raise ConfigError(f"{run} was distilled with dataset.{k}={theirs[k]}, the config has "
                              f"{cfg.dataset[k]}: add dataset.{k}={theirs[k]} so train/val/test are the same splits")
    norm = dm.normalization()
    for k in ("mean", "std"):
        if not torch.allclose(torch.tensor(norm[k]), torch.tensor(meta["normalization"][k]), rtol=1e-4):
            raise ArtifactError(f"{run} was distilled with normalization {k}={meta['normalization'][k]}, the data "
                                f"gives {norm[k]}: the dataset files differ from the distillation's")


def fingerprint(cfg: DictConfig, run: Path) -> str:
    """What the per-kind results depend on; a finished kind is reused only when it matches."""
    what = {"analysis": resolved(cfg.analysis), "baseline": resolved(cfg.baseline), "dataset": resolved(cfg.dataset),
            "distilled": str(run.resolve()), "direct_minimum": str(cfg.direct_minimum)}
    direct = Path(cfg.direct_minimum or run)
    weights = [run / "distilled.safetensors", direct / "direct_minimum.safetensors" if direct.is_dir() else direct]
    what["mtimes"] = [p.stat().st_mtime_ns if p.exists() else None for p in weights]
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def land(kind: str, cfg: DictConfig, loop: InnerLoop, sampler: InitSampler, inits, d, dm, device):
    """Landings of `inits` for one batch kind, and the (mean) inner learning rate it used."""
    a = cfg.analysis
    steps = d.lrs.shape[0]
    if kind == "distilled":
        landed = loop.run_stack(inits, d.images.to(device), d.labels.to(device), d.lrs.to(device), a.init_chunk)
        return landed, d.lrs.mean().item()
    n, classes = d.images.shape[0], d.meta["num_classes"]
    if kind == "random_real":
        if n % classes:
            raise ArtifactError(f"the distilled batch has {n} images for {classes} classes: a class-balanced "
                                f"random real batch of that size does not exist; use analysis.kinds without random_real")
        lr = tune_random_real_lr(loop, sampler, dm, n // classes, steps, list(cfg.baseline.lr_grid),
                                 cfg.baseline.tune_inits, seed=a.seed + 10, device=device)
        x, targets = random_real_batches(dm, n // classes, a.inits, loop.loss, seed=a.seed + 11)
        lrs = torch.full((steps, 1), lr)
    else:  # random_synthetic: noise images, random labels, the distilled rate
        x, targets = random_synthetic_batches(a.inits, n, d.images.shape[1:], classes, loop.loss, seed=a.seed + 12)
        lrs, lr = d.lrs, d.lrs.mean().item()
    landed = loop.run_stack(inits, x.to(device), targets.to(device), lrs.to(device), a.init_chunk, batched_data=True)
    return landed, lr


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
    t.add_row("direct minimum", "1", " ".join(f"{k} {dm[k]:.4g}" for k in DIRECT_STATS[:4]),
              *(" ".join(f"{k} {dm[k]:.4g}" for k in DIRECT_STATS[4:]) if i == 0 else "" for i in range(len(kinds) - 1)))
    return t


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="landing")
@task
def main(cfg: DictConfig) -> dict:
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    out = output_dir(cfg)
    if cfg.distilled:
        run = Path(cfg.distilled)
    elif cfg.distill_first:
        run = distill_first(cfg, out)
    else:
        raise ConfigError("distilled= is not set: pass the output directory of distillscape-distill "
                          "(distilled=outputs/distill/<date>/<time>), or distill_first=true to distill here first")
    d = load_distilled(run)
    if d.meta["dataset"] != cfg.dataset.name:
        raise ConfigError(f"{run} was distilled from {d.meta['dataset']}, the config loads {cfg.dataset.name}: "
                          f"add dataset={d.meta['dataset']}")
    a = cfg.analysis
    if a.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("analysis.device=cuda but no CUDA device is available: use analysis.device=cpu")
    device = torch.device(a.device)
    dm = build_datamodule(cfg)
    check_dataset(cfg, d.meta, dm, run)

    net = net_from_meta(d.meta).to(device)
    loop = InnerLoop(net, d.meta["inner"]["loss"])
    sampler = InitSampler(net, d.meta["inner"].get("init_scheme", "default"))
    direct_net, _ = load_direct_minimum(cfg.direct_minimum or run, net_from_meta(d.meta))
    direct = {k: v.detach().to(device) for k, v in direct_net.named_parameters()}

    g = torch.Generator().manual_seed(a.seed)
    sub = torch.randperm(len(dm.train_y), generator=g)[: a.train_examples or len(dm.train_y)]
    n_test = a.test_examples or len(dm.test_y)
    train = TrueTask(loop, dm.train_x[sub].to(device), dm.train_y[sub].to(device), a.data_chunk, a.init_chunk)
    test = TrueTask(loop, dm.test_x[:n_test].to(device), dm.test_y[:n_test].to(device), a.data_chunk, a.init_chunk)
    settings = Settings(**{f.name: a[f.name] for f in fields(Settings)})
    analysis = LandingAnalysis(loop, train, test, (dm.train_x.to(device), dm.train_y.to(device)), direct, settings)

    inits = sampler.sample(a.inits, seed=a.init_seed, device=device)
    at_inits = traj = None
    stamp = fingerprint(cfg, run)
    results, lrs = {}, {}
    for kind in a.kinds:
        part = out / "landing_parts" / f"{kind}.safetensors"
        done = part.with_suffix(".json")
        if done.exists() and read_json(done).get("fingerprint") == stamp:
            results[kind], lrs[kind] = read_tensors(part), read_json(done)["lr"]
            console.print(f"{kind}: reusing {part}")
            continue
        console.print(f"{kind}: landing {a.inits} inits and measuring them on the true task ...")
        t0 = time.perf_counter()
        at_inits = at_inits if at_inits is not None else analysis.at_inits(inits)
        if traj is None and a.trajectory_inits:
            traj = analysis.trajectory(inits)
            write_tensors(out / "landing_parts" / "trajectory.safetensors",
                          {k: traj[k].cpu() for k in ("steps", "train_loss", "test_acc")})
        landed, lrs[kind] = land(kind, cfg, loop, sampler, inits, d, dm, device)
        landed = {k: v.detach() for k, v in landed.items()}
        results[kind] = analysis.landings(inits, landed, at_inits, traj)
        write_tensors(part, results[kind])
        write_json(part.with_suffix(".json"), {"fingerprint": stamp, "lr": lrs[kind]})
        console.print(f"{kind}: done ({len(results[kind]['landing_test_acc'])} landings, "
                      f"{time.perf_counter() - t0:.0f} s)")

    summary = {"dataset": d.meta["dataset"], "arch": d.meta["arch"]["_target_"].rsplit(".", 1)[-1],
               "distilled": str(run), "inner_loss": loop.loss, "settings": resolved(a), "lr": lrs,
               "direct_minimum": analysis.direct_minimum(),
               "kinds": {kind: aggregate(stats) for kind, stats in results.items()}}
    path = out / "landing_parts" / "trajectory.safetensors"
    if a.trajectory_inits and path.exists():
        run_curve = read_tensors(path)
        summary["trajectory"] = {
            "steps": run_curve["steps"].tolist(), "inits": int(run_curve["train_loss"].shape[1]),
            "train_loss": run_curve["train_loss"].mean(dim=1).tolist(), "test_acc": run_curve["test_acc"].mean(dim=1).tolist(),
            **{c: {kind: r[f"curve/{c}"].mean(dim=0).tolist() for kind, r in results.items() if f"curve/{c}" in r}
               for c in CURVES}}
        trajectory_figure(summary, out / "trajectory.png")
    write_json(out / "landing_stats.json", summary)
    write_csv(out / "landing_stats.csv", results)

    logger = build_logger(cfg)
    if logger:
        metrics = {f"landing/{kind}/{stat}": s["mean"] for kind, st in summary["kinds"].items() for stat, s in st.items()}
        metrics.update({f"landing/direct_minimum/{k}": v for k, v in summary["direct_minimum"].items()})
        logger.log_metrics(metrics, step=0)
        log_csv_table(logger, "landing/table", out / "landing_stats.csv")  # W&B only
        logger.save()
    console.print(summary_table(summary))
    console.print(f"landing statistics: {out / 'landing_stats.json'} (+ landing_stats.csv)")
    return summary


if __name__ == "__main__":
    main()
