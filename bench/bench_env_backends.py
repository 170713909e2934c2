"""Which vectorised environment backend to step RL episodes with: the ones distillscape uses (gymnasium's
numpy-vectorised CartPole-v1, ale-py's AtariVectorEnv) against envpool, side by side in one run.

envpool is not a dependency (it was measured, not adopted: see the README's RL section); install it into
a scratch venv beside distillscape's requirements to rerun this:
    python -m venv /tmp/ep && /tmp/ep/bin/pip install envpool 'gymnasium>=1.0,<2' 'ale-py>=0.10'
    /tmp/ep/bin/python bench/bench_env_backends.py
Each backend steps random actions (the same for both) for a fixed number of steps after a reset;
printed: environment steps per second and the ratio. Alternated per size, so load drifts hit both.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def steps_per_second(env, n: int, steps: int, reset) -> float:
    reset(env)
    acts = np.random.default_rng(0).integers(0, env.single_action_space.n, (steps, n))
    t = time.perf_counter()
    for a in acts:
        env.step(a)
    dt = time.perf_counter() - t
    env.close()
    return n * steps / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cartpole-envs", type=int, nargs="+", default=[16, 256, 2048])
    ap.add_argument("--atari-envs", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    import ale_py
    import envpool
    import gymnasium

    backends = {
        "cartpole": (
            ("gymnasium make_vec (numpy)", lambda n: gymnasium.make_vec("CartPole-v1", num_envs=n,
                                                                          vectorization_mode="vector_entry_point"),
             lambda e: e.reset(seed=0)),
            ("envpool", lambda n: envpool.make_gymnasium("CartPole-v1", num_envs=n, seed=0), lambda e: e.reset())),
        "centipede": (
            ("ale-py AtariVectorEnv", lambda n: ale_py.vector_env.AtariVectorEnv(
                game="centipede", num_envs=n, frameskip=4, stack_num=4, img_height=84, img_width=84, grayscale=True,
                repeat_action_probability=0.0, episodic_life=False), lambda e: e.reset(seed=0)),
            ("envpool", lambda n: envpool.make_gymnasium("Centipede-v5", num_envs=n, seed=0, repeat_action_probability=0.0,
                                                         episodic_life=False), lambda e: e.reset())),
    }
    for game, sizes, steps in (("cartpole", a.cartpole_envs, 1000), ("centipede", a.atari_envs, 200)):
        (ours, make_ours, reset_ours), (other, make_other, reset_other) = backends[game]
        for n in sizes:
            r_ours, r_other = [], []
            for _ in range(a.repeats):
                r_ours.append(steps_per_second(make_ours(n), n, steps, reset_ours))
                r_other.append(steps_per_second(make_other(n), n, steps, reset_other))
            mo, me = float(np.median(r_ours)), float(np.median(r_other))
            print(f"{game:9s} n={n:5d}  {ours}: {mo:12,.0f}/s   {other}: {me:12,.0f}/s   "
                  f"ours/envpool = {mo / me:6.2f}  (median of {a.repeats})", flush=True)


if __name__ == "__main__":
    main()
