"""distillscape-distill, the main job: distill a dataset into a one-step training batch and compare
one-step training on it with direct training and with one step on random real images."""
from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from hydra.utils import instantiate
from omegaconf import DictConfig
from rich.table import Table

from torch import nn

from ..artifacts import Distilled, read_checkpoint, read_tensors, save_distilled, write_json, write_tensors
from ..baseline import random_real_baseline
from ..config import DATA_IDENTITY, ConfigError, DistillJob, settings
from ..direct import load_direct_minimum, save_direct_minimum
from ..data import SHAPES, to_pixels
from ..distill import DistillModule, label_targets, memory_estimate
from ..experts import expert_trajectories
from ..imported import Imported, read_imported
from ..matching import METHOD_MODULES, ImportedModule, MTTModule
from ..inner import InitSampler, InnerLoop
from ..models import AtariActor, PolicyMLP, init_parameters_
from ..rl import (RLDistiller, RLDistillModule, VecEnv, action_targets, one_thread, episode_returns, episode_seeds,
                  one_step_baseline, train_ppo, visited_states)
from ..seeds import seed_for
from ..stats import flat_summary
from ..plots import distilled_figure
from ..resume import (AtomicCheckpointIO, RngState, check_checkpoint_origin, check_owner, command_with, finished, finished_metrics, fingerprint, identity,
                      keep_csv_history, mark_complete)
from ..tracking import DIRECT_TEST, finish_run, log_direct_test, log_distilled, log_snapshot, own_step_axis
from .common import (CONF_DIR, build_datamodule, certificate_line, check_fits, build_logger, build_net, build_policy,
                     build_trainer, console, console_script, peak_memory, resolved, start_job, task)
from .train import train_direct


def check_memory(cfg: DictConfig, s: DistillJob) -> None:
    """Refuse a distillation whose estimated peak (distill.memory_estimate) exceeds the memory available,
    before anything is allocated; warn when it takes over half of it. The rates below are the knobs."""
    n, c, h, w, k = SHAPES[s.dataset.name]
    net = instantiate(cfg.arch)(in_channels=c, height=h, width=w, num_classes=k)
    device = "cuda" if s.trainer.accelerator in ("gpu", "cuda") and torch.cuda.is_available() else "cpu"
    parts = memory_estimate(net, (c, h, w), k, n, s.dataset.batch_size, s.distill, device)
    check_fits("this distillation", parts, "lower distill.images_per_class, distill.inits_per_step or "
               "dataset.batch_size, or set distill.batching=loop (one init at a time)", s.trainer.accelerator)


def check_data(dm, s: DistillJob) -> None:
    """What the data must hold for the whole job, checked before the baseline trains: the random-real baseline
    (and distill.image_init=real) draws distill.images_per_class training images of every class."""
    dm.check_per_class(s.distill.images_per_class, "the random-real baseline (one step on as many real images as "
                                                   "distilled, class-balanced)", "or lower distill.images_per_class")


def direct_fingerprint(cfg: DictConfig) -> str:
    """What the direct baseline of a distill job depends on (not the distillation's own settings)."""
    job = identity(cfg)
    return fingerprint(data={k: job.get(k) for k in ("dataset", "arch", "direct", "seed")}
                       | {"init_scheme": job["distill"]["init_scheme"]})


def direct_baseline(cfg: DictConfig, s: DistillJob, dm, out: Path, logger=False) -> dict[str, float]:
    """Load the direct minimum given by `direct.checkpoint`, reuse the one this job trained before it was
    stopped (a resumed run), or train one now. A W&B `logger` (the distillation's own run) gets the
    direct-training curves as `direct/train/loss`, `direct/val/acc`, ..., on their own step axis
    (`direct/step`, `direct/epoch`: tracking.own_step_axis), and a baseline not trained now its test numbers;
    other loggers get none, since their files (metrics.csv, event files) are the distillation's step-ordered
    history."""
    net = build_net(cfg, dm)
    fp = direct_fingerprint(cfg)
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
        return train_direct(cfg, s, dm, net, out, logger=curves, fingerprint=fp, metric_prefix="direct/")


