"""Benchmark: the test evaluation of a distilled batch over 100 vs 1000 held-out inits (distill.eval_inits),
side by side, eval only: the same work as DistillModule's test phase (draw the inits, land them with the
protocol, score every landed model on the test split in the loader's batches), on a finished distill run.

    python bench/bench_eval_inits.py <distill run dir> [--inits 100 1000] [--protocols one_step yang] [--repeats 3]

Prints seconds per evaluation (median of the repeats) and the 1000/100 ratio per protocol (issue 24: 1000
inits, the reference study's setting, should cost little more than 100)."""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from distillscape.config import EvalConfig
from distillscape.inner import evaluate_stack
from distillscape.run import Run


def evaluate(run: Run, dm, n: int, protocol: str) -> tuple[float, float]:
    """Seconds of one test evaluation of n inits under `protocol`, and its mean accuracy."""
    loop = run.loop()
    t0 = time.perf_counter()
    inits = run.inits(n, seed=123)
    landed = run.land(inits, loop, protocol=EvalConfig(protocol=protocol))
    correct, count = 0.0, 0
    for x, y in dm.test_dataloader():
        acc, _ = evaluate_stack(loop, landed, x, y, batch_size=len(y))
        correct, count = correct + acc * len(y), count + len(y)
    return time.perf_counter() - t0, float((correct / count).mean())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("--inits", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--protocols", nargs="+", default=["one_step", "yang"])
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    run = Run.open(a.run)
    dm = run.datamodule()
    print(f"{run.dataset_name} / {run.arch_name}, torch threads {torch.get_num_threads()}")
    for protocol in a.protocols:
        evaluate(run, dm, a.inits[0], protocol)  # warm-up: first-call costs are not the evaluation's
        secs = {}
        for n in a.inits:
            times, acc = zip(*(evaluate(run, dm, n, protocol) for _ in range(a.repeats)))
            secs[n] = statistics.median(times)
            print(f"{protocol:>9} {n:>5} inits: {secs[n]:.3f} s (runs {', '.join(f'{t:.3f}' for t in times)}), "
                  f"accuracy {acc[0]:.4f}")
        print(f"{protocol:>9} ratio {a.inits[-1]}/{a.inits[0]}: {secs[a.inits[-1]] / secs[a.inits[0]]:.2f}x")


if __name__ == "__main__":
    main()
