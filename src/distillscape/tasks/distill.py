"""distillscape-distill, the main job: distill a dataset into a one-step training batch and compare
one-step training on it with direct training and with one step on random real images. With env= set the job
distills an RL task instead (tasks/distill_rl.py); both fit and finish alike (tasks/fit.py)."""
from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig
from rich.table import Table
from torch import nn

from ..artifacts import Distilled
from ..baseline import random_real_baseline
from ..config import DATA_IDENTITY
from ..data import SHAPES, to_pixels
from ..direct import load_direct_minimum, save_direct_minimum
from ..distill import DistillModule, label_targets, memory_estimate
from ..experts import expert_trajectories
from ..imported import Imported, read_imported
from ..inner import InitSampler, InnerLoop
from ..job import Job
from ..matching import METHOD_MODULES, ImportedModule, MTTModule
from ..models import build_net
from ..plots import distilled_figure
from ..errors import ConfigError
from ..resume import check_owner, command_with, finished, finished_metrics, fingerprint
from ..tracking import log_direct_test, log_snapshot, own_step_axis
from .cli import script
from .common import build_datamodule, build_logger, certificate_line, check_fits, console, peak_memory, start_job
from .distill_rl import check_rl, distill_rl
from .fit import Snapshots, distill_trainer, finish, fit_and_test, resume_checkpoint, train_rates
from .train import train_direct


def check_memory(job: Job) -> None:
    """Refuse a distillation whose estimated peak (distill.memory_estimate) exceeds the memory available,
    before anything is allocated; warn when it takes over half of it. The rates below are the knobs."""
    s = job.settings
    n, c, h, w, k = SHAPES[s.dataset.name]
    net = build_net(s.arch, (c, h, w), k)
    device = "cuda" if s.trainer.accelerator in ("gpu", "cuda") and torch.cuda.is_available() else "cpu"
    parts = memory_estimate(net, (c, h, w), k, n, s.dataset.batch_size, s.distill, device)
    check_fits("this distillation", parts, "lower distill.images_per_class, distill.inits_per_step or "
               "dataset.batch_size, or set distill.batching=loop (one init at a time)", s.trainer.accelerator)


def check_data(dm, job: Job) -> None:
    """What the data must hold for the whole job, checked before the baseline trains: the random-real baseline
    (and distill.image_init=real) draws distill.images_per_class training images of every class."""
    dm.check_per_class(job.settings.distill.images_per_class, "the random-real baseline (one step on as many real "
                       "images as distilled, class-balanced)", "or lower distill.images_per_class")


def direct_fingerprint(job: Job) -> str:
    """What the direct baseline of a distill job depends on (not the distillation's own settings)."""
    data = job.resolved()
    return fingerprint(data={k: data.get(k) for k in ("dataset", "arch", "direct", "seed")}
                       | {"init_scheme": data["distill"]["init_scheme"]})


def direct_baseline(job: Job, dm, logger=False) -> dict[str, float]:
    """Load the direct minimum given by `direct.checkpoint`, reuse the one this job trained before it was
    stopped (a resumed run), or train one now. A W&B `logger` (the distillation's own run) gets the
    direct-training curves as `direct/train/loss`, `direct/val/acc`, ..., on their own step axis
    (`direct/step`, `direct/epoch`: tracking.own_step_axis), and a baseline not trained now its test numbers;
    other loggers get none, since their files (metrics.csv, event files) are the distillation's step-ordered
    history."""
    s, out = job.settings, job.out
    net = build_net(s.arch, dm.image_shape, dm.num_classes)
    fp = direct_fingerprint(job)
    if not s.direct.checkpoint and (done := finished(out / "direct_minimum.json", fp, on_mismatch="redo")):
        load_direct_minimum(out, net)
        console.print(f"direct baseline: reusing {out / 'direct_minimum.safetensors'} (trained before the resume)")
        metrics = {k: v for k, v in done.get("metrics", {}).items() if k.startswith("direct/")}
        log_direct_test(logger, metrics)
        return metrics
    if s.direct.checkpoint:
        net, meta = load_direct_minimum(s.direct.checkpoint, net)
        # a copy in the run dir: the analyses of this run (landscape, landing, instances) find it there
        save_direct_minimum(out, net, {**meta, "copied_from": str(Path(s.direct.checkpoint).absolute())})
        metrics = {k: v for k, v in meta.get("metrics", {}).items() if k.startswith("direct/")}
        log_direct_test(logger, metrics)
        return metrics
    curves = logger if isinstance(logger, WandbLogger) else False
    with own_step_axis(curves, "direct/"):
        return train_direct(job, dm, net, logger=curves, fingerprint=fp, metric_prefix="direct/")


