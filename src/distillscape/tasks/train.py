"""distillscape-train: train the architecture directly on the real data (the direct baseline and
the true-task minimum used by later analyses)."""
from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig

from ..config import settings
from ..direct import DirectModule, ParameterSnapshots, converge, save_direct_minimum
from ..models import init_parameters_
from hydra.utils import instantiate

from ..data import SHAPES
from ..resume import check_owner
from .common import (RUNTIME_BYTES, CONF_DIR, build_datamodule, build_net, build_trainer, check_fits, console,
                     console_script, dataset_bytes, model_sizes, resolved, start_job, task)


def train_direct(cfg: DictConfig, s, dm, net, out: Path, logger=None, fingerprint: str | None = None,
                 metric_prefix: str = "") -> dict[str, float]:
    """Train `net` on dm's training split, test it, save it as the direct minimum; return test metrics.
    s: the job's typed settings (a TrainJob, or the DistillJob whose baseline this is); logger: None for
    the config's, False for none, or a logger instance; metric_prefix: before its curves' names."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.direct.init_seed)
        init_parameters_(net, s.distill.init_scheme if hasattr(s, "distill") else "default")
    module = DirectModule(net, lr=s.direct.lr, weight_decay=s.direct.weight_decay, metric_prefix=metric_prefix)
    # a curve point at least once an epoch: digits has 5 steps per epoch, fewer than log_every_n_steps
    every = max(1, min(cfg.trainer.log_every_n_steps, len(dm.train_dataloader())))
    snapshots = [ParameterSnapshots(out, s.direct.snapshot_every)] if s.direct.snapshot_every else []
    trainer = build_trainer(cfg, logger=logger, max_epochs=s.direct.epochs, max_steps=-1, log_every_n_steps=every,
                            val_check_interval=1.0, check_val_every_n_epoch=1, enable_checkpointing=False,
                            callbacks=snapshots)
    trainer.fit(module, dm)
    convergence = None
    if s.direct.converge:
        console.print(f"direct training: converging (full-batch L-BFGS until ||grad|| <= {s.direct.converge_grad_tol}, "
                      f"at most {s.direct.converge_max_steps} iterations) ...")
        convergence = converge(net, dm.train_x, dm.train_y, s.direct.converge_grad_tol, s.direct.converge_max_steps,
                               chunk=cfg.dataset.eval_batch_size)
        console.print(("converged" if convergence["converged"] else "[yellow]NOT converged[/yellow]")
                      + f" after {convergence['steps']} iterations: ||grad|| {convergence['grad_norm']:.3g} "
                        f"(from {convergence['grad_norm_before']:.3g}), train loss {convergence['train_loss']:.4g}")
    result = trainer.test(module, dm, verbose=False)[0]
    metrics = {"direct/acc": result[f"{metric_prefix}test/acc"], "direct/loss": result[f"{metric_prefix}test/loss"]}
    save_direct_minimum(out, net, {"dataset": cfg.dataset.name, "arch": resolved(cfg.arch),
                                   "num_classes": dm.num_classes, "image_shape": list(dm.image_shape),
                                   "normalization": dm.normalization(), "metrics": metrics,
                                   "epochs": s.direct.epochs, "config": resolved(cfg),
                                   **({"convergence": convergence} if convergence else {}),
                                   **({"fingerprint": fingerprint} if fingerprint else {})})
    return metrics


def check(cfg: DictConfig):
    """Every check before work (also run for each job of a multirun at submission): the settings and the data,
    set up (a missing or corrupt dataset, a split too small, refused before the directory is touched)."""
    s = settings(cfg)
    L.seed_everything(s.seed, workers=True, verbose=False)
    check_owner(cfg, Path(cfg.paths.output_dir))  # another job's directory refused before the data is read
    n, c, h, w, k = SHAPES[s.dataset.name]
    params, acts = model_sizes(instantiate(cfg.arch)(in_channels=c, height=h, width=w, num_classes=k), (c, h, w))
    # weights, gradients and Adam's two moments; a training batch's activations kept for the backward
    check_fits("this training", {"runtime": RUNTIME_BYTES, "dataset": dataset_bytes(s.dataset.name),
                                 "parameters": 4 * params * 4, "batch": 2 * s.dataset.batch_size * acts * 4},
               "lower dataset.batch_size", s.trainer.accelerator)
    return s, build_datamodule(cfg)  # a missing or corrupt dataset refused before the directory is touched


def train(cfg: DictConfig) -> dict[str, float]:
    """distillscape-train: the direct baseline alone. Returns its test metrics."""
    s, dm = check(cfg)
    out = start_job(cfg)
    net = build_net(cfg, dm)
    metrics = train_direct(cfg, s, dm, net, out)
    console.print(f"direct training on {cfg.dataset.name} ({type(net).__name__}): "
                  f"test accuracy {metrics['direct/acc']:.4f}; weights in {out / 'direct_minimum.safetensors'}")
    return metrics


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
@task
def main(cfg: DictConfig) -> dict[str, float]:
    return train(cfg)


cli = console_script(main, "train")

if __name__ == "__main__":  # python -m: the module under its own name runs (tasks.entry.run)
    from .entry import run
    run("train")
