"""What a dataset's distillation (tasks/distill.py) and an RL task's (tasks/distill_rl.py) share: the checkpoint a
job resumes from, the Trainer that checkpoints it, its snapshots, the fit and test, and the finish (the run
directory's distilled batch and metrics, the logger's last numbers, the complete.json that marks the job done)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger

from ..artifacts import Distilled, read_checkpoint, save_distilled, write_json, write_tensors
from ..job import Job
from ..resume import AtomicCheckpointIO, RngState, check_checkpoint_origin, keep_csv_history, mark_complete
from ..tracking import DIRECT_TEST, finish_run, log_distilled
from .common import build_trainer, console


def resume_checkpoint(job: Job) -> tuple[Path, int] | None:
    """The checkpoint to resume from and its step, checked before the data is read or the baseline trained
    (a pickle, a truncated file or NaN weights, one written by a job of another arch, dataset or inner loop, are
    refused in one line); None to start afresh (ckpt_path=last with no checkpoint yet)."""
    s = job.settings
    if not s.ckpt_path:
        return None
    path = job.out / "checkpoints" / "last.ckpt" if s.ckpt_path == "last" else Path(s.ckpt_path)
    if s.ckpt_path == "last" and not path.exists():
        return None
    check_checkpoint_origin(job, path)
    return path, int(read_checkpoint(path)["global_step"])


class Snapshots(L.Callback):
    """Every `every` outer steps, the synthetic batch as it then was: snapshots/distilled_stepNNNNNN.*
    (the evolution of the distilled cost surface is swept over these). `batch(module)`: the batch now."""

    def __init__(self, out: Path, every: int):
        self.dir, self.every = out / "snapshots", every

    def batch(self, module: L.LightningModule) -> Distilled:
        raise NotImplementedError

    def save(self, module: L.LightningModule) -> Distilled:
        distilled = self.batch(module)
        save_distilled(self.dir, distilled, stem=f"distilled_step{module.global_step:06d}")
        return distilled

    def on_train_start(self, trainer, module):
        if module.global_step == 0:
            self.save(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if module.global_step % self.every == 0:
            self.save(module)


def distill_trainer(job: Job, snapshots: Snapshots | None, logger=None) -> L.Trainer:
    """The job's Trainer for a distillation (a dataset's or an RL task's): checkpoints every
    `checkpoint_every` outer steps, written atomically, with the RNG state; `snapshots` if any."""
    # a rerun into the directory overwrites its last.ckpt (Lightning would write last-v1.ckpt beside a stale one,
    # and ckpt_path=last would then resume from the stale one)
    ckpt = ModelCheckpoint(dirpath=job.out / "checkpoints", save_last=True, save_top_k=0,
                           every_n_train_steps=job.settings.checkpoint_every, enable_version_counter=False)
    callbacks = [ckpt, RngState()] + ([snapshots] if snapshots is not None else [])
    return build_trainer(job, logger=logger, callbacks=callbacks, plugins=[AtomicCheckpointIO()])


def fit_and_test(trainer: L.Trainer, module: L.LightningModule, resume: tuple[Path, int] | None,
                 datamodule=None) -> tuple[dict[str, float], float]:
    """Fit `module` (from `resume`: a checked checkpoint and its step, keeping the CSV rows logged before it)
    and test it; its test metrics and the seconds the fit took."""
    ckpt_path = None
    if resume is not None:
        ckpt_path, step = resume
        kept = keep_csv_history(trainer.logger, step)
        console.print(f"resuming from {ckpt_path} at step {step}" + (f" ({kept} logged rows kept)" if kept else ""))
    t0 = time.perf_counter()
    trainer.fit(module, datamodule, ckpt_path=ckpt_path, weights_only=True)
    seconds = time.perf_counter() - t0
    metrics = trainer.test(module, datamodule, verbose=False)[0]
    metrics.pop("step", None)  # where the test row is logged (the modules' test step), not a result
    return metrics, seconds


def train_rates(module, seconds: float) -> dict[str, float]:
    """The fit's seconds and outer steps per second (an imported batch trains nothing: 0 s, 0 steps)."""
    return {"train/seconds": seconds,
            "train/steps_per_second": (module.global_step - module.first_step) / seconds if seconds else 0.0}


def finish(job: Job, module: L.LightningModule, distilled: Distilled, metrics: dict[str, float],
           figure: Callable[[Path], None] | None = None, extra: dict[str, dict] | None = None) -> None:
    """The end of a distillation job: its distilled batch, `extra` tensor files (name -> tensors) and metrics.json
    in the run directory, its `figure` drawn there (distilled.png; then the batch goes to a W&B run as an image
    and an artifact), the metrics that are not curves to its logger (a W&B run has direct/acc and direct/loss
    already, as the baseline's direct/test/* numbers logged with its curves), the logger closed, and
    complete.json (last: the job is done)."""
    save_distilled(job.out, distilled)
    for name, tensors in (extra or {}).items():
        write_tensors(job.out / name, tensors)
    write_json(job.out / "metrics.json", metrics)
    if figure is not None:
        figure(job.out / "distilled.png")
    logger = module.logger
    if logger:
        logger.log_metrics({k: v for k, v in metrics.items() if not k.startswith(("val/", "test/"))
                            and not (k in DIRECT_TEST and isinstance(logger, WandbLogger))},
                           step=module.global_step)
        logger.save()
    if figure is not None:
        log_distilled(logger, job.out)
    finish_run(logger)
    mark_complete(job)
