"""distillscape-distill on an RL task (env=cartpole | centipede): distill the task into a batch of states and
action targets whose one inner step trains a policy, and compare it with PPO and with one step on random or
PPO-visited states. Fits and finishes as a dataset's distillation does (tasks/fit.py)."""
from __future__ import annotations

import time
from pathlib import Path

import torch
from rich.table import Table
from torch import nn

from ..artifacts import Distilled, read_tensors, write_tensors
from ..config import ConfigError, DistillJob
from ..direct import load_direct_minimum, save_direct_minimum
from ..inner import InnerLoop
from ..job import Job
from ..models import build_critic, init_parameters_
from ..resume import finished, fingerprint
from ..rl import (RLDistiller, RLDistillModule, VecEnv, action_targets, episode_returns, episode_seeds, one_step_baseline,
                  one_thread, train_ppo, visited_states)
from ..seeds import seed_for
from ..stats import flat_summary
from .common import build_policy, console, peak_memory
from .fit import Snapshots, distill_trainer, finish, fit_and_test, train_rates


def check_rl(job: Job) -> None:
    """The checks of an RL distillation before work: the trainer settings it cannot follow, and (by building its
    nets) an unknown game, a missing ROM, an image classifier as the policy."""
    check_rl_trainer(job.settings)
    rl_nets(job)


def rl_nets(job: Job) -> tuple[nn.Module, nn.Module, tuple[int, ...], int]:
    """A fresh actor (the job's arch) and critic for the job's environment, its observation shape
    and action count."""
    s = job.settings
    probe = VecEnv(s.env, 1)
    shape, actions = probe.obs_shape, probe.num_actions
    probe.close()
    actor = build_policy(job, shape, actions)
    critic = build_critic(shape, s.rl.critic_hidden, getattr(s.arch, "width", 1.0))
    return actor, critic, shape, actions


def rl_direct_fingerprint(job: Job) -> str:
    """What the PPO baseline of an RL distill job depends on (not the distillation's own settings): a
    resumed job whose directory holds a PPO minimum of this fingerprint reuses it."""
    data = job.resolved()
    rl, d = data["rl"], data["distill"]
    return fingerprint(data={"env": data.get("env"), "arch": data.get("arch"), "ppo": rl["ppo"],
                             "rl": {k: rl[k] for k in ("gamma", "gae_lambda", "clip", "critic_hidden", "eval_episodes",
                                                       "eval_actions")},
                             "distill": {k: d[k] for k in ("init_scheme", "eval_seed")}})


def rl_direct_baseline(job: Job, seeds: list[int]) -> tuple[nn.Module, dict[str, float]]:
    """The PPO-trained actor (and critic), loaded from `direct.checkpoint`, reused from this run directory
    (a resumed job: the one it trained before it was stopped), or trained now; saved as the run's
    direct_minimum (+ direct_critic.safetensors), with its greedy return on the test episodes."""
    s, out = job.settings, job.out
    actor, critic, _, _ = rl_nets(job)
    p = s.rl.ppo
    fp = rl_direct_fingerprint(job)
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
    meta = {"env": s.env.name, "kind": "rl", "arch": job.resolved("arch"), "metrics": metrics,
            "trained_with": "ppo", "ppo": job.resolved("rl", "ppo"), "fingerprint": fp}
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


def rl_meta(job: Job, module: RLDistillModule, metrics: dict[str, float]) -> dict:
    """What distilled.json of an RL run records (the keys a dataset's records, for an RL task)."""
    s = job.settings
    d, distiller = s.distill, module.distiller
    return {"kind": "rl", "env": s.env.name, "dataset": None, "num_classes": int(distiller.targets.shape[1]),
            "classes": None, "image_shape": list(distiller.states.shape[1:]), "normalization": None,
            "arch": job.resolved("arch"),
            "inner": {"steps": d.inner_steps, "loss": "mse", "lr_per_param": d.lr_per_param, "init_mode": "random",
                      "init_scheme": d.init_scheme, "param_names": distiller.loop.names},
            "step": module.global_step, "metrics": metrics, "config": job.resolved()}


def rl_distilled(job: Job, module: RLDistillModule, metrics: dict[str, float]) -> Distilled:
    d = module.distiller
    return Distilled(images=d.states.detach().cpu().clone(), labels=d.targets.detach().cpu().clone(),
                     lrs=d.lrs.detach().cpu().clone(), meta=rl_meta(job, module, metrics))


class RLSnapshots(Snapshots):
    """`Snapshots` of an RL distillation: its states, targets and rates every `every` outer steps (no
    images to log)."""

    def __init__(self, job: Job, every: int):
        super().__init__(job.out, every)
        self.job = job

    def batch(self, module: RLDistillModule) -> Distilled:
        return rl_distilled(self.job, module, {})


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


def run_rl_distillation(job: Job, resume: tuple[Path, int] | None = None
                        ) -> tuple[RLDistillModule, dict[str, float], float, torch.device]:
    """Fit (from `resume`) and test an RL distillation through the config's Trainer, as `run_distillation`
    does a dataset's: checkpoints every `checkpoint_every` outer steps, `ckpt_path=last` resumes."""
    s = job.settings
    torch.manual_seed(s.seed)
    actor, critic, shape, num_actions = rl_nets(job)
    module = RLDistillModule(actor, critic, shape, num_actions, s.distill, s.rl, s.env, s.seed)
    trainer = distill_trainer(job, RLSnapshots(job, s.snapshot_every) if s.snapshot_every else None)
    check_rl_trainer(s, trainer.world_size)
    metrics, seconds = fit_and_test(trainer, module, resume)
    return module, metrics, seconds, trainer.strategy.root_device


@one_thread()
def distill_rl(job: Job, resume: tuple[Path, int] | None) -> dict[str, float]:
    """distillscape-distill on an RL task: the PPO baseline, the distillation (RL outer objective) through
    the Trainer, the held-out test and the baselines; writes the usual run directory (distilled.*,
    direct_minimum.*, metrics.json). A stopped job resumes with ckpt_path=last, reusing its PPO baseline."""
    s, out = job.settings, job.out
    d, rl = s.distill, s.rl
    test_seeds = episode_seeds(seed_for(d.eval_seed, "eval", "rl_test_episodes"), rl.eval_episodes)
    ppo_actor, direct = rl_direct_baseline(job, test_seeds)
    module, metrics, seconds, device = run_rl_distillation(job, resume)
    distiller = module.distiller.cpu()
    metrics = {**metrics, **direct,
               **rl_baselines(distiller, s, ppo_actor, distiller.states.shape[0], distiller.targets.shape[1]),
               **train_rates(module, seconds), **peak_memory(device)}
    distilled = rl_distilled(job, module, metrics)
    finish(job, module, distilled, metrics, extra={"distilled_critic.safetensors": dict(distiller.critic.state_dict())})
    console.print(rl_summary_table(s, metrics, distilled.images.shape[0]))
    console.print(f"distilled batch: {out / 'distilled.safetensors'} (+ .json)")
    return metrics