def artifact_meta(cfg: DictConfig, dm, module: DistillModule, metrics: dict[str, float]) -> dict:
    """What distilled.json records: enough to rebuild the net and the data it was distilled from."""
    d = module.s
    return {"dataset": cfg.dataset.name, "num_classes": dm.num_classes, "classes": dm.classes,
            "image_shape": list(dm.image_shape), "normalization": dm.normalization(),
            "arch": resolved(cfg.arch),
            "inner": {"steps": d.inner_steps, "loss": d.inner_loss, "lr_per_param": d.lr_per_param,
                      "init_mode": d.init_mode, "init_scheme": d.init_scheme, "param_names": module.loop.names},
            "method": d.method, "eval": asdict(d.eval),
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


def run_distillation(cfg: DictConfig, s: DistillJob, dm, out: Path, resume: tuple[Path, int] | None = None,
                     logger=None, imported: Imported | None = None) -> tuple[DistillModule, dict[str, float], float, torch.device]:
    """Fit (from `resume`: a checked checkpoint and its step) and test the synthetic batch; also return the
    device it ran on, since Lightning moves the module back to the CPU at teardown and the baseline that
    follows should run where the distillation ran."""
    net = build_net(cfg, dm)
    real = None
    if s.distill.image_init == "real":
        real, _ = dm.class_balanced_sample(s.distill.images_per_class, torch.Generator().manual_seed(s.seed))
    module = distill_module(cfg, s, dm, net, out, real, imported)
    trainer = distill_trainer(cfg, s, out, Snapshots(cfg, dm, out, s.snapshot_every) if s.snapshot_every else None,
                              logger)
    if s.distill.method == "import":  # nothing to learn: the imported batch is only evaluated
        metrics = trainer.test(module, dm, verbose=False)[0]
        metrics.pop("step", None)
        return module, metrics, 0.0, trainer.strategy.root_device
    metrics, seconds = fit_and_test(trainer, module, resume, dm)
    return module, metrics, seconds, trainer.strategy.root_device


def distill_module(cfg: DictConfig, s: DistillJob, dm, net: nn.Module, out: Path, real: torch.Tensor | None,
                   imported: Imported | None) -> DistillModule:
    """The LightningModule of distill.method: the bilevel loop (meta) or one of matching.py's."""
    d = s.distill
    if d.method == "meta":
        return DistillModule(net, dm.num_classes, dm.image_shape, d, real_images=real)
    if d.method == "import":
        y = imported.labels
        targets = label_targets(y, dm.num_classes, d.inner_loss, hard=True) if y.dim() == 1 else y.float()
        return ImportedModule(net, dm.num_classes, dm.image_shape, d, imported.images, targets, imported.lr)
    if d.method == "mtt":
        return MTTModule(net, dm.num_classes, dm.image_shape, d, mtt_experts(cfg, s, dm, net, out), real_images=real)
    return METHOD_MODULES[d.method](net, dm.num_classes, dm.image_shape, d, real_images=real)


def mtt_experts(cfg: DictConfig, s: DistillJob, dm, net: nn.Module, out: Path) -> torch.Tensor:
    """The expert trajectories of trajectory matching, trained now or reused from distill.mtt.expert_dir."""
    m, d = s.distill.mtt, s.distill
    job = identity(cfg)
    what = {"dataset": job["dataset"], "arch": job["arch"], "init_scheme": d.init_scheme, "inner_loss": d.inner_loss,
            "batch_size": s.dataset.batch_size, "mtt": {k: v for k, v in job["distill"]["mtt"].items()
                                                         if k in ("experts", "expert_train_epochs", "lr_teacher", "expert_seed")}}
    what["dataset"] = {k: what["dataset"].get(k) for k in DATA_IDENTITY}
    directory = Path(m.expert_dir) if m.expert_dir else out / "experts"
    loop = InnerLoop(net, d.inner_loss)
    targets = label_targets(dm.train_y, dm.num_classes, d.inner_loss, hard=True)
    console.print(f"mtt: expert trajectories in {directory}")
    return expert_trajectories(directory, fingerprint(data=what), loop, InitSampler(net, d.init_scheme), dm.train_x,
                               targets, m, s.dataset.batch_size)


def distill_trainer(cfg: DictConfig, s: DistillJob, out: Path, snapshots: L.Callback | None, logger=None) -> L.Trainer:
    """The config's Trainer for a distillation (a dataset's or an RL task's): checkpoints every
    `checkpoint_every` outer steps, written atomically, with the RNG state; `snapshots` if any."""
    # a rerun into the directory overwrites its last.ckpt (Lightning would write last-v1.ckpt beside a stale one,
    # and ckpt_path=last would then resume from the stale one)
    ckpt = ModelCheckpoint(dirpath=out / "checkpoints", save_last=True, save_top_k=0,
                           every_n_train_steps=s.checkpoint_every, enable_version_counter=False)
    callbacks = [ckpt, RngState()] + ([snapshots] if snapshots is not None else [])
    return build_trainer(cfg, logger=logger, callbacks=callbacks, plugins=[AtomicCheckpointIO()])


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


def resume_checkpoint(cfg: DictConfig, s: DistillJob, out: Path) -> tuple[Path, int] | None:
    """The checkpoint to resume from and its step, checked before the data is read or the baseline trained
    (a pickle, a truncated file or NaN weights, one written by a job of another arch, dataset or inner loop, are
    refused in one line); None to start afresh (ckpt_path=last with no checkpoint yet)."""
    if not s.ckpt_path:
        return None
    path = out / "checkpoints" / "last.ckpt" if s.ckpt_path == "last" else Path(s.ckpt_path)
    if s.ckpt_path == "last" and not path.exists():
        return None
    check_checkpoint_origin(cfg, path)
    return path, int(read_checkpoint(path)["global_step"])


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


def check(cfg: DictConfig) -> tuple[DistillJob, dict[str, float] | None, tuple[Path, int] | None, object,
                                   Imported | None]:
    """Every check of a distill job before work, also what a multirun runs for each job at submission
    (tasks/submission.py); nothing is written. Returns the settings, the metrics of this job finished
    before (then nothing else is checked), the checkpoint to resume from, the data, set up, and the
    imported set of distill.method=import."""
    s = settings(cfg)
    L.seed_everything(s.seed, workers=True, verbose=False)
    out = Path(cfg.paths.output_dir)
    # a finished job of this config is returned, one of another refused
    if (done := finished_metrics(cfg, out)) is not None:
        return s, done, None, None, None
    # every refusal before the directory is touched: another job's directory, a bad checkpoint, a run too big, a
    # missing dataset
    check_owner(cfg, out)
    resume = resume_checkpoint(cfg, s, out)
    if s.env is not None and (s.distill.eval.precision != "fp32" or s.distill.eval.path != "auto"):
        raise ConfigError("distill.eval.precision and distill.eval.path set how image classifiers are evaluated; an RL "
                          "run is evaluated by its episodes in fp32: leave them at fp32 and auto")
    if s.env is not None:
        check_rl_trainer(s)
        rl_nets(cfg, s)  # an unknown game, a missing ROM, an image classifier as the policy
        return s, None, resume, None, None
    check_memory(cfg, s)
    imported = None
    if s.distill.method == "import":  # a malformed file is refused before anything is trained
        _, c, h, w, k = SHAPES[s.dataset.name]
        imported = read_imported(s.distill.imported.path, k, (c, h, w), s.distill.imported.index)
    dm = build_datamodule(cfg)
    check_data(dm, s)
    return s, None, resume, dm, imported


def distill(cfg: DictConfig) -> dict[str, float]:
    """The main job: distill, test over held-out inits, compare; write the run directory. Returns the metrics."""
    s, done, resume, dm, imported = check(cfg)
    out = Path(cfg.paths.output_dir)
    if done is not None:
        console.print(f"already complete: {out} (skip_complete=false recomputes it)")
        return done
    if s.env is not None:
        return distill_rl(cfg, s, start_job(cfg, out), resume)
    out = start_job(cfg, out)
    logger = build_logger(cfg)  # one run for the direct baseline's curves and the distillation's
    direct = direct_baseline(cfg, s, dm, out, logger)
    module, metrics, seconds, device = run_distillation(cfg, s, dm, out, resume, logger, imported)
    net, d = build_net(cfg, dm), s.distill
    baseline = random_real_baseline(InnerLoop(net, d.inner_loss), InitSampler(net, d.init_scheme), dm,
                                    d.images_per_class, d.inner_steps, s.baseline, d.eval_inits, d.eval_seed,
                                    s.seed, device=device)
    metrics = {**metrics, **direct, **baseline, "train/seconds": seconds,  # an import trains nothing: 0 s, 0 steps
               "train/steps_per_second": (module.global_step - module.first_step) / seconds if seconds else 0.0,
               **peak_memory(device)}
    meta = {**artifact_meta(cfg, dm, module, metrics), "computed_with": module.computed_with(device.type)}
    if "test" in module.precision_certificates:  # bf16 evaluation: its certificate, and how to redo it in fp32
        meta["precision"] = {**module.precision_certificates["test"],
                             "fp32_command": command_with(out, "distill.eval.precision=fp32")}
    distilled = module.to_distilled(meta)
    save_distilled(out, distilled)
    write_json(out / "metrics.json", metrics)
    norm = dm.normalization()
    distilled_figure(distilled.images, distilled.labels, distilled.lrs, norm["mean"], norm["std"],
                     d.inner_loss, classes=dm.classes, path=out / "distilled.png",
                     context=f"{cfg.dataset.name} / {str(cfg.arch._target_).rsplit('.', 1)[-1]}")
    logger = module.logger
    if logger:
        # direct/acc and direct/loss are the baseline's direct/test/* numbers, logged with its curves
        logger.log_metrics({k: v for k, v in metrics.items() if not k.startswith(("val/", "test/"))
                            and not (k in DIRECT_TEST and isinstance(logger, WandbLogger))},
                           step=module.global_step)
        logger.save()
    log_distilled(logger, out)
    finish_run(logger)
    mark_complete(cfg, out)
    console.print(summary_table(cfg, metrics, distilled.images.shape[0]))
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


# -- an RL task (env=cartpole | centipede) ---------------------------------------------------------------------------
def rl_nets(cfg: DictConfig, s: DistillJob) -> tuple[nn.Module, nn.Module, tuple[int, ...], int]:
    """A fresh actor (the config's arch) and critic for the config's environment, its observation shape
    and action count."""
    probe = VecEnv(s.env, 1)
    shape, actions = probe.obs_shape, probe.num_actions
    probe.close()
    actor = build_policy(cfg, shape, actions)
    if len(shape) == 1:
        critic = PolicyMLP(shape[0], 1, s.rl.critic_hidden)
    else:
        critic = AtariActor(0, 1, *shape, width=cfg.arch.get("width", 1.0))
    return actor, critic, shape, actions


def rl_direct_fingerprint(cfg: DictConfig) -> str:
    """What the PPO baseline of an RL distill job depends on (not the distillation's own settings): a
    resumed job whose directory holds a PPO minimum of this fingerprint reuses it."""
    job = identity(cfg)
    rl, d = job["rl"], job["distill"]
    return fingerprint(data={"env": job.get("env"), "arch": job.get("arch"), "ppo": rl["ppo"],
                             "rl": {k: rl[k] for k in ("gamma", "gae_lambda", "clip", "critic_hidden", "eval_episodes",
                                                       "eval_actions")},
                             "distill": {k: d[k] for k in ("init_scheme", "eval_seed")}})


def rl_direct_baseline(cfg: DictConfig, s: DistillJob, out: Path, seeds: list[int]) -> tuple[nn.Module, dict[str, float]]:
    """The PPO-trained actor (and critic), loaded from `direct.checkpoint`, reused from this run directory
    (a resumed job: the one it trained before it was stopped), or trained now; saved as the run's
    direct_minimum (+ direct_critic.safetensors), with its greedy return on the test episodes."""
    actor, critic, _, _ = rl_nets(cfg, s)
    p = s.rl.ppo
    fp = rl_direct_fingerprint(cfg)
    if not s.direct.checkpoint and (done := finished(out / "direct_minimum.json", fp, on_mismatch="redo")):
        actor, _ = load_direct_minimum(out, actor)
        critic.load_state_dict(read_tensors(out / "direct_critic.safetensors"))
        console.print(f"direct baseline: reusing {out / 'direct_minimum.safetensors'} (PPO-trained before the resume)")
        return actor, done["metrics"]
    if s.direct.checkpoint:
        actor, meta = load_direct_minimum(s.direct.checkpoint, actor)
        src = Path(s.direct.checkpoint)
        src = src if src.is_dir() else src.parent
        critic.load_state_dict(read_tensors(src / "direct_critic.safetensors"))
        info = {k: v for k, v in meta.get("metrics", {}).items() if k.startswith("ppo/")}
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p.init_seed)
            init_parameters_(actor, s.distill.init_scheme)
            init_parameters_(critic, s.distill.init_scheme)
        t0 = time.perf_counter()
        info = train_ppo(actor, critic, s.env, p.env_steps, envs=p.envs, horizon=p.horizon, epochs=p.epochs,
                         minibatches=p.minibatches, lr=p.lr, gamma=s.rl.gamma, lam=s.rl.gae_lambda, clip=s.rl.clip,
                         ent_coef=p.ent_coef, seed=p.init_seed)
        info["ppo/seconds"] = time.perf_counter() - t0
    loop = InnerLoop(actor)
    params = {k: v.detach().unsqueeze(0) for k, v in actor.named_parameters()}
    returns = episode_returns(loop, params, s.env, seeds, s.rl.eval_actions == "greedy")[0]
    metrics = {**info, **flat_summary(returns, "direct/return"), "direct/episodes": float(len(seeds))}
    meta = {"env": s.env.name, "kind": "rl", "arch": resolved(cfg.arch), "metrics": metrics,
            "trained_with": "ppo", "ppo": resolved(cfg.rl.ppo), "fingerprint": fp}
    # the critic first: direct_minimum.json, written last, marks the pair finished
    write_tensors(out / "direct_critic.safetensors", dict(critic.state_dict()))
    save_direct_minimum(out, actor, meta)
    return actor, metrics


