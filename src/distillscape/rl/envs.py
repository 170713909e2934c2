"""RL environments: gymnasium vector environments (CartPole-v1's numpy-vectorised entry point, ale-py's
AtariVectorEnv) whose `reset(seeds)` starts episode i from seeds[i], observations as network input, and
`one_thread` for the tiny policies."""
from __future__ import annotations

import json
from contextlib import contextmanager

import numpy as np
import torch

from ..config import EnvConfig
from ..errors import DatasetNotFoundError


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
