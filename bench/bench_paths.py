"""Times the candidate paths that `auto` chooses between, per architecture and input shape, on this machine,
beside the path the fixed rule takes (the rules: inner.outer_batching_rule, inner.eval_path_rule,
landscape.batching_rule). A run never times anything: the paths round differently, and a number must not
depend on which one was faster that day. This is how the rules were checked, and how to check them on
other hardware.

    python bench/bench_paths.py [--parts distill eval landscape] [--shapes digits mnist] [--archs mlp lenet ...]

distill: one outer step (forward and backward) over 8 inits on a real batch of 256, vmap against loop;
eval: 8 models on 1000 examples, vmap against channels_last; landscape: 4 grid points of a plane on 4096
examples, every path at 4096 and the loop paths also at 128 examples per forward. Each time is the best
of 3 calls after a warm-up one.
"""
from __future__ import annotations

import argparse
import time

import torch

from distillscape.config import DistillConfig
from distillscape.costs import CrossEntropyCost
from distillscape.distill import DistillModule
from distillscape.geometry import flatten, points, random_direction, swept_state
from distillscape.inner import InitSampler, InnerLoop, eval_path_rule, outer_batching_rule
from distillscape.landscape import SMALL_DATA_BATCH, LandscapeModule, batching_rule
from distillscape.models import MLP, ConvNet, LeNet, SimpleConvNet

ARCHS = {"mlp": MLP, "lenet": LeNet, "simple_convnet": SimpleConvNet, "convnet": ConvNet}
SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


def best_of(run, calls: int = 3) -> float:
    run()  # warm-up
    best = float("inf")
    for _ in range(calls):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


def distill_paths(net, shape) -> dict[str, float]:
    module = DistillModule(net, 10, shape, DistillConfig(inits_per_step=8))
    x, y = torch.randn(256, *shape), torch.randint(10, (256,))
    inits = module.sampler.sample(8, seed=1)
    return {p: best_of(lambda: module.outer_loss(inits, x, y, p)[0].backward()) for p in ("vmap", "loop")}


@torch.no_grad()
def eval_paths(net, shape) -> dict[str, float]:
    loop, stack, x = InnerLoop(net), InitSampler(net).sample(8, seed=1), torch.randn(1000, *shape)
    return {p: best_of(lambda: InnerLoop(net, eval_path=p).forward_models(stack, x)) for p in ("vmap", "channels_last")}


def landscape_paths(net, shape) -> dict[str, float]:
    centre, _ = swept_state(net)
    g = torch.Generator().manual_seed(0)
    dirs = torch.stack([flatten(random_direction(centre, g)) for _ in range(2)])
    x, y = torch.randn(4096, *shape), torch.randint(10, (4096,))
    module = LandscapeModule(net, flatten(centre), dirs, centre, [CrossEntropyCost("train", x, y)], data_batch=4096)
    vecs = points(module.centre, module.directions, torch.rand(4, 2))
    out = {}
    for path, data_batch in [("vmap", 4096), ("loop", 4096), ("channels_last", 4096), ("loop", SMALL_DATA_BATCH),
                             ("channels_last", SMALL_DATA_BATCH)]:
        module.data_batch = data_batch
        out[f"{path}@{data_batch}"] = best_of(lambda: module.evaluate(vecs, path))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["distill", "eval", "landscape"])
    ap.add_argument("--shapes", nargs="+", default=["digits", "mnist"], choices=list(SHAPES))
    ap.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    a = ap.parse_args()
    print(f"CPU, torch threads {torch.get_num_threads()}; seconds, best of 3")
    for part in a.parts:
        for shape_name in a.shapes:
            shape = SHAPES[shape_name]
            for arch in a.archs:
                torch.manual_seed(0)
                net = ARCHS[arch](*shape, 10)
                if part == "distill":
                    took, rule = distill_paths(net, shape), outer_batching_rule(net, "cpu")
                elif part == "eval":
                    example = torch.zeros(1, *shape)
                    took, rule = eval_paths(net, shape), eval_path_rule(net, InnerLoop(net).activation_bytes(example), "cpu")
                else:
                    size = InnerLoop(net).activation_bytes(torch.zeros(1, *shape))
                    took, rule = landscape_paths(net, shape), "{}@{}".format(*batching_rule(net, size, "cpu", 4096))
                fastest = min(took, key=took.get)
                print(f"{part:9} {shape_name:7} {arch:14} " + "  ".join(f"{k} {v:.3f}" for k, v in took.items())
                      + f"  -> fastest {fastest}, rule {rule}" + ("" if fastest == rule else "  (differs)"), flush=True)


if __name__ == "__main__":
    main()
