"""The outer gradient of a cart-pole distillation: PPO's surrogate backpropagated through the inner step
(`rl.estimator=ppo`, the default) against evolution strategies (`rl.estimator=es`, OpenAI-ES with antithetic
pairs and centred ranks, as Lupu et al.'s Behaviour Distillation), side by side in one run.

Each estimator runs the real job (`distillscape-distill experiment=cartpole rl.estimator=...`) for the same
wall-clock budget of distillation (`+trainer.max_time`; the outer steps done are printed), then the usual
held-out test (100 inits x 10 episodes). The PPO baseline is trained once and loaded by the second run.

    .venv/bin/python bench/bench_rl_estimators.py [--seconds 180] [overrides ...]
"""
from __future__ import annotations

import argparse
import tempfile
import time

from distillscape.tasks.common import compose_task
from distillscape.tasks.distill import distill


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=180, help="distillation budget per estimator")
    args, overrides = parser.parse_known_args()
    budget = f"+trainer.max_time=00:00:{args.seconds // 60:02d}:{args.seconds % 60:02d}"
    rows = []
    with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
        for estimator, out in (("ppo", first), ("es", second)):
            extra = [f"direct.checkpoint={first}"] if out != first else []
            cfg = compose_task("distill", ["experiment=cartpole", "logger=none", "trainer.enable_progress_bar=false",
                                           f"paths.output_dir={out}", f"rl.estimator={estimator}", budget,
                                           *extra, *overrides])
            t0 = time.perf_counter()
            m = distill(cfg)
            steps = round(m["train/seconds"] * m["train/steps_per_second"])
            rows.append((estimator, steps, m, time.perf_counter() - t0))
    print(f"cart-pole, 16 synthetic states, {args.seconds} s of distillation per estimator, "
          f"{int(rows[0][2]['test/onestep_inits'])} held-out inits x {int(rows[0][2]['test/episodes_per_init'])} "
          f"episodes, overrides {overrides or 'none'}")
    print(f"{'estimator':10s} {'outer steps':>11s} {'distilling':>10s}  one-step return mean ± std (min, max)")
    for estimator, steps, m, wall in rows:
        print(f"{estimator:10s} {steps:11d} {m['train/seconds']:9.0f}s  {m['test/onestep_return_mean']:7.1f} ± "
              f"{m['test/onestep_return_std']:5.1f} ({m['test/onestep_return_min']:.1f}, {m['test/onestep_return_max']:.1f})"
              f"   whole job {wall:.0f} s")
    best = max(rows, key=lambda r: r[2]["test/onestep_return_mean"])
    print(f"better at this budget: {best[0]}")


if __name__ == "__main__":
    main()