def artifact_meta(job: Job, dm, module: DistillModule, metrics: dict[str, float]) -> dict:
    """What distilled.json records: enough to rebuild the net and the data it was distilled from."""
    d = module.s
    return {"dataset": job.settings.dataset.name, "num_classes": dm.num_classes, "classes": dm.classes,
            "image_shape": list(dm.image_shape), "normalization": dm.normalization(),
            "arch": job.resolved("arch"),
            "inner": {"steps": d.inner_steps, "loss": d.inner_loss, "lr_per_param": d.lr_per_param,
                      "init_mode": d.init_mode, "init_scheme": d.init_scheme, "param_names": module.loop.names},
            "method": d.method, "eval": asdict(d.eval),
            "step": module.global_step, "metrics": metrics, "config": job.resolved()}


class ImageSnapshots(Snapshots):
    """`Snapshots` of a dataset's distillation, also sent to W&B as image history."""

    def __init__(self, job: Job, dm, every: int):
        super().__init__(job.out, every)
        self.job, self.dm = job, dm

    def batch(self, module: DistillModule) -> Distilled:
        return module.to_distilled(artifact_meta(self.job, self.dm, module, {}))

    def save(self, module: DistillModule) -> Distilled:
        distilled = super().save(module)
        norm = distilled.meta["normalization"]
        log_snapshot(module.logger, to_pixels(distilled.images.detach().cpu(), norm["mean"], norm["std"]),
                     module.global_step)
        return distilled


def run_distillation(job: Job, dm, resume: tuple[Path, int] | None = None, logger=None,
                     imported: Imported | None = None) -> tuple[DistillModule, dict[str, float], float, torch.device]:
    """Fit (from `resume`: a checked checkpoint and its step) and test the synthetic batch; also return the
    device it ran on, since Lightning moves the module back to the CPU at teardown and the baseline that
    follows should run where the distillation ran."""
    s = job.settings
    net = build_net(s.arch, dm.image_shape, dm.num_classes)
    real = None
    if s.distill.image_init == "real":
        real, _ = dm.class_balanced_sample(s.distill.images_per_class, torch.Generator().manual_seed(s.seed))
    module = distill_module(job, dm, net, real, imported)
    trainer = distill_trainer(job, ImageSnapshots(job, dm, s.snapshot_every) if s.snapshot_every else None, logger)
    if s.distill.method == "import":  # nothing to learn: the imported batch is only evaluated
        metrics = trainer.test(module, dm, verbose=False)[0]
        metrics.pop("step", None)
        return module, metrics, 0.0, trainer.strategy.root_device
    metrics, seconds = fit_and_test(trainer, module, resume, dm)
    return module, metrics, seconds, trainer.strategy.root_device


def distill_module(job: Job, dm, net: nn.Module, real: torch.Tensor | None, imported: Imported | None) -> DistillModule:
    """The LightningModule of distill.method: the bilevel loop (meta) or one of matching.py's."""
    d = job.settings.distill
    if d.method == "meta":
        return DistillModule(net, dm.num_classes, dm.image_shape, d, real_images=real)
    if d.method == "import":
        y = imported.labels
        targets = label_targets(y, dm.num_classes, d.inner_loss, hard=True) if y.dim() == 1 else y.float()
        return ImportedModule(net, dm.num_classes, dm.image_shape, d, imported.images, targets, imported.lr)
    if d.method == "mtt":
        return MTTModule(net, dm.num_classes, dm.image_shape, d, mtt_experts(job, dm, net), real_images=real)
    return METHOD_MODULES[d.method](net, dm.num_classes, dm.image_shape, d, real_images=real)


