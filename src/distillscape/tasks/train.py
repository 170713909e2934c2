"""distillscape-train: train the architecture directly on the real data (the direct baseline and
the true-task minimum used by later analyses)."""
from __future__ import annotations


import lightning as L
import torch
from omegaconf import DictConfig

from ..data import SHAPES
from ..direct import DirectModule, ParameterSnapshots, converge, save_direct_minimum
from ..job import Job
from ..models import build_net, init_parameters_
from ..resume import check_owner
from .cli import script
from .common import (RUNTIME_BYTES, build_datamodule, build_trainer, check_fits, console, dataset_bytes, model_sizes,
                     start_job)


def train_direct(job: Job, dm, net, logger=None, fingerprint: str | None = None,
                 metric_prefix: str = "") -> dict[str, float]:
    """Train `net` on dm's training split, test it, save it as the job's direct minimum; return test metrics.
    job: a train job, or the distill job whose baseline this is; logger: None for the job's, False for none,
    or a logger instance; metric_prefix: before its curves' names."""
    s = job.settings
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.direct.init_seed)
        init_parameters_(net, s.distill.init_scheme if hasattr(s, "distill") else "default")
    module = DirectModule(net, lr=s.direct.lr, weight_decay=s.direct.weight_decay, metric_prefix=metric_prefix)
    # a curve point at least once an epoch: digits has 5 steps per epoch, fewer than log_every_n_steps
    every = max(1, min(s.trainer.log_every_n_steps, len(dm.train_dataloader())))
    snapshots = [ParameterSnapshots(job.out, s.direct.snapshot_every)] if s.direct.snapshot_every else []
    trainer = build_trainer(job, logger=logger, max_epochs=s.direct.epochs, max_steps=-1, log_every_n_steps=every,
                            val_check_interval=1.0, check_val_every_n_epoch=1, enable_checkpointing=False,
                            callbacks=snapshots)
    trainer.fit(module, dm)
    convergence = None
    if s.direct.converge:
        console.print(f"direct training: converging (full-batch L-BFGS until ||grad|| <= {s.direct.converge_grad_tol}, "
                      f"at most {s.direct.converge_max_steps} iterations) ...")
        convergence = converge(net, dm.train_x, dm.train_y, s.direct.converge_grad_tol, s.direct.converge_max_steps,
                               chunk=s.dataset.eval_batch_size)
        console.print(("converged" if convergence["converged"] else "[yellow]NOT converged[/yellow]")
                      + f" after {convergence['steps']} iterations: ||grad|| {convergence['grad_norm']:.3g} "
                        f"(from {convergence['grad_norm_before']:.3g}), train loss {convergence['train_loss']:.4g}")
    result = trainer.test(module, dm, verbose=False)[0]
    metrics = {"direct/acc": result[f"{metric_prefix}test/acc"], "direct/loss": result[f"{metric_prefix}test/loss"]}
    save_direct_minimum(job.out, net, {"dataset": s.dataset.name, "arch": job.resolved("arch"),
                                   "num_classes": dm.num_classes, "image_shape": list(dm.image_shape),
                                   "normalization": dm.normalization(), "metrics": metrics,
                                   "epochs": s.direct.epochs, "config": job.resolved(),
                                   **({"convergence": convergence} if convergence else {}),
                                   **({"fingerprint": fingerprint} if fingerprint else {})})
    return metrics


def check(job: Job):
    """Every check before work (also run for each job of a multirun at submission): the data, set up (a missing
    or corrupt dataset, a split too small, refused before the directory is touched)."""
    s = job.settings
    L.seed_everything(s.seed, workers=True, verbose=False)
    check_owner(job)  # another job's directory refused before the data is read
    n, c, h, w, k = SHAPES[s.dataset.name]
    params, acts = model_sizes(build_net(s.arch, (c, h, w), k), (c, h, w))
    # weights, gradients and Adam's two moments; a training batch's activations kept for the backward
    check_fits("this training", {"runtime": RUNTIME_BYTES, "dataset": dataset_bytes(s.dataset.name),
                                 "parameters": 4 * params * 4, "batch": 2 * s.dataset.batch_size * acts * 4},
               "lower dataset.batch_size", s.trainer.accelerator)
    return build_datamodule(s.dataset)  # a missing or corrupt dataset refused before the directory is touched


def train(cfg: DictConfig) -> dict[str, float]:
    """distillscape-train: the direct baseline alone. Returns its test metrics."""
    job = Job.of(cfg)
    dm = check(job)
    out = start_job(job)
    net = build_net(job.settings.arch, dm.image_shape, dm.num_classes)
    metrics = train_direct(job, dm, net)
    console.print(f"direct training on {job.settings.dataset.name} ({type(net).__name__}): "
                  f"test accuracy {metrics['direct/acc']:.4f}; weights in {out / 'direct_minimum.safetensors'}")
    return metrics


main, cli = script(train, "train")

if __name__ == "__main__":  # python -m: the module under its own name runs (tasks.cli.run)
    from .cli import run
    run("train")
