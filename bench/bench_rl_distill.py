"""Issue 14's cart-pole target: at most 16 synthetic states, ONE gradient step from a random init, mean
return >= 475 (CartPole-v1's "solved" threshold) over 100 held-out inits, on 2 CPU cores within 20 minutes.

Runs the real job (`distillscape-distill experiment=cartpole`, overrides passed through) and prints its
held-out numbers next to the baselines it measures (PPO, one step on random states with random action
labels, one step on states the PPO policy visits labelled with its actions) and the wall-clock time from
start to end (PPO baseline, distillation, evaluation).

    .venv/bin/python bench/bench_rl_distill.py [overrides ...]
"""
from __future__ import annotations

import sys
import tempfile
import time

from distillscape.tasks.common import compose_task
from distillscape.tasks.distill import distill


def main():
    overrides = sys.argv[1:]
    with tempfile.TemporaryDirectory() as out:
        cfg = compose_task("distill", ["experiment=cartpole", "logger=none", f"paths.output_dir={out}", *overrides])
        t0 = time.perf_counter()
        m = distill(cfg)
        wall = time.perf_counter() - t0
    n = cfg.distill.images_per_class * 2
    print(f"cart-pole, {n} synthetic states, {int(m['test/onestep_inits'])} held-out inits x "
          f"{int(m['test/episodes_per_init'])} episodes ({cfg.rl.eval_actions} actions), overrides {overrides or 'none'}")
    print(f"one step on the distilled states : {m['test/onestep_return_mean']:7.1f} ± {m['test/onestep_return_std']:.1f} "
          f"(min {m['test/onestep_return_min']:.1f}, max {m['test/onestep_return_max']:.1f})   target >= 475")
    print(f"one step on random states        : {m['random_states/return_mean']:7.1f} ± {m['random_states/return_std']:.1f}")
    print(f"one step on PPO-visited states   : {m['ppo_states/return_mean']:7.1f} ± {m['ppo_states/return_std']:.1f}")
    print(f"PPO (direct)                     : {m['direct/return_mean']:7.1f}")
    print(f"wall clock, whole job            : {wall:7.1f} s ({m['train/seconds']:.1f} s distilling, "
          f"{m['train/steps_per_second']:.2f} outer steps/s)   target <= 1200 s")


if __name__ == "__main__":
    main()