def mtt_experts(job: Job, dm, net: nn.Module) -> torch.Tensor:
    """The expert trajectories of trajectory matching, trained now or reused from distill.mtt.expert_dir."""
    s = job.settings
    m, d = s.distill.mtt, s.distill
    data = job.resolved()
    what = {"dataset": data["dataset"], "arch": data["arch"], "init_scheme": d.init_scheme, "inner_loss": d.inner_loss,
            "batch_size": s.dataset.batch_size, "mtt": {k: v for k, v in data["distill"]["mtt"].items()
                                                         if k in ("experts", "expert_train_epochs", "lr_teacher", "expert_seed")}}
    what["dataset"] = {k: what["dataset"].get(k) for k in DATA_IDENTITY}
    directory = Path(m.expert_dir) if m.expert_dir else job.out / "experts"
    loop = InnerLoop(net, d.inner_loss)
    targets = label_targets(dm.train_y, dm.num_classes, d.inner_loss, hard=True)
    console.print(f"mtt: expert trajectories in {directory}")
    return expert_trajectories(directory, fingerprint(data=what), loop, InitSampler(net, d.init_scheme), dm.train_x,
                               targets, m, s.dataset.batch_size)


def summary_table(job: Job, m: dict[str, float], n: int) -> Table:
    s = job.settings
    t = Table(title=f"{s.dataset.name} / {s.arch._target_.rsplit('.', 1)[-1]}: test accuracy")
    for col in ("training", "accuracy", "inits"):
        t.add_column(col)
    t.add_row(f"one step on {n} distilled images", f"{m['test/onestep_acc_mean']:.4f} ± {m['test/onestep_acc_std']:.4f}",
              f"{int(m['test/onestep_inits'])}")
    if "test/onestep_random_init_acc_mean" in m:
        t.add_row("  same, from random inits", f"{m['test/onestep_random_init_acc_mean']:.4f} ± "
                  f"{m['test/onestep_random_init_acc_std']:.4f}", f"{int(m['test/onestep_random_init_inits'])}")
    t.add_row(f"one step on {n} random real images (lr {m['random_real/lr']:g})",
              f"{m['random_real/acc_mean']:.4f} ± {m['random_real/acc_std']:.4f}", f"{int(m['random_real/inits'])}")
    t.add_row(f"direct training ({s.direct.epochs} epochs)" if not s.direct.checkpoint else "direct training (loaded)",
              f"{m['direct/acc']:.4f}", "1")
    return t


def at_chance_warning(acc_mean: float, num_classes: int, first_outer_loss: float | None) -> str | None:
    """A line saying what to change when the distilled batch trains about as well as chance (less than
    a tenth of the way from chance to perfect); None when it learned. The first outer loss tells the
    likely cause."""
    chance = 1.0 / num_classes
    if acc_mean >= chance + 0.1 * (1 - chance):
        return None
    line = (f"one-step test accuracy {acc_mean:.3f} is at chance (1/{num_classes} = {chance:.3f}): the "
            f"distillation did not learn. ")
    if first_outer_loss is not None and first_outer_loss > math.log(num_classes) + 0.5:
        return line + (f"Its first outer loss was {first_outer_loss:.3g}, worse than predicting uniformly "
                       f"(ln {num_classes} = {math.log(num_classes):.2f}): the first inner step overshoots, or the "
                       f"inits' own outputs are large (distill.init_scheme=kaiming on simple_convnet's wide linear "
                       f"layer did not learn on MNIST at any lr_init we tried, README). Try a smaller "
                       f"distill.lr_init, or distill.init_scheme=default")
    return line + "Raise distill.steps or the outer rates distill.optim.*, or lower distill.lr_init"