def rl_baselines(distiller: RLDistiller, s: DistillJob, ppo_actor: nn.Module, n: int, num_actions: int) -> dict[str, float]:
    """One step (rate tuned on other inits and episodes) on n random states with random action labels, and
    on n states the PPO policy visits labelled with its actions, from the test inits on the test episodes."""
    d, rl = s.distill, s.rl
    loop, greedy = distiller.loop, rl.eval_actions == "greedy"
    tune_inits = distiller.sampler.sample(d.val_inits, seed=seed_for(d.eval_seed, "eval", "rl_baseline_tune"))
    tune_seeds = episode_seeds(seed_for(d.eval_seed, "eval", "rl_baseline_tune"), rl.eval_episodes)
    test_inits = distiller.sampler.sample(d.eval_inits, seed=seed_for(d.eval_seed, "eval", "test_inits"))
    test_seeds = episode_seeds(seed_for(d.eval_seed, "eval", "rl_test_episodes"), rl.eval_episodes)
    # the batches differ from seed to seed, as the distilled one does (the inits and episodes are shared)
    batch_seed = seed_for(d.eval_seed, "eval", "rl_baseline_batch", s.seed)
    gen = torch.Generator().manual_seed(batch_seed)
    random_states = torch.randn(n, *distiller.states.shape[1:], generator=gen) * rl.state_init_std
    random_targets = action_targets(torch.randint(num_actions, (n,), generator=gen), num_actions, rl.target_scale)
    visited, actions = visited_states(ppo_actor, s.env, n, batch_seed)
    out: dict[str, float] = {}
    for name, (x, y) in {"random_states": (random_states, random_targets),
                         "ppo_states": (visited, action_targets(actions, num_actions, rl.target_scale))}.items():
        r, lr = one_step_baseline(loop, tune_inits, test_inits, x, y, list(rl.baseline_lrs), s.env, tune_seeds,
                                  test_seeds, greedy)
        out.update({**flat_summary(r, f"{name}/return"), f"{name}/lr": lr, f"{name}/inits": float(len(r))})
    return out


