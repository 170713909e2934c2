"""One-step distillation of an RL task: `RLDistiller` (learnable states, action targets and inner rates,
the critic; the PPO outer objective through the inner step, or evolution strategies) and
`RLDistillModule` (it as a LightningModule: the Trainer runs, checkpoints and resumes it)."""
from __future__ import annotations

import itertools
import math
import warnings

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vmap

from ..config import EnvConfig
from ..inner import InitSampler, InnerLoop, param_names
from ..params import Params
from ..seeds import seed_for
from ..stats import flat_summary
from .baselines import onestep_returns
from .ppo import critic_loss, log_probs, ppo_batch, ppo_surrogate
from .rollouts import Collector, episode_returns, episode_seeds


def action_targets(actions: torch.Tensor, num_actions: int, scale: float = 1.0) -> torch.Tensor:
    """One-hot action vectors (times `scale`): the MSE targets of labelled states."""
    return F.one_hot(actions, num_actions).float() * scale


class RLDistiller(nn.Module):
    """The synthetic batch of an RL task: learnable states, learnable action targets (the MSE targets of
    the inner step, one row per state) and learnable inner rates, and the critic learned alongside.

    `land` runs the inner step (`InnerLoop.run_stack`, the same vmapped functional step as a dataset's
    distillation) on a stack of inits; `outer_step` lets the landed policies act, turns their experience
    into GAE advantages with the critic, and backpropagates PPO's clipped surrogate through the inner step
    into the batch."""

    def __init__(self, actor: nn.Module, critic: nn.Module, obs_shape: tuple[int, ...], num_actions: int,
                 settings, rl):
        super().__init__()
        self.s, self.rl = settings, rl
        self.loop = InnerLoop(actor, "mse")
        self.sampler = InitSampler(actor, settings.init_scheme)
        self.critic = critic
        n = settings.images_per_class * num_actions
        actions = torch.arange(num_actions).repeat_interleave(settings.images_per_class)
        self.states = nn.Parameter(torch.randn(n, *obs_shape) * rl.state_init_std)
        targets = action_targets(actions, num_actions, rl.target_scale)
        if settings.label_mode == "soft":
            self.targets = nn.Parameter(targets)
        else:
            self.register_buffer("targets", targets)
        groups = len(param_names(actor)) if settings.lr_per_param else 1
        self.log_lrs = nn.Parameter(torch.full((settings.inner_steps, groups), math.log(settings.lr_init)))

    @property
    def lrs(self) -> torch.Tensor:
        return self.log_lrs.exp()

    def land(self, inits: Params) -> Params:
        return self.loop.run_stack(inits, self.states, self.targets, self.lrs, chunk_size=self.s.init_chunk)

    def optimizer(self) -> torch.optim.Optimizer:
        o = self.s.optim
        groups = [{"params": [self.states], "lr": o.lr_images}, {"params": [self.log_lrs], "lr": o.lr_lrs},
                  {"params": list(self.critic.parameters()), "lr": self.rl.critic_lr}]
        if isinstance(self.targets, nn.Parameter):
            groups.append({"params": [self.targets], "lr": o.lr_labels})
        return torch.optim.Adam(groups, betas=tuple(o.betas))

    def outer_step(self, collector: Collector, opt: torch.optim.Optimizer, last_step=None) -> dict[str, float]:
        """One outer step: fresh inits, their one-step landings act `rl.horizon` steps, then `rl.epochs` PPO
        updates of the batch (each re-landing the same inits on the updated batch) and of the critic.
        `last_step`: what steps the optimizer at the last epoch, if not `opt.step` (Lightning's optimizer,
        which counts one trainer step per outer step)."""
        rl = self.rl
        device = self.states.device
        inits = self.sampler.sample(self.s.inits_per_step, device=device)
        landed = self.land(inits)
        exp = collector.collect(self.loop, {k: v.detach() for k, v in landed.items()}, rl.horizon)
        batch = ppo_batch(exp, self.critic, rl.gamma, rl.gae_lambda)
        for epoch in range(rl.epochs):
            if epoch:
                landed = self.land(inits)
            logp, entropy = log_probs(self.loop, landed, batch.obs, batch.actions)
            policy_loss = ppo_surrogate(logp, batch.logp, batch.adv, rl.clip, batch.mask).mean()
            w = batch.mask.float()
            ent = (entropy * w).sum() / w.sum().clamp_min(1)
            value_loss = critic_loss(self.critic, batch)
            opt.zero_grad(set_to_none=True)
            (policy_loss - rl.ent_coef * ent + value_loss).backward()
            (last_step if last_step is not None and epoch == rl.epochs - 1 else opt.step)()
        return {"train/policy_loss": policy_loss.item(), "train/value_loss": value_loss.item(),
                "train/entropy": ent.item(), "train/inner_lr": self.lrs.detach().mean().item(),
                "train/episode_return": float(np.mean(exp.episode_returns)) if exp.episode_returns else math.nan}

    @torch.no_grad()
    def es_step(self, env: EnvConfig, opt: torch.optim.Optimizer, last_step=None) -> dict[str, float]:
        """One outer step by evolution strategies (OpenAI-ES with antithetic pairs and centred ranks, as Lupu
        et al.'s Behaviour Distillation): `rl.es_pairs` pairs of perturbations +-sigma eps of (states,
        targets, log rates); every member's batch trains the step's fresh inits in one step, and its fitness
        is their mean return over `rl.es_episodes` episodes (the same inits and seeds for every member: common
        random numbers); the batch moves along the rank-weighted sum of the eps (Adam, ascent). No critic,
        no gradient through the inner step. All members' policies step their environments together."""
        rl, sigma = self.rl, self.rl.es_sigma
        device = self.states.device
        inits = self.sampler.sample(self.s.inits_per_step, device=device)
        learned = [self.states, self.log_lrs] + ([self.targets] if isinstance(self.targets, nn.Parameter) else [])
        eps = [torch.randn(rl.es_pairs, *p.shape, device=device) for p in learned]
        members = [torch.cat([p + sigma * e, p - sigma * e]) for p, e in zip(learned, eps)]
        states, log_lrs = members[0], members[1]
        targets = members[2] if len(members) > 2 else self.targets.expand(len(states), *self.targets.shape)
        # landings [inits, members, ...]: vmapped over the inits outside, the members inside (the other
        # nesting, with the inits captured, trips torch.func on these nets)
        landed = vmap(lambda init: vmap(lambda s, y, ll: self.loop.run(init, s, y, ll.exp()))(states, targets, log_lrs))(inits)
        n = len(states) * self.s.inits_per_step
        flat = {k: v.reshape(n, *v.shape[2:]) for k, v in landed.items()}
        seeds = torch.randint(0, 2**31 - 1, (rl.es_episodes,)).tolist()
        returns = episode_returns(self.loop, flat, env, seeds, rl.eval_actions == "greedy")
        fitness = returns.view(self.s.inits_per_step, len(states), -1).mean((0, 2))
        ranks = torch.empty_like(fitness)
        ranks[fitness.argsort(stable=True)] = torch.arange(len(fitness), dtype=fitness.dtype)  # ties: by member order
        w = (ranks / (len(fitness) - 1) - 0.5).to(device, self.states.dtype)  # centred ranks in [-0.5, 0.5]
        w = w[:rl.es_pairs] - w[rl.es_pairs:]
        opt.zero_grad(set_to_none=True)
        for p, e in zip(learned, eps):  # minus: the optimizer descends, ES ascends the return
            p.grad = -(w.view(-1, *[1] * (e.dim() - 1)) * e).sum(0) / (rl.es_pairs * sigma)
        (last_step or opt.step)()
        return {"train/es_fitness_mean": fitness.mean().item(), "train/es_fitness_max": fitness.max().item(),
                "train/inner_lr": self.lrs.detach().mean().item(),
                "train/episode_return": fitness.mean().item()}


