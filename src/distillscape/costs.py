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

The costs a sweep's `sweep.costs` can name are registered by name (`SWEEP_COST_CLASSES`: name -> a class that
is both a `Cost` and a `SweepCost`, whose `build` makes its costs from the run). `build_costs` builds the list a
sweep measures, with warning lines (e.g. subset sizes left out) that the task shows: no cost prints.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch.func import vmap

from .artifacts import load_distilled
from .config import DATASET_COSTS, RL_COSTS, SWEEP_COSTS, LandscapeJob
from .errors import ConfigError
from .inner import accuracy_and_loss, inner_loss
from .params import Params, stack_len, unflatten
from .rl import episode_seeds, ppo_surrogate, rollout_returns
from .run import Run, RunPoints

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


# -- what sweep.costs names: a class per name, built from a run --------------------------------------------
@dataclass
class CostSource:
    """What a sweep's costs are built from: the job's settings (sweep.costs, landscape.*), the opened run, its
    data (a `TensorDataModule`; None for an RL run) and, for a cost measured on the centre's own experience
    (ppo_loss), the run's points and the centre's name."""
    job: LandscapeJob
    run: Run
    dm: Any = None
    points: RunPoints | None = None
    centre: str | None = None


@dataclass
class BuiltCosts:
    """The costs of a sweep in sweep.costs' order, and what the task should tell the user about them (one line
    each: e.g. subset sizes larger than the training split, left out)."""
    costs: list[Cost]
    warnings: list[str] = field(default_factory=list)


class SweepCost:
    """A cost that sweep.costs can name: `key` is its name there; `build` makes its Cost(s) for one sweep
    (several for snapshots and train_subsets), with the lines to show the user. `kind`: what run it measures
    (dataset | rl | any), as config.DATASET_COSTS / RL_COSTS list it."""
    key: ClassVar[str]
    kind: ClassVar[str] = "dataset"

    @classmethod
    def build(cls, src: CostSource) -> BuiltCosts:
        raise NotImplementedError


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
class EpisodeReturnCost(Cost, SweepCost):
    """The mean episode return of every point's policy over fixed episode seeds, the same seeds at every
    point (metric name/return): the chunk's M policies step M x E copies of the environment together, each
    time step one vectorised env call and one forward of all M (`models.forward_each`). As sweep.costs'
    episode_return: landscape.episodes seeds from landscape.episode_seed."""
    key, kind = "episode_return", "rl"

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

    @classmethod
    def build(cls, src):
        ls = src.job.landscape
        return BuiltCosts([cls("episode", src.run.env(), episode_seeds(ls.episode_seed, ls.episodes))])


class PPOLossCost(Cost, SweepCost):
    """PPO's clipped-surrogate actor loss of every point's policy on one static experience set (gathered
    with the centre's policy, the reference study's choice, or with one fixed reference policy shared by
    every centre: `rl_objective`; advantages from the run's critic held fixed), metric name/loss.
    `experience`: whose experience it is, in words, for the outputs. The points share the inputs:
    `models.forward` on data batches. As sweep.costs' ppo_loss: on the experience of the policy at the
    sweep's centre (`rl_experience_cost`)."""
    key, kind = "ppo_loss", "rl"

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

    @classmethod
    def build(cls, src):
        return BuiltCosts([rl_experience_cost(src.job, src.run, src.points, src.centre)])


class ReferencePPOLossCost(PPOLossCost):
    """sweep.costs' ppo_loss_reference: the PPO loss on the experience of the run's direct PPO minimum, one set
    shared by every centre (`rl_objective`)."""
    key = "ppo_loss_reference"

    @classmethod
    def build(cls, src):
        return BuiltCosts([rl_experience_cost(src.job, src.run, src.points, src.centre, "reference")])


class TrainCost(CrossEntropyCost, SweepCost):
    """Cross-entropy and accuracy on the training split (landscape.train_subsample: a fixed random part of it)."""
    key = "train"

    @classmethod
    def build(cls, src):
        ls, x, y = src.job.landscape, src.dm.train_x, src.dm.train_y
        if ls.train_subsample is not None and ls.train_subsample < len(y):
            idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(ls.subset_seed))[:ls.train_subsample]
            x, y = x[idx], y[idx]
        return BuiltCosts([cls("train", x, y)])


class TestCost(CrossEntropyCost, SweepCost):
    """Cross-entropy and accuracy on the test split."""
    key = "test"

    @classmethod
    def build(cls, src):
        return BuiltCosts([cls("test", src.dm.test_x, src.dm.test_y)])


class TrainSubsetsCost(CrossEntropyCost, SweepCost):
    """Cross-entropy on nested random subsets of the training split, one per landscape.subset_sizes (each
    holds the smaller ones); sizes above the split's are left out, with a warning."""
    key = "train_subsets"

    @classmethod
    def build(cls, src):
        ls, train_x, train_y = src.job.landscape, src.dm.train_x, src.dm.train_y
        perm = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(ls.subset_seed))
        sizes = [n for n in ls.subset_sizes if n <= len(train_y)]
        dropped = [n for n in ls.subset_sizes if n > len(train_y)]
        warnings = [f"train_subsets: {src.job.dataset.name} has {len(train_y)} training images; sizes {dropped} "
                    f"skipped"] if dropped else []
        return BuiltCosts([cls(f"train_subset{n}", train_x[perm[:n]], train_y[perm[:n]]) for n in sizes], warnings)