def rl_summary_table(s: DistillJob, m: dict[str, float], n: int) -> Table:
    t = Table(title=f"{s.env.name}: episode return ({s.rl.eval_actions} actions, {s.rl.eval_episodes} episodes per init)")
    for col in ("policy", "return mean ± std", "min", "max", "inits"):
        t.add_column(col)

    def row(label, p, inits):
        t.add_row(label, f"{m[p + '_mean']:.1f} ± {m[p + '_std']:.1f}", f"{m[p + '_min']:.1f}", f"{m[p + '_max']:.1f}", inits)

    row(f"one step on {n} distilled states", "test/onestep_return", f"{int(m['test/onestep_inits'])}")
    row(f"one step on {n} random states, random actions (lr {m['random_states/lr']:g})", "random_states/return",
        f"{int(m['random_states/inits'])}")
    row(f"one step on {n} PPO-visited states, PPO's actions (lr {m['ppo_states/lr']:g})", "ppo_states/return",
        f"{int(m['ppo_states/inits'])}")
    row("PPO (direct)", "direct/return", "1")
    return t


def rl_meta(cfg: DictConfig, s: DistillJob, module: RLDistillModule, metrics: dict[str, float]) -> dict:
    """What distilled.json of an RL run records (the keys a dataset's records, for an RL task)."""
    d, distiller = s.distill, module.distiller
    return {"kind": "rl", "env": s.env.name, "dataset": None, "num_classes": int(distiller.targets.shape[1]),
            "classes": None, "image_shape": list(distiller.states.shape[1:]), "normalization": None,
            "arch": resolved(cfg.arch),
            "inner": {"steps": d.inner_steps, "loss": "mse", "lr_per_param": d.lr_per_param, "init_mode": "random",
                      "init_scheme": d.init_scheme, "param_names": distiller.loop.names},
            "step": module.global_step, "metrics": metrics, "config": resolved(cfg)}


