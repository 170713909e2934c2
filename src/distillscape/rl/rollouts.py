"""Batched rollouts of policy stacks: M policies step M x E environments together (one env call and one
vmapped forward per time step); episode returns, and the `Collector` of PPO experience with its
checkpointable state."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.func import vmap

from ..config import EnvConfig
from ..errors import ConfigError
from ..inner import InnerLoop
from ..params import Params, stack_len
from .envs import VecEnv, to_input


def stack_forward(loop: InnerLoop) -> Callable[[Params, torch.Tensor], torch.Tensor]:
    """Outputs [M, B, A] of a policy stack, policy m on its own observations obs[m] ([M, B, ...]): the
    network's own batched `forward_stack` where it has one, else `forward` vmapped over the stack."""
    fast = getattr(loop.net, "forward_stack", None)
    return fast if fast is not None else vmap(loop.forward, in_dims=(0, 0))


def choose(logits: torch.Tensor, greedy: bool, gen: torch.Generator | None = None) -> torch.Tensor:
    """Actions from logits [..., A]: the argmax, or a draw from softmax(logits) with `gen`."""
    if greedy:
        return logits.argmax(-1)
    flat = torch.softmax(logits.reshape(-1, logits.shape[-1]), -1)
    return torch.multinomial(flat, 1, generator=gen).view(logits.shape[:-1])


@torch.no_grad()
def rollout_returns(forward_each: Callable[[torch.Tensor], torch.Tensor], m: int, env: EnvConfig, seeds: list[int],
                    greedy: bool = True, sample_seed: int = 0, device=None, max_steps: int | None = None,
                    venv: VecEnv | None = None) -> torch.Tensor:
    """Return [m, E] of the first episode of each of m policies from every seed (the same seeds for
    every policy): all m x E episodes step together until every one has ended. `forward_each(obs)` maps
    observations [m, E, ...] (policy i's on row i) to action logits [m, E, A]."""
    e = len(seeds)
    venv = venv or VecEnv(env, m * e)
    obs = venv.reset(np.tile(np.asarray(seeds), m))
    gen = torch.Generator().manual_seed(sample_seed)
    returns = np.zeros(m * e, dtype=np.float64)
    alive = np.ones(m * e, dtype=bool)
    for _ in range(max_steps or env.max_episode_steps):
        x = to_input(obs, env).view(m, e, *venv.obs_shape).to(device)
        actions = choose(forward_each(x).cpu(), greedy, gen).reshape(-1).numpy()
        obs, reward, term, trunc = venv.step(actions)
        returns += reward * alive
        alive &= ~(term | trunc)
        if not alive.any():
            break
    return torch.from_numpy(returns).view(m, e)


def episode_returns(loop: InnerLoop, stack: Params, env: EnvConfig, seeds: list[int], greedy: bool = True,
                    sample_seed: int = 0) -> torch.Tensor:
    """`rollout_returns` of every policy of a parameter stack: [M, E]."""
    forward = stack_forward(loop)
    device = next(iter(stack.values())).device
    return rollout_returns(lambda x: forward(stack, x), stack_len(stack), env, seeds, greedy, sample_seed, device)


@torch.no_grad()
def episode_returns_one(net: nn.Module, env: EnvConfig, seeds: list[int], greedy: bool = True) -> list[float]:
    """The slow, obviously correct path: one net, one gymnasium env, one episode after another (the
    per-point loop of the reference study; the oracle of `episode_returns` for greedy actions)."""
    import gymnasium
    if env.name != "cartpole":
        raise ConfigError("episode_returns_one runs cart-pole only")
    one = gymnasium.make("CartPole-v1", max_episode_steps=env.max_episode_steps)
    out = []
    for s in seeds:
        obs, _ = one.reset(seed=int(s))
        total, done = 0.0, False
        while not done:
            logits = net(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0))[0]
            obs, r, term, trunc, _ = one.step(int(logits.argmax()) if greedy else int(torch.multinomial(torch.softmax(logits, -1), 1)))
            total += float(r)
            done = term or trunc
        out.append(total)
    one.close()
    return out


@dataclass
class Experience:
    """T steps of E environments per policy of a stack of M: tensors [M, T, E, ...].

    valid: False at the reset step that follows an episode's end (its action had no effect)."""
    obs: torch.Tensor
    actions: torch.Tensor
    logp: torch.Tensor          # log-probability of the action under the policy that acted
    rewards: torch.Tensor
    terminated: torch.Tensor
    done: torch.Tensor          # terminated or truncated
    next_obs: torch.Tensor      # the observation after the step (the final one at an episode's end)
    valid: torch.Tensor
    episode_returns: list[float]

    def flat(self, t: torch.Tensor) -> torch.Tensor:
        """[M, T, E, ...] -> [M, T*E, ...]"""
        return t.flatten(1, 2)


