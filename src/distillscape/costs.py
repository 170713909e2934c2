"""The costs of a landscape sweep: what is measured at every grid point, and how it is scored.

A cost is evaluated on a chunk of M grid points at once. The `LandscapeModule` builds the chunk's
models and hands the cost a `Models`: a forward of all M models on shared inputs, and a forward where
each model gets inputs of its own. How those forwards run (vmapped over the chunk, or point after
point, with channels-last weights, at which data batch) is the module's choice, measured on the first
points; a cost decides only what to feed the models and how to score what comes out.

A cost names the tensors it needs (`tensors()`); the module registers them as buffers, so the Trainer
moves them to the device once, and passes the device copies to `evaluate`. Every metric comes back as
one float64 value per point. A new kind of cost (an RL policy's episode return in its own vectorised
environments, a PPO loss) is a new subclass of `Cost`: the module, the shards and the merge take any.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import torch
from torch.func import vmap

from .inner import accuracy_and_loss, inner_loss
from .params import Params, stack_len
from .rl import ppo_surrogate, rollout_returns

# one model's logits: forward_one(params, x [B, ...]) -> [B, C]
Forward = Callable[[Params, torch.Tensor], torch.Tensor]


# -- the models of a chunk ------------------------------------------------------------------------------
class Models(ABC):
    """The M models of a chunk of grid points, as the module runs them.

    count: M. examples_per_forward: how many inputs one forward of all M models should take (the
    module's data batch; vmapped, the chunk's points share it, so each gets a part)."""
    count: int
    examples_per_forward: int

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [M, B, C] of every model on the same inputs x [B, ...]."""

    @abstractmethod
    def forward_each(self, xs: torch.Tensor) -> torch.Tensor:
        """Logits [M, B, C], model m on its own inputs xs[m] (xs: [M, B, ...])."""