class DistilledCost(InnerLossCost, SweepCost):
    """The distilled batch's own inner loss (a dataset's images or an RL task's states)."""
    key, kind = "distilled", "any"

    @classmethod
    def build(cls, src):
        d = src.run.distilled
        return BuiltCosts([cls("distilled", d.images, d.labels, src.run.inner_loss)])


class SnapshotCost(InnerLossCost, SweepCost):
    """The inner loss of each snapshot of the batch the distillation kept (snapshots/distilled_step*)."""
    key, kind = "snapshots", "any"

    @classmethod
    def build(cls, src):
        costs = []
        for p in src.run.snapshot_files("sweep.costs has snapshots"):
            snap = load_distilled(p)
            costs.append(cls(p.stem, snap.images, snap.labels, src.run.inner_loss))
        return BuiltCosts(costs)


class RandomBatchCost(InnerLossCost, SweepCost):
    """The sanity check: a batch shaped like the distilled one, of pure noise, should make no minimum."""
    key, kind = "random_batch", "any"

    @classmethod
    def build(cls, src):
        d, g = src.run.distilled, torch.Generator().manual_seed(src.job.landscape.random_batch_seed)
        return BuiltCosts([cls("random_batch", torch.randn(d.images.shape, generator=g),
                               torch.randn(d.labels.shape, generator=g), src.run.inner_loss)])


# sweep.costs name -> its class; tests/test_landscape.py checks it against config.SWEEP_COSTS (and the kinds
# against DATASET_COSTS / RL_COSTS)
SWEEP_COST_CLASSES: dict[str, type[SweepCost]] = {c.key: c for c in (
    TrainCost, TestCost, DistilledCost, SnapshotCost, RandomBatchCost, TrainSubsetsCost, EpisodeReturnCost,
    PPOLossCost, ReferencePPOLossCost)}


def check_costs_fit_run(s: LandscapeJob, run: Run) -> None:
    """RL costs need an RL run, dataset costs a dataset run: one line saying which to give otherwise."""
    if run.is_rl:
        wrong = [c for c in s.sweep.costs if c in DATASET_COSTS]
        if wrong:
            raise ConfigError(f"sweep.costs {wrong} measure a dataset, but {run.path} is a run of the RL task "
                              f"{run.meta.get('env')}: use sweep.costs=[episode_return,ppo_loss,distilled] "
                              f"(experiment=rl_surfaces_2x2)")
    else:
        wrong = [c for c in s.sweep.costs if c in RL_COSTS]
        if wrong:
            raise ConfigError(f"sweep.costs {wrong} are RL costs, but {run.path} was distilled from the dataset "
                              f"{run.dataset_name}: give an RL run (distillscape-distill experiment=cartpole) or "
                              f"dataset costs (train, test, distilled)")


def rl_experience_cost(s: LandscapeJob, run: Run, pts: RunPoints, centre: str, source: str = "own") -> PPOLossCost:
    """The static experience set of cost ppo_loss (source "own": the centre's policy acting) or
    ppo_loss_reference (source "reference": the run's direct PPO minimum acting, the same set for every
    centre): sampled actions in landscape.experience_envs environments, advantages by GAE from the run's
    PPO critic, held fixed (rl_objective)."""
    # rl_objective builds its sets as PPOLossCosts (it imports this module): imported here, when first needed
    from .rl_objective import REFERENCE_POLICY, gather_experience, ppo_cost

    ls = s.landscape
    policy = centre if source == "own" else REFERENCE_POLICY
    exp = gather_experience(run, unflatten(pts[policy], pts.swept), ls.experience_steps, ls.experience_envs,
                            ls.experience_seed, source, policy)
    return ppo_cost(exp)


def build_costs(s: LandscapeJob, run: Run, dm, pts: RunPoints | None = None, centre: str | None = None) -> BuiltCosts:
    """The costs sweep.costs names, in its order, on the run's data (checked by `Run.datamodule`); an RL
    run's costs on its environment (ppo_loss: on experience of the policy at `centre`; ppo_loss_reference: of
    the run's direct PPO minimum, whatever the centre)."""
    check_costs_fit_run(s, run)
    src, built = CostSource(s, run, dm, pts, centre), BuiltCosts([])
    for name in s.sweep.costs:
        if name not in SWEEP_COST_CLASSES:
            raise ConfigError(f"sweep.costs entry {name!r}; choose from: {', '.join(SWEEP_COSTS)}")
        part = SWEEP_COST_CLASSES[name].build(src)
        built.costs += part.costs
        built.warnings += part.warnings
    return built
