"""Reinforcement-learning tasks: environments, batched rollouts of stacks of policies, GAE and the
differentiable PPO surrogate, direct PPO training, and the RL outer objective of one-step distillation.

A *policy stack* is a parameter stack (`params.Params` with a leading model dim M) of one policy
network; `InnerLoop.forward` runs one of them, `torch.func.vmap` runs all M on observations [M, B, ...].
All M policies step their environments together: one gymnasium vector environment holds M x E copies
(policy m owns environments m*E .. m*E+E-1), so a chunk of M policies costs one env call and one vmapped
forward per time step, not M.

Environments come from gymnasium: CartPole-v1's numpy-vectorised `vector_entry_point` (thousands of
environments in one call) and, for Atari, ale-py's vectorised `AtariVectorEnv`. An episode *seed* fixes
its start: for cart-pole the start state is exactly the one `gymnasium.make("CartPole-v1").reset(seed=s)`
draws, so a batched episode and a one-env-at-a-time episode with the same seed are the same episode.
"""
from __future__ import annotations

import itertools
import json
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vmap

from .config import EnvConfig
from .errors import ConfigError, DatasetNotFoundError
from .inner import InitSampler, InnerLoop, param_names
from .params import Params, stack_len
from .seeds import seed_for
from .stats import flat_summary

@contextmanager
def one_thread():
    """torch on one thread inside the block (the thread count restored after). The policies are tiny: their
    ops are far too small to share among threads, and a second thread only waits on a machine whose cores
    are busy (64 ms instead of 0.1 ms per step on a loaded 2-core box). Also a decorator."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- environments --------------------------------------------------------------------------------------------
CARTPOLE_START = 0.05  # CartPole-v1 draws every start-state component uniformly from [-0.05, 0.05]


def cartpole_starts(seeds: list[int] | np.ndarray) -> np.ndarray:
    """Start states [4, n] of cart-pole episodes: seed s gives what CartPole-v1's reset(seed=s) gives."""
    from gymnasium.utils import seeding
    return np.stack([seeding.np_random(int(s))[0].uniform(-CARTPOLE_START, CARTPOLE_START, size=(4,))
                     for s in seeds], axis=1)


class VecEnv:
    """n copies of the config's environment behind one gymnasium vector env (autoreset: next step).

    reset(seeds): episode i starts from seed seeds[i]. step(actions) -> obs, reward, terminated,
    truncated as numpy arrays; after a step that ends an episode the next step of that copy is the reset
    step (its action is ignored, its reward 0), gymnasium's NEXT_STEP autoreset."""

    def __init__(self, env: EnvConfig, n: int):
        import gymnasium
        self.cfg, self.n = env, n
        if env.name == "cartpole":
            self.env = gymnasium.make_vec("CartPole-v1", num_envs=n, vectorization_mode="vector_entry_point",
                                          max_episode_steps=env.max_episode_steps)
        else:
            self.env = make_atari(env, n)
        self.obs_shape = tuple(self.env.single_observation_space.shape)
        self.num_actions = int(self.env.single_action_space.n)

    def reset(self, seeds: list[int] | np.ndarray) -> np.ndarray:
        if len(seeds) != self.n:
            raise ValueError(f"{len(seeds)} seeds for {self.n} environments")
        if self.cfg.name == "cartpole":
            self.env.reset(seed=int(seeds[0]))
            u = self.env.unwrapped
            u.state = cartpole_starts(seeds)
            return u.state.T.astype(np.float32)
        obs, _ = self.env.reset(seed=np.asarray(seeds, dtype=np.int64))
        return np.asarray(obs)

    def step(self, actions: np.ndarray):
        obs, reward, term, trunc, _ = self.env.step(actions)
        return np.asarray(obs), np.asarray(reward, dtype=np.float32), np.asarray(term), np.asarray(trunc)

    def state_dict(self) -> dict | None:
        """Where every copy is (cart-pole: positions, step counts, pending resets, the reset RNG), as tensors
        and a JSON string (a checkpoint loads with weights_only=True); None for Atari, whose emulators keep
        their state inside ale-py."""
        if self.cfg.name != "cartpole":
            return None
        u = self.env.unwrapped
        return {"state": torch.from_numpy(np.array(u.state)), "steps": torch.from_numpy(np.array(u.steps)),
                "prev_done": torch.from_numpy(np.array(u.prev_done)),
                "np_random": json.dumps(u.np_random.bit_generator.state)}

    def load_state_dict(self, state: dict) -> None:
        u = self.env.unwrapped
        u.state, u.steps = state["state"].numpy().copy(), state["steps"].numpy().copy()
        u.prev_done = state["prev_done"].numpy().copy()
        u.np_random.bit_generator.state = json.loads(state["np_random"])

    def close(self):
        self.env.close()


def make_atari(env: EnvConfig, n: int):
    """ale-py's vectorised Atari env (frame skip 4, 84x84 grey frames, a stack of `frame_stack`)."""
    try:
        import ale_py
    except ImportError:
        raise DatasetNotFoundError(f"env={env.name} needs ale-py (pip install ale-py; its ROMs ship in the wheel)") from None
    try:
        return ale_py.vector_env.AtariVectorEnv(game=env.game, num_envs=n, frameskip=4, stack_num=env.frame_stack,
                                                img_height=84, img_width=84, grayscale=True,
                                                max_num_frames_per_episode=env.max_episode_steps * 4,
                                                repeat_action_probability=0.0, episodic_life=False,
                                                reward_clipping=False, num_threads=0)
    except Exception as e:  # a missing ROM, an unknown game
        raise DatasetNotFoundError(f"env={env.name}: ale-py cannot load game {env.game!r} ({str(e).splitlines()[0]}); "
                                   f"install an ale-py wheel that ships its ROM") from None


def to_input(obs: np.ndarray, env: EnvConfig) -> torch.Tensor:
    """Observations as the policy's input: float32; Atari frames scaled to [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(obs))
    return t.float() / 255.0 if t.dtype == torch.uint8 else t.float()


def stack_forward(loop: InnerLoop) -> Callable[[Params, torch.Tensor], torch.Tensor]:
    """Outputs [M, B, A] of a policy stack, policy m on its own observations obs[m] ([M, B, ...]): the
    network's own batched `forward_stack` where it has one, else `forward` vmapped over the stack."""
    fast = getattr(loop.net, "forward_stack", None)
    return fast if fast is not None else vmap(loop.forward, in_dims=(0, 0))


# -- batched evaluation ------------------------------------------------------------------------------------------
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


# -- experience, GAE, the PPO surrogate ---------------------------------------------------------------------------
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


# -- direct PPO: the RL task's minimum -----------------------------------------------------------------------------
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


# -- one step on a batch of states ------------------------------------------------------------------------------
def action_targets(actions: torch.Tensor, num_actions: int, scale: float = 1.0) -> torch.Tensor:
    """One-hot action vectors (times `scale`): the MSE targets of labelled states."""
    return F.one_hot(actions, num_actions).float() * scale


# -- one-step distillation of an RL task ----------------------------------------------------------------------------
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


# -- evaluation and baselines ----------------------------------------------------------------------------------------
def episode_seeds(base: int, n: int) -> list[int]:
    """n fixed episode seeds drawn from `base` (the same list for every policy evaluated with it)."""
    return np.random.default_rng(base).integers(0, 2**31 - 1, n).tolist()


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