class StackedModels(Models):
    """The chunk's M models (a parameter stack) in one vmapped forward."""

    def __init__(self, forward_one: Forward, stack: Params, data_batch: int):
        self.stack, self.count = stack, stack_len(stack)
        self.examples_per_forward = max(1, data_batch // self.count)
        self._shared = vmap(forward_one, in_dims=(0, None))
        self._each = vmap(forward_one, in_dims=(0, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._shared(self.stack, x)

    def forward_each(self, xs: torch.Tensor) -> torch.Tensor:
        return self._each(self.stack, xs)


class OneModel(Models):
    """A single model (M = 1): how the module's loop paths hand a cost the chunk, point after point."""
    count = 1

    def __init__(self, forward_one: Forward, params: Params, data_batch: int):
        self._forward_one, self.params, self.examples_per_forward = forward_one, params, data_batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_one(self.params, x).unsqueeze(0)

    def forward_each(self, xs: torch.Tensor) -> torch.Tensor:
        if len(xs) != 1:
            raise ValueError(f"inputs for {len(xs)} models given to one model")
        return self.forward(xs[0])


# -- costs ------------------------------------------------------------------------------------------------
class Cost(ABC):
    """One cost function of a sweep. `name` prefixes its metrics ("train" -> train/loss, train/acc)."""

    def __init__(self, name: str):
        self.name = name

    @property
    @abstractmethod
    def metrics(self) -> list[str]:
        """The names of what `evaluate` returns, in order."""

    @abstractmethod
    def tensors(self) -> dict[str, torch.Tensor]:
        """What the cost needs on the device (moved there once, with the module)."""

    @abstractmethod
    def evaluate(self, models: Models, data: dict[str, torch.Tensor],
                 max_examples: int | None = None) -> dict[str, torch.Tensor]:
        """Every metric of every model of `models`: name -> tensor [M] (float64). `data`: `tensors()`
        on the device. max_examples: use at most this many examples (only for timing the paths)."""


class CrossEntropyCost(Cost):
    """Cross-entropy and accuracy on labelled images (metrics name/loss, name/acc), in data batches of
    `models.examples_per_forward`, summed in float64."""

    def __init__(self, name: str, x: torch.Tensor, y: torch.Tensor):
        super().__init__(name)
        self.x, self.y = x, y

    @property
    def metrics(self) -> list[str]:
        return [f"{self.name}/loss", f"{self.name}/acc"]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"x": self.x, "y": self.y}

    def evaluate(self, models, data, max_examples=None):
        x, y = data["x"][:max_examples], data["y"][:max_examples]
        batch = models.examples_per_forward
        correct = torch.zeros(models.count, dtype=torch.float64, device=x.device)
        loss = torch.zeros(models.count, dtype=torch.float64, device=x.device)
        for s in range(0, len(y), batch):
            cor, lo = accuracy_and_loss(models.forward(x[s:s + batch]), y[s:s + batch])
            correct += cor
            loss += lo.double()
        return {f"{self.name}/loss": loss / len(y), f"{self.name}/acc": correct / len(y)}


class InnerLossCost(Cost):
    """The inner loss a distilled batch trains with (`loss`: mse | soft_ce), `targets` being its label
    vectors (metric name/loss). A distilled batch is small: one forward, the loss of the whole batch."""

    def __init__(self, name: str, x: torch.Tensor, targets: torch.Tensor, loss: str = "mse"):
        super().__init__(name)
        self.x, self.targets, self.loss = x, targets, loss

    @property
    def metrics(self) -> list[str]:
        return [f"{self.name}/loss"]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"x": self.x, "y": self.targets}

    def evaluate(self, models, data, max_examples=None):
        x, y = data["x"][:max_examples], data["y"][:max_examples]
        logits = models.forward(x)
        return {f"{self.name}/loss": torch.stack([inner_loss(l, y, self.loss) for l in logits]).double()}


# -- reinforcement-learning costs --------------------------------------------------------------------------------
class EpisodeReturnCost(Cost):
    """The mean episode return of every point's policy over fixed episode seeds, the same seeds at every
    point (metric name/return): the chunk's M policies step M x E copies of the environment together, each
    time step one vectorised env call and one forward of all M (`models.forward_each`)."""

    def __init__(self, name: str, env, seeds: list[int], greedy: bool = True):
        super().__init__(name)
        self.env, self.seeds, self.greedy = env, list(seeds), greedy

    @property
    def metrics(self) -> list[str]:
        return [f"{self.name}/return"]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"anchor": torch.zeros(1)}  # only to learn the device the models run on

    def evaluate(self, models, data, max_examples=None):
        device = data["anchor"].device
        steps = None if max_examples is None else max(1, max_examples // max(1, len(self.seeds)))
        r = rollout_returns(models.forward_each, models.count, self.env, self.seeds, self.greedy,
                            device=device, max_steps=steps)
        return {f"{self.name}/return": r.mean(1).to(device, torch.float64)}


class PPOLossCost(Cost):
    """PPO's clipped-surrogate actor loss of every point's policy on one static experience set (gathered
    with the centre's policy, the reference study's choice, or with one fixed reference policy shared by
    every centre: `rl_objective`; advantages from the run's critic held fixed), metric name/loss.
    `experience`: whose experience it is, in words, for the outputs. The points share the inputs:
    `models.forward` on data batches."""

    def __init__(self, name: str, obs: torch.Tensor, actions: torch.Tensor, logp_old: torch.Tensor,
                 advantages: torch.Tensor, clip: float = 0.2, experience: str = ""):
        super().__init__(name)
        self.obs, self.actions, self.logp_old, self.adv, self.clip = obs, actions, logp_old, advantages, clip
        self.experience = experience

    @property
    def metrics(self) -> list[str]:
        return [f"{self.name}/loss"]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"obs": self.obs, "actions": self.actions, "logp_old": self.logp_old, "adv": self.adv}

    def evaluate(self, models, data, max_examples=None):
        obs, act = data["obs"][:max_examples], data["actions"][:max_examples]
        old, adv = data["logp_old"][:max_examples], data["adv"][:max_examples]
        batch = models.examples_per_forward
        total = torch.zeros(models.count, dtype=torch.float64, device=obs.device)
        for s in range(0, len(act), batch):
            logp = torch.log_softmax(models.forward(obs[s:s + batch]), -1)
            logp = logp.gather(-1, act[s:s + batch].expand(models.count, -1).unsqueeze(-1)).squeeze(-1)
            n = logp.shape[1]
            loss = ppo_surrogate(logp, old[s:s + batch].expand_as(logp), adv[s:s + batch].expand_as(logp), self.clip)
            total += loss.double() * n
        return {f"{self.name}/loss": total / len(act)}