class Collector:
    """Gathers experience of stacks of M policies, E environments each, T steps at a time; the
    environments carry on where the last call left them (as PPO's rollouts do). The experience lies on
    the stack's device; the environments and the action draws stay on the CPU (the same draws anywhere).

    `state_dict` / `load_state_dict`: everything a checkpoint needs to carry on exactly (the environments,
    the running returns, the action-sampling generator)."""

    def __init__(self, env: EnvConfig, models: int, envs_per_model: int, seed: int):
        self.env, self.m, self.e, self.seed = env, models, envs_per_model, seed
        self.venv = VecEnv(env, models * envs_per_model)
        self.obs = self.venv.reset(self._start_seeds(seed))
        self.prev_done = np.zeros(models * envs_per_model, dtype=bool)
        self.running = np.zeros(models * envs_per_model)
        self.gen = torch.Generator().manual_seed(seed)

    def _start_seeds(self, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).integers(0, 2**31 - 1, self.m * self.e)

    def state_dict(self) -> dict:
        return {"obs": torch.from_numpy(np.array(self.obs)), "prev_done": torch.from_numpy(self.prev_done.copy()),
                "running": torch.from_numpy(self.running.copy()), "gen": self.gen.get_state(),
                "env": self.venv.state_dict()}

    def load_state_dict(self, state: dict, restart_seed: int | None = None) -> None:
        """The state `state_dict` gave. Without the environments' state (Atari), their episodes restart
        from seeds drawn from `restart_seed` (the rest is restored): close to, not exactly, what an
        uninterrupted run does; `exact` tells which."""
        self.gen.set_state(state["gen"])
        if state.get("env") is not None:
            self.venv.load_state_dict(state["env"])
            self.obs = state["obs"].numpy().copy()
            self.prev_done, self.running = state["prev_done"].numpy().copy(), state["running"].numpy().copy()
            self.exact = True
        else:
            self.obs = self.venv.reset(self._start_seeds(self.seed if restart_seed is None else restart_seed))
            self.prev_done[:], self.running[:] = False, 0.0
            self.exact = False

    @torch.no_grad()
    def collect(self, loop: InnerLoop, stack: Params, steps: int) -> Experience:
        m, e, shape = self.m, self.e, self.venv.obs_shape
        if stack_len(stack) != m:
            raise ValueError(f"a stack of {stack_len(stack)} policies given to a collector for {m}")
        forward = stack_forward(loop)
        device = next(iter(stack.values())).device
        cols: dict[str, list] = {k: [] for k in ("obs", "actions", "logp", "rewards", "term", "done", "next", "valid")}
        finished: list[float] = []
        for _ in range(steps):
            x = to_input(self.obs, self.env).view(m, e, *shape)
            logits = forward(stack, x.to(device)).cpu()
            a = choose(logits, False, self.gen)
            logp = torch.log_softmax(logits, -1).gather(-1, a.unsqueeze(-1)).squeeze(-1)
            obs, r, term, trunc = self.venv.step(a.reshape(-1).numpy())
            valid = ~self.prev_done
            done = (term | trunc) & valid
            self.running += r
            finished += self.running[done].tolist()
            self.running[done | ~valid] = 0.0
            cols["obs"].append(x)
            cols["actions"].append(a)
            cols["logp"].append(logp)
            cols["rewards"].append(torch.from_numpy(r).view(m, e))
            cols["term"].append(torch.from_numpy(term & valid).view(m, e))
            cols["done"].append(torch.from_numpy(done).view(m, e))
            cols["next"].append(to_input(obs, self.env).view(m, e, *shape))
            cols["valid"].append(torch.from_numpy(valid).view(m, e))
            self.obs, self.prev_done = obs, term | trunc
        s = {k: torch.stack(v, 1).to(device) for k, v in cols.items()}
        return Experience(s["obs"], s["actions"], s["logp"], s["rewards"], s["term"], s["done"], s["next"],
                          s["valid"], finished)

    def close(self):
        self.venv.close()


def episode_seeds(base: int, n: int) -> list[int]:
    """n fixed episode seeds drawn from `base` (the same list for every policy evaluated with it)."""
    return np.random.default_rng(base).integers(0, 2**31 - 1, n).tolist()
