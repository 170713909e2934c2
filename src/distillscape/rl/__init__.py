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

The modules, from the bottom up:
  envs       vector environments, observations as network input, `one_thread`
  rollouts   policy stacks acting together: episode returns, the PPO experience `Collector`
  ppo        GAE, the clipped surrogate, the critic's loss, direct PPO (`train_ppo`)
  baselines  one step on a fixed batch of states: held-out returns, the random / PPO-visited baselines
  distiller  `RLDistiller` (PPO through the inner step, or ES) and `RLDistillModule` (its LightningModule)
"""
from .baselines import one_step_baseline, onestep_returns, visited_states
from .distiller import RLDistillModule, RLDistiller, action_targets
from .envs import CARTPOLE_START, VecEnv, cartpole_starts, make_atari, one_thread, to_input
from .ppo import PPOBatch, critic_loss, gae, log_probs, normalise, ppo_batch, ppo_surrogate, train_ppo, value_of
from .rollouts import (Collector, Experience, choose, episode_returns, episode_returns_one, episode_seeds,
                       rollout_returns, stack_forward)

__all__ = [
    "CARTPOLE_START", "Collector", "Experience", "PPOBatch", "RLDistillModule", "RLDistiller", "VecEnv",
    "action_targets", "cartpole_starts", "choose", "critic_loss", "episode_returns", "episode_returns_one",
    "episode_seeds", "gae", "log_probs", "make_atari", "normalise", "one_step_baseline", "one_thread",
    "onestep_returns", "ppo_batch", "ppo_surrogate", "rollout_returns", "stack_forward", "to_input", "train_ppo",
    "value_of", "visited_states",
]