class _Steps(torch.utils.data.IterableDataset):
    """The training "data" of an RL distillation: the outer step's index, without end (the experience is
    gathered inside the step; trainer.max_steps ends the run)."""

    def __iter__(self):
        return itertools.count()


class RLDistillModule(L.LightningModule):
    """An RL distillation as a LightningModule, so the Trainer runs it as it runs a dataset's (max_steps,
    accelerator, validation cadence, loggers, checkpoints and resume): one training step is one
    `RLDistiller.outer_step` (rl.estimator=es: one `es_step`), in manual optimisation: PPO's epochs step the
    optimizer several times per outer step, the last one through Lightning's optimizer, so the trainer
    counts outer steps. The
    checkpoint holds the batch and the critic (parameters), the optimizer and schedule, and the collector's
    environments and generator (`on_save_checkpoint`); with the RngState callback a resumed run continues
    exactly where the stopped one was. Validation and test: one-step returns of held-out inits
    (`held_out_returns`)."""

    progress_unit = "outer steps"

    def __init__(self, actor: nn.Module, critic: nn.Module, obs_shape: tuple[int, ...], num_actions: int,
                 settings, rl, env: EnvConfig, seed: int):
        super().__init__()
        self.automatic_optimization = False
        self.s, self.rl, self.env, self.seed = settings, rl, env, seed
        self.distiller = RLDistiller(actor, critic, obs_shape, num_actions, settings, rl)
        self.collector: Collector | None = None
        self._pending_collector: dict | None = None
        self.first_step = 0

    # -- the outer loop ----------------------------------------------------------------------------------
    def configure_optimizers(self):
        opt = self.distiller.optimizer()
        if self.s.optim.schedule == "constant":
            return opt
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.s.steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # Each loader gets a generator of its own: iterating a DataLoader draws a seed from its generator, and
    # from torch's global RNG (which draws the inits) without one; so validation, at whatever cadence, and
    # a resume (which skips a validation due at its checkpoint's step) leave the training draws as they are.
    def train_dataloader(self):
        return torch.utils.data.DataLoader(_Steps(), batch_size=None, generator=torch.Generator())

    def on_train_start(self):
        self.first_step = self.global_step

    def _collector(self) -> Collector:
        if self.collector is None:
            self.collector = Collector(self.env, self.s.inits_per_step, self.rl.envs_per_init, self.seed)
            if self._pending_collector is not None:  # a resumed run: carry on where the checkpoint was
                self.collector.load_state_dict(self._pending_collector, restart_seed=self.seed + self.global_step)
                self._pending_collector = None
                if not self.collector.exact:
                    warnings.warn(f"env={self.env.name}: its emulators' state is not in the checkpoint; the "
                                  f"collector's episodes restart at the resumed step (all else continues exactly)")
        return self.collector

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        if self.rl.estimator == "es":
            m = self.distiller.es_step(self.env, opt.optimizer, last_step=opt.step)
        else:
            m = self.distiller.outer_step(self._collector(), opt.optimizer, last_step=opt.step)
        d = self.distiller
        if not (math.isfinite(m.get("train/policy_loss", 0.0)) and torch.isfinite(d.states).all()
                and torch.isfinite(d.log_lrs).all()):
            what = "the PPO surrogate" if self.rl.estimator == "ppo" else "the synthetic batch"
            raise FloatingPointError(f"{what} became non-finite at outer step {self.global_step}: lower "
                                     f"distill.lr_init or distill.optim.*")
        sched = self.lr_schedulers()
        if sched is not None:
            sched.step()
        shown = "train/episode_return"
        self.log_dict({k: v for k, v in m.items() if k != shown}, batch_size=1)
        self.log(shown, m[shown], prog_bar=True, batch_size=1)

    def on_train_end(self):
        if self.collector is not None:
            self.collector.close()
            self.collector = None

    def on_save_checkpoint(self, checkpoint):
        if self.collector is not None:
            checkpoint["distillscape_collector"] = self.collector.state_dict()

    def on_load_checkpoint(self, checkpoint):
        self._pending_collector = checkpoint.get("distillscape_collector")
        self.first_step = checkpoint.get("global_step", 0)

    # -- held-out evaluation -----------------------------------------------------------------------------
    def held_out_returns(self, stage: str) -> dict[str, float]:
        """One-step returns of held-out inits (val: distill.val_inits of them, test: distill.eval_inits) on
        fixed episode seeds: mean / std / min / max over inits of each init's mean return."""
        d, rl = self.s, self.rl
        n = d.val_inits if stage == "val" else d.eval_inits
        inits = self.distiller.sampler.sample(n, seed=seed_for(d.eval_seed, "eval", f"{stage}_inits"), device=self.device)
        seeds = episode_seeds(seed_for(d.eval_seed, "eval", f"rl_{stage}_episodes"), rl.eval_episodes)
        r = onestep_returns(self.distiller.loop, inits, self.distiller.states, self.distiller.targets,
                            self.distiller.lrs, self.env, seeds, rl.eval_actions == "greedy", d.init_chunk)
        return {**flat_summary(r, f"{stage}/onestep_return"), f"{stage}/onestep_inits": float(n),
                f"{stage}/episodes_per_init": float(len(seeds))}

    def _one_batch(self):
        return torch.utils.data.DataLoader([0], batch_size=None, generator=torch.Generator())

    val_dataloader = test_dataloader = _one_batch

    def validation_step(self, batch, batch_idx):
        with torch.inference_mode(False):
            m = self.held_out_returns("val")
        shown = "val/onestep_return_mean"
        self.log_dict({k: v for k, v in m.items() if k != shown}, batch_size=1)
        self.log(shown, m[shown], prog_bar=True, batch_size=1)

    def test_step(self, batch, batch_idx):
        with torch.inference_mode(False):
            # the test row at the last training step, explicitly, as DistillModule's: a run resumed from its
            # final checkpoint would log it one step (and epoch) later than the run that fitted to the end
            self.log_dict({**self.held_out_returns("test"), "step": float(max(self.global_step - 1, 0))}, batch_size=1)