def rl_distilled(cfg: DictConfig, s: DistillJob, module: RLDistillModule, metrics: dict[str, float]) -> Distilled:
    d = module.distiller
    return Distilled(images=d.states.detach().cpu().clone(), labels=d.targets.detach().cpu().clone(),
                     lrs=d.lrs.detach().cpu().clone(), meta=rl_meta(cfg, s, module, metrics))


class RLSnapshots(Snapshots):
    """`Snapshots` of an RL distillation: its states, targets and rates every `every` outer steps (no
    images to log)."""

    def __init__(self, cfg: DictConfig, s: DistillJob, out: Path, every: int):
        super().__init__(cfg, None, out, every)
        self.s = s

    def save(self, module: RLDistillModule) -> None:
        save_distilled(self.dir, rl_distilled(self.cfg, self.s, module, {}),
                       stem=f"distilled_step{module.global_step:06d}")


def check_rl_trainer(s: DistillJob, devices: int | None = None) -> None:
    """The trainer= settings an RL distillation cannot follow, refused in one line (before the PPO baseline
    is trained; `devices`: the count a built Trainer found, for trainer.devices=auto)."""
    if s.trainer.gradient_clip_val:
        raise ConfigError("trainer.gradient_clip_val does not apply to an RL distillation (its PPO epochs step the "
                          "optimizer themselves); leave it unset")
    d = s.trainer.devices
    n = devices if devices is not None else (d if isinstance(d, int) else len(d) if isinstance(d, (list, tuple)) else 1)
    if n > 1:
        raise ConfigError(f"an RL distillation runs on one device (its environments step in this process); "
                          f"trainer.devices={d} gives {n}: set trainer.devices=1")


