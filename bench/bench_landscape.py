"""Seconds per grid point of a cost surface: LandscapeModule vs the reference study's per-point loop.

simple_convnet over the full MNIST training split (60k images), side by side in one run:
  reference: perturb the module (load_state_dict of centre + a*delta + b*eta), then a DataLoader over the
             torchvision dataset with its transforms (ToTensor, Normalize), batch 4096, summed CE;
  ours:      LandscapeModule through Trainer.predict: data preloaded once, points built from flat vectors,
             functional_call (vmap over points or a loop, as measured).
Also: the values of both must agree, the achieved GFLOP/s of ours, and a large fp32 matmul's GFLOP/s.
With --bf16, also ours with sweep.precision=bf16 on the same points, in the same run: its speed against
fp32, its largest relative difference from the fp32 losses and whether the lowest point is the same
(target: >= 2.5x, within 1e-3, same minimum).

    .venv/bin/python bench/bench_landscape.py --data ../shared/data --points 4
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torchvision import transforms

from distillscape.data import TensorDataModule
from distillscape.geometry import flatten, grid_coordinates, points, random_direction, swept_state, unflatten
from distillscape.costs import CrossEntropyCost
from distillscape.landscape import LandscapeModule, compute_shard, read_npz
from distillscape.models import SimpleConvNet, flops_per_example
from distillscape.resume import fingerprint


def reference_loop(net, dataset, vecs, like) -> tuple[list[float], float]:
    losses = []
    t0 = time.perf_counter()
    for v in vecs:
        sd = net.state_dict()
        sd.update({k: t.clone() for k, t in unflatten(v, like).items()})
        net.load_state_dict(sd)
        loader = torch.utils.data.DataLoader(dataset, batch_size=4096, shuffle=False)
        with torch.no_grad():
            losses.append(float(np.sum([F.cross_entropy(net(x), y, reduction="sum").item() for x, y in loader]))
                          / len(dataset))
    return losses, time.perf_counter() - t0


def matmul_gflops(n: int = 4096, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data", help="directory holding MNIST/raw")
    ap.add_argument("--points", type=int, default=4, help="grid points per method")
    ap.add_argument("--bf16", action="store_true", help="also the bf16 path on the same points")
    ap.add_argument("--no-reference", action="store_true", help="leave out the reference loop (fp32 against bf16 only)")
    args = ap.parse_args()
    torch.manual_seed(0)

    dm = TensorDataModule("mnist", root=args.data, val_size=0)  # all 60k training images
    dm.setup()
    mean, std = float(dm.mean[0]), float(dm.std[0])
    dataset = torchvision.datasets.MNIST(args.data, train=True, download=False,
                                         transform=transforms.Compose([transforms.ToTensor(),
                                                                       transforms.Normalize((mean,), (std,))]))
    net = SimpleConvNet(1, 28, 28, 10)
    centre, _ = swept_state(net)
    g = torch.Generator().manual_seed(0)
    dirs = torch.stack([flatten(random_direction(centre, g)) for _ in range(2)])
    side = int(np.ceil(np.sqrt(args.points)))
    axes = [torch.linspace(-1, 1, side, dtype=torch.float64)] * 2
    coords = grid_coordinates(axes)[: args.points]
    vecs = points(flatten(centre), dirs, coords.float())

    module = LandscapeModule(copy.deepcopy(net), flatten(centre), dirs, centre,
                             [CrossEntropyCost("train", dm.train_x, dm.train_y)], batching="auto", data_batch=4096)
    module.resolve_batching("cpu")  # the path a run takes (bench/bench_paths.py times the others)
    print(f"path of batching=auto: {module.batching} at {module.data_batch} images per forward")
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False)
    fp = fingerprint(module.centre, module.directions, *axes, data=[module.metric_names, {}])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        # the grid is cut so that this shard holds exactly the first `points` points
        n = len(grid_coordinates(axes))
        ours_path, _ = compute_shard(module, trainer, grid_coordinates(axes)[: args.points], 0, 1, tmp, fp,
                                     points_per_batch=4)
        ours_s = time.perf_counter() - t0
        ours = read_npz(ours_path)["train/loss"]
    ref, ref_s = ([np.nan] * args.points, np.nan) if args.no_reference else reference_loop(copy.deepcopy(net), dataset, vecs, centre)
    if args.bf16:
        low = LandscapeModule(copy.deepcopy(net), flatten(centre), dirs, centre,
                              [CrossEntropyCost("train", dm.train_x, dm.train_y)], batching="auto", data_batch=4096,
                              precision="bf16")
        low.resolve_batching("cpu")
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            low_path, _ = compute_shard(low, trainer, grid_coordinates(axes)[: args.points], 0, 1, tmp,
                                        fingerprint(low.centre, low.directions, *axes, data=[low.metric_names, {"precision": "bf16"}]),
                                        points_per_batch=4)
            low_s = time.perf_counter() - t0
            low_loss = read_npz(low_path)["train/loss"]

    rel = np.max(np.abs(np.array(ref) - ours) / np.abs(np.array(ref)))
    flops = flops_per_example(net, dm.train_x[:1]) * len(dm.train_y) * args.points
    mm = matmul_gflops()
    print(f"threads {torch.get_num_threads()}, {args.points} grid points (of a {n}-point grid), {len(dm.train_y)} images each")
    print(f"reference loop : {ref_s / args.points:8.3f} s/point")
    print(f"LandscapeModule: {ours_s / args.points:8.3f} s/point  ({module.batching}, {module.data_batch} images per forward)")
    print(f"speedup        : {ref_s / ours_s:8.2f}x   (target >= 5x)")
    print(f"max rel. difference of the losses: {rel:.2e}")
    print(f"achieved       : {flops / ours_s / 1e9:8.1f} GFLOP/s  ({flops / args.points / 1e9:.0f} GFLOP per point)")
    print(f"fp32 matmul    : {mm:8.1f} GFLOP/s  -> {flops / ours_s / 1e9 / mm:.2f} of it   (target >= 0.5)")
    if args.bf16:
        bf_rel = np.max(np.abs(low_loss - ours) / np.abs(ours))
        print(f"bf16           : {low_s / args.points:8.3f} s/point  ({low.batching}, {low.data_batch} images per forward)")
        print(f"bf16 vs fp32   : {ours_s / low_s:8.2f}x   (target >= 2.5x); max rel. difference {bf_rel:.2e} "
              f"(target <= 1e-3); lowest point {'the same' if np.argmin(low_loss) == np.argmin(ours) else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
