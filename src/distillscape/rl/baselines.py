"""One step on a fixed batch of states, evaluated by episode returns: the distilled states' held-out
returns and the baselines (random states, states PPO visited) at their tuned rate."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..config import EnvConfig
from ..inner import InnerLoop
from ..params import Params
from .envs import VecEnv, to_input
from .rollouts import episode_returns, episode_seeds


def onestep_returns(loop: InnerLoop, inits: Params, states: torch.Tensor, targets: torch.Tensor, lrs: torch.Tensor,
                    env: EnvConfig, seeds: list[int], greedy: bool = True, chunk: int | None = None) -> torch.Tensor:
    """Mean return [M] over the episode seeds of every init of the stack after the inner step on
    (states, targets) with rates lrs."""
    with torch.enable_grad():
        landed = loop.run_stack(inits, states.detach(), targets.detach(), lrs.detach(), chunk_size=chunk)
    landed = {k: v.detach() for k, v in landed.items()}
    return episode_returns(loop, landed, env, seeds, greedy).mean(1)


def one_step_baseline(loop: InnerLoop, tune_inits: Params, test_inits: Params, states: torch.Tensor,
                      targets: torch.Tensor, lr_grid: list[float], env: EnvConfig, tune_seeds: list[int],
                      test_seeds: list[int], greedy: bool = True) -> tuple[torch.Tensor, float]:
    """One step on a fixed batch (states, targets) at the rate of lr_grid with the best mean return on
    the tuning inits and seeds; returns the test inits' mean returns [M] and that rate."""
    groups = 1
    best, best_lr = -math.inf, lr_grid[0]
    for lr in lr_grid:
        lrs = torch.full((1, groups), float(lr))
        r = onestep_returns(loop, tune_inits, states, targets, lrs, env, tune_seeds, greedy).mean().item()
        if r > best:
            best, best_lr = r, float(lr)
    lrs = torch.full((1, groups), best_lr)
    return onestep_returns(loop, test_inits, states, targets, lrs, env, test_seeds, greedy), best_lr


@torch.no_grad()
def visited_states(actor: nn.Module, env: EnvConfig, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n states the (greedy) policy visits, drawn uniformly from its episodes, and its actions there."""
    venv = VecEnv(env, max(1, min(n, 64)))
    obs = venv.reset(episode_seeds(seed, venv.n))
    seen, acts = [], []
    for _ in range(env.max_episode_steps):
        x = to_input(obs, env)
        a = actor(x).argmax(-1)
        seen.append(x)
        acts.append(a)
        obs, _, _, _ = venv.step(a.numpy())
    venv.close()
    xs, as_ = torch.cat(seen), torch.cat(acts)
    pick = torch.randperm(len(xs), generator=torch.Generator().manual_seed(seed))[:n]
    return xs[pick], as_[pick]