def check(job: Job) -> tuple[dict[str, float] | None, tuple[Path, int] | None, object, Imported | None]:
    """Every check of a distill job before work, also what a multirun runs for each job at submission
    (tasks/submission.py); nothing is written. Returns the metrics of this job finished before (then nothing
    else is checked), the checkpoint to resume from, the data, set up, and the imported set of
    distill.method=import."""
    s = job.settings
    L.seed_everything(s.seed, workers=True, verbose=False)
    # a finished job of this config is returned, one of another refused
    if (done := finished_metrics(job)) is not None:
        return done, None, None, None
    # every refusal before the directory is touched: another job's directory, a bad checkpoint, a run too big, a
    # missing dataset
    check_owner(job)
    resume = resume_checkpoint(job)
    if s.env is not None and (s.distill.eval.precision != "fp32" or s.distill.eval.path != "auto"):
        raise ConfigError("distill.eval.precision and distill.eval.path set how image classifiers are evaluated; an RL "
                          "run is evaluated by its episodes in fp32: leave them at fp32 and auto")
    if s.env is not None:
        check_rl(job)
        return None, resume, None, None
    check_memory(job)
    imported = None
    if s.distill.method == "import":  # a malformed file is refused before anything is trained
        _, c, h, w, k = SHAPES[s.dataset.name]
        imported = read_imported(s.distill.imported.path, k, (c, h, w), s.distill.imported.index)
    dm = build_datamodule(s.dataset)
    check_data(dm, job)
    return None, resume, dm, imported


def distill(cfg: DictConfig) -> dict[str, float]:
    """The main job: distill, test over held-out inits, compare; write the run directory. Returns the metrics."""
    job = Job.of(cfg)
    done, resume, dm, imported = check(job)
    if done is not None:
        console.print(f"already complete: {job.out} (skip_complete=false recomputes it)")
        return done
    start_job(job)
    if job.settings.env is not None:
        return distill_rl(job, resume)
    return distill_dataset(job, dm, resume, imported)


def distill_dataset(job: Job, dm, resume: tuple[Path, int] | None, imported: Imported | None) -> dict[str, float]:
    """A dataset's distillation, its job checked and started: the direct baseline, the distillation, the
    random-real baseline; the run directory written."""
    s, out = job.settings, job.out
    logger = build_logger(job)  # one run for the direct baseline's curves and the distillation's
    direct = direct_baseline(job, dm, logger)
    module, metrics, seconds, device = run_distillation(job, dm, resume, logger, imported)
    net, d = build_net(s.arch, dm.image_shape, dm.num_classes), s.distill
    baseline = random_real_baseline(InnerLoop(net, d.inner_loss), InitSampler(net, d.init_scheme), dm,
                                    d.images_per_class, d.inner_steps, s.baseline, d.eval_inits, d.eval_seed,
                                    s.seed, device=device)
    metrics = {**metrics, **direct, **baseline, **train_rates(module, seconds), **peak_memory(device)}
    meta = {**artifact_meta(job, dm, module, metrics), "computed_with": module.computed_with(device.type)}
    if "test" in module.precision_certificates:  # bf16 evaluation: its certificate, and how to redo it in fp32
        meta["precision"] = {**module.precision_certificates["test"],
                             "fp32_command": command_with(out, "distill.eval.precision=fp32")}
    distilled = module.to_distilled(meta)
    norm = dm.normalization()

    def figure(path: Path) -> None:
        distilled_figure(distilled.images, distilled.labels, distilled.lrs, norm["mean"], norm["std"],
                         d.inner_loss, classes=dm.classes, path=path,
                         context=f"{s.dataset.name} / {str(s.arch._target_).rsplit('.', 1)[-1]}")
    finish(job, module, distilled, metrics, figure=figure)
    console.print(summary_table(job, metrics, distilled.images.shape[0]))
    console.print(f"distilled batch: {out / 'distilled.safetensors'} (+ .json, .png)")
    if "precision" in meta:
        console.print(eval_precision_line(meta["precision"]))
    warning = at_chance_warning(metrics["test/onestep_acc_mean"], dm.num_classes, module.first_outer_loss)
    if warning:
        console.print(f"[bold]distillscape: warning:[/bold] {warning}")
    return metrics


def eval_precision_line(c: dict) -> str:
    return certificate_line(c["precision"], f"the test evaluation's first {c['inits']} inits", c["max_difference"],
                            c["tolerance"], c["passed"], "distilled.json: precision", "the test numbers", c["fp32_command"])


main, cli = script(distill, "distill")

if __name__ == "__main__":  # python -m: the module under its own name runs (tasks.cli.run)
    from .cli import run
    run("distill")
