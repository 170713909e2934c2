"""PPO maths: GAE, the clipped surrogate (differentiable, per policy of a stack), log-probabilities,
advantage normalisation, the critic's loss, and direct PPO training (the RL task's minimum)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..config import EnvConfig
from ..inner import InnerLoop
from ..params import Params
from .rollouts import Collector, Experience, stack_forward


def gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, terminated: torch.Tensor,
        done: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """Generalised advantage estimates [M, T, E] (Schulman et al. 2016) of one stretch of experience.

    delta_t = r_t + gamma V(s_{t+1}) (0 if s_{t+1} is terminal) - V(s_t); A_t = delta_t + gamma lam A_{t+1},
    the sum cut at every episode end (a truncated episode bootstraps from its last state's value)."""
    delta = rewards + gamma * next_values * (~terminated).to(values.dtype) - values
    adv = torch.zeros_like(delta)
    last = torch.zeros_like(delta[:, 0])
    for t in range(delta.shape[1] - 1, -1, -1):
        last = delta[:, t] + gamma * lam * (~done[:, t]).to(delta.dtype) * last
        adv[:, t] = last
    return adv


def ppo_surrogate(logp_new: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor, clip: float,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """PPO's clipped surrogate loss (Schulman et al. 2017), one value per model: -mean over the model's
    valid samples of min(ratio A, clip(ratio, 1 - clip, 1 + clip) A), ratio = pi_new(a|s) / pi_old(a|s).
    Inputs [M, N]; differentiable in logp_new (and through it in whatever made the policy)."""
    ratio = torch.exp(logp_new - logp_old)
    obj = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv)
    if mask is None:
        return -obj.mean(-1)
    mask = mask.to(obj.dtype)
    return -(obj * mask).sum(-1) / mask.sum(-1).clamp_min(1)


def log_probs(loop: InnerLoop, stack: Params, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(a|s) and the policy entropy [M, N] of every policy of the stack on its own samples."""
    logits = stack_forward(loop)(stack, obs)
    logp_all = torch.log_softmax(logits, -1)
    logp = logp_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def normalise(adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Advantages scaled to mean 0, std 1 over the valid samples of each model ([M, N])."""
    w = mask.float()
    n = w.sum(-1, keepdim=True).clamp_min(1)
    mean = (adv * w).sum(-1, keepdim=True) / n
    var = (((adv - mean) ** 2) * w).sum(-1, keepdim=True) / n
    return (adv - mean) / (var.sqrt() + 1e-8)


@dataclass
class PPOBatch:
    """Flattened experience [M, N] with advantages and return targets (what one PPO update uses)."""
    obs: torch.Tensor
    actions: torch.Tensor
    logp: torch.Tensor
    adv: torch.Tensor
    returns: torch.Tensor
    mask: torch.Tensor


def value_of(critic: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    """Critic values of observations [M, T, E, ...] -> [M, T, E]."""
    lead = obs.shape[:3]
    return critic(obs.reshape(-1, *obs.shape[3:])).view(lead)


@torch.no_grad()
def ppo_batch(exp: Experience, critic: nn.Module, gamma: float, lam: float, normalise_adv: bool = True) -> PPOBatch:
    values = value_of(critic, exp.obs)
    next_values = value_of(critic, exp.next_obs)
    adv = gae(exp.rewards, values, next_values, exp.terminated, exp.done, gamma, lam)
    returns = adv + values
    f = exp.flat
    mask = f(exp.valid)
    a = f(adv)
    return PPOBatch(f(exp.obs), f(exp.actions), f(exp.logp), normalise(a, mask) if normalise_adv else a,
                    f(returns), mask)


def critic_loss(critic: nn.Module, batch: PPOBatch) -> torch.Tensor:
    v = critic(batch.obs.reshape(-1, *batch.obs.shape[2:])).view(batch.returns.shape)
    w = batch.mask.float()
    return (((v - batch.returns) ** 2) * w).sum() / w.sum().clamp_min(1)


def train_ppo(actor: nn.Module, critic: nn.Module, env: EnvConfig, total_steps: int, envs: int = 8, horizon: int = 256,
              epochs: int = 4, minibatches: int = 4, lr: float = 2.5e-4, gamma: float = 0.99, lam: float = 0.95,
              clip: float = 0.2, ent_coef: float = 0.0, seed: int = 0, log: Callable[[dict], None] | None = None) -> dict:
    """Proximal policy optimisation of (actor, critic) in place, with the same rollouts, GAE and clipped
    surrogate as the distillation's outer objective. Returns what it measured along the way."""
    loop = InnerLoop(actor)
    collector = Collector(env, 1, envs, seed)
    opt = torch.optim.Adam([*actor.parameters(), *critic.parameters()], lr=lr, eps=1e-5)
    gen = torch.Generator().manual_seed(seed)
    iters = max(1, total_steps // (envs * horizon))
    recent: list[float] = []
    for it in range(iters):
        for g in opt.param_groups:
            g["lr"] = lr * (1 - it / iters)
        params = {k: v.detach().unsqueeze(0) for k, v in actor.named_parameters()}
        exp = collector.collect(loop, params, horizon)
        recent = (recent + exp.episode_returns)[-20:]
        batch = ppo_batch(exp, critic, gamma, lam, normalise_adv=False)
        n = batch.obs.shape[1]
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen)
            for idx in perm.chunk(minibatches):
                obs, act = batch.obs[0, idx], batch.actions[0, idx]
                logits = actor(obs)
                logp_all = torch.log_softmax(logits, -1)
                logp = logp_all.gather(-1, act.unsqueeze(-1)).squeeze(-1)
                mask = batch.mask[0, idx]
                adv = normalise(batch.adv[0, idx].unsqueeze(0), mask.unsqueeze(0))[0]
                pl = ppo_surrogate(logp.unsqueeze(0), batch.logp[0, idx].unsqueeze(0), adv.unsqueeze(0), clip,
                                   mask.unsqueeze(0))[0]
                ent = (-(logp_all.exp() * logp_all).sum(-1) * mask).sum() / mask.sum().clamp_min(1)
                v = critic(obs).squeeze(-1)
                vl = (((v - batch.returns[0, idx]) ** 2) * mask).sum() / mask.sum().clamp_min(1)
                loss = pl + 0.5 * vl - ent_coef * ent
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_([*actor.parameters(), *critic.parameters()], 0.5)
                opt.step()
        if log and recent:
            log({"ppo/iteration": it, "ppo/episode_return": float(np.mean(recent))})
    collector.close()
    return {"ppo/iterations": iters, "ppo/env_steps": iters * envs * horizon,
            "ppo/final_train_return": float(np.mean(recent)) if recent else math.nan}
