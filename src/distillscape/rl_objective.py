"""An RL run's PPO loss as a function of the policy's parameters, on a fixed experience set.

The PPO loss of a policy needs experience: observations, the actions taken, their log-probabilities under
the policy that acted, and GAE advantages (from the run's direct PPO critic, held fixed). Who acts decides
what the loss means:

- "own": the policy at the point being measured acted (the reference study's PPO-loss surface: every
  centre gathers its own). At that point every ratio pi_new / pi_old is 1 and the advantages are
  normalised, so the loss there is ~0 by construction, whatever the policy.
- "reference": ONE fixed policy acted, the run's direct PPO minimum (the PPO actor that direct training
  produced), and every centre and grid point is scored on that same experience. The loss is then one
  function of the parameters, comparable across centres, and smooth except where a ratio sits exactly on
  the clip boundary 1 +- clip (a set of measure zero, where autograd takes one side): the function the
  curvature certificate of an RL landing is computed on (`ppo_objective`).

The returns of a policy are not certified: an episode return of a sampled (or greedy) policy is a
step function of the parameters through the actions drawn, not differentiable, and distillscape defines no
smooth return estimate; the certificate says so (`RETURN_ESTIMATE`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .config import RLConfig, as_settings
from .costs import PPOLossCost
from .curvature import FunctionObjective
from .inner import InnerLoop
from .params import Params
from .rl import Collector, ppo_batch, ppo_surrogate
from .run import Run

EXPERIENCE_SOURCES = ("own", "reference")
REFERENCE_POLICY = "minimum"  # the run's direct PPO minimum (the PPO actor), as RunPoints names it
RETURN_ESTIMATE = ("none: the episode return of a sampled or greedy policy is not a differentiable function of the "
                   "parameters (it changes in jumps as the chosen actions change) and no smooth return estimate is "
                   "defined, so the certificate is on the PPO loss (fixed reference experience) only")


@dataclass
class ExperienceSet:
    """A static experience set: `obs` [N, ...], `actions` [N], `logp_old` [N] (under the policy that acted),
    `adv` [N] (GAE from the run's direct critic, normalised), `clip` (PPO's ratio clip); `source` (own |
    reference) and `policy` (the named point that acted) say whose experience it is."""
    obs: torch.Tensor
    actions: torch.Tensor
    logp_old: torch.Tensor
    adv: torch.Tensor
    clip: float
    source: str
    policy: str

    def describe(self) -> str:
        """One line for the outputs: whose experience, how much."""
        who = ("the centre's own policy (each centre its own; ~0 at the centre by construction)" if self.source == "own"
               else f"one fixed reference policy, the run's direct PPO minimum ({self.policy}), shared by every centre")
        return f"{self.source}: {len(self.actions)} samples gathered by {who}"


def gather_experience(run: Run, policy: Params, samples: int, envs: int, seed: int, source: str,
                      policy_name: str) -> ExperienceSet:
    """`samples` valid samples of the single policy `policy` (unstacked parameters) acting with sampled
    actions in `envs` environments started from `seed`, advantages by GAE from the run's direct critic
    (normalised over everything gathered), the run's gamma, lambda and clip."""
    if source not in EXPERIENCE_SOURCES:
        raise ValueError(f"experience source {source!r}; choose from {EXPERIENCE_SOURCES}")
    rl = as_settings(RLConfig, run.meta.get("config", {}).get("rl") or {})
    loop = InnerLoop(run.net())
    collector = Collector(run.env(), 1, envs, seed)
    try:
        exp = collector.collect(loop, {k: v.unsqueeze(0) for k, v in policy.items()}, -(-samples // envs))
    finally:
        collector.close()
    batch = ppo_batch(exp, run.critic("direct"), rl.gamma, rl.gae_lambda)
    keep = batch.mask[0]
    obs, act, logp, adv = (t[0][keep][:samples] for t in (batch.obs, batch.actions, batch.logp, batch.adv))
    return ExperienceSet(obs, act, logp, adv, rl.clip, source, policy_name)


def ppo_cost(exp: ExperienceSet) -> PPOLossCost:
    """The sweep cost of an experience set: metric ppo/loss (own) or ppo_reference/loss (reference)."""
    name = "ppo" if exp.source == "own" else "ppo_reference"
    return PPOLossCost(name, exp.obs, exp.actions, exp.logp_old, exp.adv, exp.clip, experience=exp.describe())


def ppo_loss_one(loop: InnerLoop, exp: ExperienceSet) -> Callable[[Params], torch.Tensor]:
    """The PPO clipped-surrogate loss of one policy (its parameters) on `exp`: a scalar, torch.func-ready."""
    def loss(params: Params) -> torch.Tensor:
        logp = torch.log_softmax(loop.forward(params, exp.obs), -1)
        logp = logp.gather(-1, exp.actions.unsqueeze(-1)).squeeze(-1)
        return ppo_surrogate(logp, exp.logp_old, exp.adv, exp.clip)

    return loss


def ppo_objective(loop: InnerLoop, exp: ExperienceSet, chunk: int | None = None) -> FunctionObjective:
    """The PPO loss on `exp` as a `curvature.Objective` (gradient, Hessian-vector products per point)."""
    return FunctionObjective(loop.names, ppo_loss_one(loop, exp), chunk)
