"""A cart-pole episode-return surface: LandscapeModule (all policies of a chunk step one vectorised env
together) vs the reference study's per-point loop, side by side in one run.

  reference: for each grid point, load_state_dict(centre + a*delta + b*eta) into the actor, then each
             episode in one gymnasium CartPole-v1 env, one step and one forward at a time;
  ours:      LandscapeModule through Trainer.predict with the episode_return cost: a chunk of points
             (vmapped policies) steps points x episodes copies of gymnasium's numpy-vectorised CartPole
             in one call per time step.
The centre is a PPO-trained actor (episodes up to the 500-step limit near it). Both use the same episode
seeds (the same start states) and greedy actions, so their returns must be identical where both compute.
The reference loop runs on `--loop-points` points spread over the grid (all of them with --loop-points 0)
and its time per point is scaled to the grid.

    .venv/bin/python bench/bench_rl_landscape.py                 # 21x21, 10 episodes per point
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time

import lightning as L
import numpy as np
import torch

from distillscape.config import EnvConfig
from distillscape.costs import EpisodeReturnCost
from distillscape.geometry import flatten, grid_coordinates, points, random_direction, swept_state, unflatten
from distillscape.landscape import LandscapeModule, compute_shard, read_npz
from distillscape.models import PolicyMLP
from distillscape.resume import fingerprint
from distillscape.rl import episode_returns_one, episode_seeds, train_ppo


def reference_loop(net, vecs, like, env, seeds) -> tuple[list[float], float]:
    out = []
    t0 = time.perf_counter()
    for v in vecs:
        sd = net.state_dict()
        sd.update({k: t.clone() for k, t in unflatten(v, like).items()})
        net.load_state_dict(sd)
        out.append(float(np.mean(episode_returns_one(net, env, seeds))))
    return out, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=int, default=21)
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--points-per-batch", type=int, default=441)
    ap.add_argument("--loop-points", type=int, default=41, help="points the reference loop computes (0: all)")
    ap.add_argument("--ppo-steps", type=int, default=60_000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    env = EnvConfig()

    actor, critic = PolicyMLP(4, 2), PolicyMLP(4, 1)
    t0 = time.perf_counter()
    info = train_ppo(actor, critic, env, args.ppo_steps, seed=0)
    print(f"centre: PPO actor, {info['ppo/env_steps']} env steps in {time.perf_counter() - t0:.1f}s "
          f"(last training return {info['ppo/final_train_return']:.1f})")
    centre, _ = swept_state(actor)
    g = torch.Generator().manual_seed(0)
    dirs = torch.stack([flatten(random_direction(centre, g)) for _ in range(2)])
    axes = [torch.linspace(-1, 1, args.resolution, dtype=torch.float64)] * 2
    coords = grid_coordinates(axes)
    n = len(coords)
    seeds = episode_seeds(0, args.episodes)

    cost = EpisodeReturnCost("episode", env, seeds)
    module = LandscapeModule(copy.deepcopy(actor), flatten(centre), dirs, centre, [cost], batching="vmap")
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False)
    fp = fingerprint(module.centre, module.directions, *axes, data=[module.metric_names, {}])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path, _ = compute_shard(module, trainer, coords, 0, 1, tmp, fp, points_per_batch=args.points_per_batch)
        ours_s = time.perf_counter() - t0
        ours = read_npz(path)["episode/return"].reshape(-1)

    pick = np.arange(n) if args.loop_points in (0, n) else np.linspace(0, n - 1, args.loop_points).round().astype(int)
    vecs = points(flatten(centre), dirs, coords[pick].float())
    ref, ref_s = reference_loop(copy.deepcopy(actor), vecs, centre, env, seeds)
    ref_per_point = ref_s / len(pick)

    same = np.array_equal(np.array(ref), ours[pick])
    print(f"threads {torch.get_num_threads()}, {args.resolution}x{args.resolution} grid ({n} points), "
          f"{args.episodes} episodes per point, up to {env.max_episode_steps} steps; returns over the grid: "
          f"min {ours.min():.1f}, mean {ours.mean():.1f}, max {ours.max():.1f}")
    print(f"reference loop : {ref_per_point:8.4f} s/point  (on {len(pick)} points: {ref_s:.1f}s; the grid: "
          f"{ref_per_point * n:.1f}s)")
    print(f"LandscapeModule: {ours_s / n:8.4f} s/point  (the grid: {ours_s:.1f}s, {args.points_per_batch} points per chunk)")
    print(f"speedup        : {ref_per_point * n / ours_s:8.1f}x   (target >= 20x)")
    print(f"identical returns at the {len(pick)} points both computed: {same}"
          + ("" if same else f" (max difference {np.max(np.abs(np.array(ref) - ours[pick])):.1f})"))


if __name__ == "__main__":
    main()