def run_rl_distillation(cfg: DictConfig, s: DistillJob, out: Path, resume: tuple[Path, int] | None = None
                        ) -> tuple[RLDistillModule, dict[str, float], float, torch.device]:
    """Fit (from `resume`) and test an RL distillation through the config's Trainer, as `run_distillation`
    does a dataset's: checkpoints every `checkpoint_every` outer steps, `ckpt_path=last` resumes."""
    torch.manual_seed(s.seed)
    actor, critic, shape, num_actions = rl_nets(cfg, s)
    module = RLDistillModule(actor, critic, shape, num_actions, s.distill, s.rl, s.env, s.seed)
    trainer = distill_trainer(cfg, s, out, RLSnapshots(cfg, s, out, s.snapshot_every) if s.snapshot_every else None)
    check_rl_trainer(s, trainer.world_size)
    metrics, seconds = fit_and_test(trainer, module, resume)
    return module, metrics, seconds, trainer.strategy.root_device


@one_thread()
def distill_rl(cfg: DictConfig, s: DistillJob, out: Path, resume: tuple[Path, int] | None) -> dict[str, float]:
    """distillscape-distill on an RL task: the PPO baseline, the distillation (RL outer objective) through
    the Trainer, the held-out test and the baselines; writes the usual run directory (distilled.*,
    direct_minimum.*, metrics.json). A stopped job resumes with ckpt_path=last, reusing its PPO baseline."""
    d, rl = s.distill, s.rl
    test_seeds = episode_seeds(seed_for(d.eval_seed, "eval", "rl_test_episodes"), rl.eval_episodes)
    ppo_actor, direct = rl_direct_baseline(cfg, s, out, test_seeds)
    module, metrics, seconds, device = run_rl_distillation(cfg, s, out, resume)
    distiller = module.distiller.cpu()
    metrics = {**metrics, **direct,
               **rl_baselines(distiller, s, ppo_actor, distiller.states.shape[0], distiller.targets.shape[1]),
               "train/seconds": seconds,
               "train/steps_per_second": (module.global_step - module.first_step) / seconds, **peak_memory(device)}
    distilled = rl_distilled(cfg, s, module, metrics)
    save_distilled(out, distilled)
    write_tensors(out / "distilled_critic.safetensors", dict(distiller.critic.state_dict()))
    write_json(out / "metrics.json", metrics)
    logger = module.logger
    if logger:
        logger.log_metrics({k: v for k, v in metrics.items() if not k.startswith(("val/", "test/"))},
                           step=module.global_step)
        logger.save()
    finish_run(logger)
    mark_complete(cfg, out)
    console.print(rl_summary_table(s, metrics, distilled.images.shape[0]))
    console.print(f"distilled batch: {out / 'distilled.safetensors'} (+ .json)")
    return metrics


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="distill")
@task
def main(cfg: DictConfig) -> dict[str, float]:
    return distill(cfg)


cli = console_script(main, "distill")

if __name__ == "__main__":  # python -m: the module under its own name runs (tasks.entry.run)
    from .entry import run
    run("distill")

