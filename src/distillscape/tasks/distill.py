"""distillscape-distill, the main job: distill a dataset into a one-step training batch and compare
one-step training on it with direct training and with one step on random real images."""
from __future__ import annotations

import math
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from hydra.utils import instantiate
from omegaconf import DictConfig
from rich.table import Table

from ..artifacts import read_checkpoint, save_distilled, write_json
from ..baseline import random_real_baseline
from ..config import ConfigError, DistillJob, settings
from ..direct import load_direct_minimum, save_direct_minimum
from ..data import SHAPES, to_pixels
from ..distill import DistillModule, memory_estimate
from ..inner import InitSampler, InnerLoop
from ..plots import distilled_figure
from ..resume import (AtomicCheckpointIO, RngState, finished, finished_metrics, fingerprint, identity,
                      keep_csv_history, mark_complete)
from ..tracking import finish_run, log_distilled, log_snapshot
from .common import (console_script, available_memory, memory_line, CONF_DIR, build_datamodule, build_net, build_trainer, console, start_job, peak_memory, resolved,
                     task)
from .train import train_direct


def check_memory(cfg: DictConfig, s: DistillJob) -> None:
    """Refuse a distillation whose estimated peak (distill.memory_estimate) exceeds the memory available,
    before anything is allocated; warn when it takes over half of it. The rates below are the knobs."""
    n, c, h, w, k = SHAPES[s.dataset.name]
    net = instantiate(cfg.arch)(in_channels=c, height=h, width=w, num_classes=k)
    parts = memory_estimate(net, (c, h, w), k, n, s.dataset.batch_size, s.distill)
    on_gpu = s.trainer.accelerator in ("gpu", "cuda") and torch.cuda.is_available()
    if on_gpu:  # the dataset and the runtime stay in host memory; the rest goes to the GPU
        parts = {key: v for key, v in parts.items() if key in ("synthetic_batch", "outer_step")}
        available, where = torch.cuda.mem_get_info()[0], "the GPU"
    else:
        available, where = available_memory(), "this machine"
    total = sum(parts.values())
    knobs = ("lower distill.images_per_class, distill.inits_per_step or dataset.batch_size, or set "
             "distill.batching=loop (one init at a time)")
    if total > available:
        raise ConfigError(f"this distillation {memory_line(parts, available, where)}: {knobs}")
    if total > available / 2:
        console.print(f"[bold]distillscape: warning:[/bold] this distillation {memory_line(parts, available, where)}; "
                      f"it may not fit beside other work ({knobs})")


def direct_fingerprint(cfg: DictConfig) -> str:
    """What the direct baseline of a distill job depends on (not the distillation's own settings)."""
    job = identity(cfg)
    return fingerprint(data={k: job.get(k) for k in ("dataset", "arch", "direct", "seed")}
                       | {"init_scheme": job["distill"]["init_scheme"]})


def direct_baseline(cfg: DictConfig, s: DistillJob, dm, out: Path) -> dict[str, float]:
    """Load the direct minimum given by `direct.checkpoint`, reuse the one this job trained before it was
    stopped (a resumed run), or train one now."""
    net = build_net(cfg, dm)
    fp = direct_fingerprint(cfg)
    if not s.direct.checkpoint and (done := finished(out / "direct_minimum.json", fp, on_mismatch="redo")):
        load_direct_minimum(out, net)
        console.print(f"direct baseline: reusing {out / 'direct_minimum.safetensors'} (trained before the resume)")
        return {k: v for k, v in done.get("metrics", {}).items() if k.startswith("direct/")}
    if s.direct.checkpoint:
        net, meta = load_direct_minimum(s.direct.checkpoint, net)
        # a copy in the run dir: the analyses of this run (landscape, landing, instances) find it there
        save_direct_minimum(out, net, {**meta, "copied_from": str(Path(s.direct.checkpoint).absolute())})
        return {k: v for k, v in meta.get("metrics", {}).items() if k.startswith("direct/")}
    return train_direct(cfg, s, dm, net, out, logger=False, fingerprint=fp)


def artifact_meta(cfg: DictConfig, dm, module: DistillModule, metrics: dict[str, float]) -> dict:
    """What distilled.json records: enough to rebuild the net and the data it was distilled from."""
    d = module.s
    return {"dataset": cfg.dataset.name, "num_classes": dm.num_classes, "classes": dm.classes,
            "image_shape": list(dm.image_shape), "normalization": dm.normalization(),
            "arch": resolved(cfg.arch),
            "inner": {"steps": d.inner_steps, "loss": d.inner_loss, "lr_per_param": d.lr_per_param,
                      "init_mode": d.init_mode, "init_scheme": d.init_scheme, "param_names": module.loop.names},
            "step": module.global_step, "metrics": metrics, "config": resolved(cfg)}


class Snapshots(L.Callback):
    """Every `every` outer steps, the synthetic batch as it then was: snapshots/distilled_stepNNNNNN.*
    (the evolution of the distilled cost surface is swept over these), and to W&B as image history."""

    def __init__(self, cfg: DictConfig, dm, out: Path, every: int):
        self.cfg, self.dm, self.dir, self.every = cfg, dm, out / "snapshots", every

    def save(self, module: DistillModule) -> None:
        meta = artifact_meta(self.cfg, self.dm, module, {})
        distilled = module.to_distilled(meta)
        save_distilled(self.dir, distilled, stem=f"distilled_step{module.global_step:06d}")
        norm = meta["normalization"]
        log_snapshot(module.logger, to_pixels(distilled.images.detach().cpu(), norm["mean"], norm["std"]),
                     module.global_step)

    def on_train_start(self, trainer, module):
        if module.global_step == 0:
            self.save(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if module.global_step % self.every == 0:
            self.save(module)


def run_distillation(cfg: DictConfig, s: DistillJob, dm, out: Path) -> tuple[DistillModule, dict[str, float], float, torch.device]:
    """Fit and test the synthetic batch; also return the device it ran on, since Lightning moves the module
    back to the CPU at teardown and the baseline that follows should run where the distillation ran."""
    net = build_net(cfg, dm)
    real = None
    if s.distill.image_init == "real":
        real, _ = dm.class_balanced_sample(s.distill.images_per_class, torch.Generator().manual_seed(s.seed))
    module = DistillModule(net, dm.num_classes, dm.image_shape, s.distill, real_images=real)
    ckpt = ModelCheckpoint(dirpath=out / "checkpoints", save_last=True, save_top_k=0,
                           every_n_train_steps=s.checkpoint_every)
    callbacks = [ckpt, RngState()] + ([Snapshots(cfg, dm, out, s.snapshot_every)] if s.snapshot_every else [])
    trainer = build_trainer(cfg, callbacks=callbacks, plugins=[AtomicCheckpointIO()])
    resume = resume_checkpoint(s, out)
    if resume is not None:
        step = read_checkpoint(resume)["global_step"]
        kept = keep_csv_history(trainer.logger, step)
        console.print(f"resuming from {resume} at step {step}" + (f" ({kept} logged rows kept)" if kept else ""))
    t0 = time.perf_counter()
    trainer.fit(module, dm, ckpt_path=resume, weights_only=True)
    seconds = time.perf_counter() - t0
    metrics = trainer.test(module, dm, verbose=False)[0]
    return module, metrics, seconds, trainer.strategy.root_device


def resume_checkpoint(s: DistillJob, out: Path) -> Path | None:
    """The checkpoint to resume from, checked before anything starts (a pickle, a truncated file or NaN
    weights are refused in one line); None to start afresh (ckpt_path=last with no checkpoint yet)."""
    if not s.ckpt_path:
        return None
    path = out / "checkpoints" / "last.ckpt" if s.ckpt_path == "last" else Path(s.ckpt_path)
    if s.ckpt_path == "last" and not path.exists():
        return None
    read_checkpoint(path)
    return path


def summary_table(cfg: DictConfig, m: dict[str, float], n: int) -> Table:
    t = Table(title=f"{cfg.dataset.name} / {cfg.arch._target_.rsplit('.', 1)[-1]}: test accuracy")
    for col in ("training", "accuracy", "inits"):
        t.add_column(col)
    t.add_row(f"one step on {n} distilled images", f"{m['test/onestep_acc_mean']:.4f} ± {m['test/onestep_acc_std']:.4f}",
              f"{int(m['test/onestep_inits'])}")
    if "test/onestep_random_init_acc_mean" in m:
        t.add_row("  same, from random inits", f"{m['test/onestep_random_init_acc_mean']:.4f} ± "
                  f"{m['test/onestep_random_init_acc_std']:.4f}", f"{int(m['test/onestep_random_init_inits'])}")
    t.add_row(f"one step on {n} random real images (lr {m['random_real/lr']:g})",
              f"{m['random_real/acc_mean']:.4f} ± {m['random_real/acc_std']:.4f}", f"{int(m['random_real/inits'])}")
    t.add_row(f"direct training ({cfg.direct.epochs} epochs)" if not cfg.direct.checkpoint else "direct training (loaded)",
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


def distill(cfg: DictConfig) -> dict[str, float]:
    """The main job: distill, test over held-out inits, compare; write the run directory. Returns the metrics."""
    s = settings(cfg)
    L.seed_everything(s.seed, workers=True, verbose=False)
    out = Path(cfg.paths.output_dir)
    # before anything is written: a finished job of this config is returned, one of another refused
    if (done := finished_metrics(cfg, out)) is not None:
        console.print(f"already complete: {out} (skip_complete=false recomputes it)")
        return done
    check_memory(cfg, s)
    out = start_job(cfg, out)
    dm = build_datamodule(cfg)
    direct = direct_baseline(cfg, s, dm, out)
    module, metrics, seconds, device = run_distillation(cfg, s, dm, out)
    net, d = build_net(cfg, dm), s.distill
    baseline = random_real_baseline(InnerLoop(net, d.inner_loss), InitSampler(net, d.init_scheme), dm,
                                    d.images_per_class, d.inner_steps, s.baseline, d.eval_inits, d.eval_seed,
                                    device=device)
    metrics = {**metrics, **direct, **baseline, "train/seconds": seconds,
               "train/steps_per_second": (module.global_step - module.first_step) / seconds,
               **peak_memory(device)}
    distilled = module.to_distilled(artifact_meta(cfg, dm, module, metrics))
    save_distilled(out, distilled)
    write_json(out / "metrics.json", metrics)
    norm = dm.normalization()
    distilled_figure(distilled.images, distilled.labels, distilled.lrs, norm["mean"], norm["std"],
                     d.inner_loss, classes=dm.classes, path=out / "distilled.png",
                     context=f"{cfg.dataset.name} / {str(cfg.arch._target_).rsplit('.', 1)[-1]}")
    logger = module.logger
    if logger:
        logger.log_metrics({k: v for k, v in metrics.items() if not k.startswith(("val/", "test/"))},
                           step=module.global_step)
        logger.save()
    log_distilled(logger, out)
    finish_run(logger)
    mark_complete(cfg, out)
    console.print(summary_table(cfg, metrics, distilled.images.shape[0]))
    console.print(f"distilled batch: {out / 'distilled.safetensors'} (+ .json, .png)")
    warning = at_chance_warning(metrics["test/onestep_acc_mean"], dm.num_classes, module.first_outer_loss)
    if warning:
        console.print(f"[bold]distillscape: warning:[/bold] {warning}")
    return metrics


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="distill")
@task
def main(cfg: DictConfig) -> dict[str, float]:
    return distill(cfg)


cli = console_script(main, "distill")

if __name__ == "__main__":
    cli()

