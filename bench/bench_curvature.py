"""Seconds per landing of the curvature certificate's spectra: batched Lanczos vs the same method one landing
at a time vs PyHessian, side by side in one run on the same points.

Per landing: the top-k and bottom-k Hessian eigenvalues (Lanczos, full reorthogonalisation, explicit
residuals) and a spectral density (stochastic Lanczos quadrature) of the true task (cross-entropy over
the MNIST training split, or its first --examples images), for mlp and simple_convnet.
  ours:      distillscape.curvature, every Hessian-vector product one vmapped forward-over-reverse pass
             over all --points landings (in chunks of --init-chunk models) and the data in --data-chunk chunks;
  loop:      the same functions on one landing at a time (the first --loop-points landings);
  PyHessian: `hessian(model, CrossEntropyLoss(), dataloader=...).eigenvalues(top_n=k)` (power iteration
             with deflation; PyHessian has no bottom eigenvalues, and its `density` calls torch.eig, which
             torch 2 removed, so only its top-k is timed) on the first --peer-points landings.
Agreement: for a symmetric H every Ritz value lies within its residual of an eigenvalue, so two methods
agree on an eigenvalue when |a - b| <= r_a + r_b (PyHessian's values have no residual: r_b = tol * |b|).

The landings: one step of the distilled batch of --distilled (a distillscape-distill run on MNIST, arch
mlp or simple_convnet) from random inits; without it, one SGD step (lr 0.1) on 100 random real training
images from each init (a stand-in: a point one step from an init).

    .venv/bin/python bench/bench_curvature.py --data ../shared/data                       # 32 landings, all of MNIST
    .venv/bin/python bench/bench_curvature.py --points 4 --examples 1000 --lanczos-steps 30 --loop-points 2
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from distillscape.curvature import extreme_eigenpairs, points_per_pass, slq, stack_hvp, tiled
from distillscape.data import TensorDataModule
from distillscape.inner import InitSampler, InnerLoop
from distillscape.landing import TrueTask
from distillscape.models import MLP, SimpleConvNet, activations_per_example
from distillscape.params import head, stack_len

ARCHS = {"mlp": lambda: MLP(1, 28, 28, 10, hidden=[128]), "simple_convnet": lambda: SimpleConvNet(1, 28, 28, 10)}


def spectra(task: TrueTask, stack, args, seed: int) -> dict[str, torch.Tensor]:
    """Top/bottom Ritz values with residuals and SLQ nodes/weights of every point of the stack, batched."""
    g = torch.Generator().manual_seed(seed)
    m, d = stack_len(stack), sum(v[0].numel() for v in stack.values())
    eig = extreme_eigenpairs(stack_hvp(task, stack), (m, d), args.lanczos_steps, args.eigs, g,
                             next(iter(stack.values())), lambda t: stack_hvp(task, tiled(stack, t)))
    nodes, weights = slq(stack_hvp(task, tiled(stack, args.slq_starts)), (m, d), args.slq_steps, args.slq_starts, g)
    return {**{k: eig[k] for k in ("top", "top_residual", "bottom", "bottom_residual")}, "nodes": nodes, "weights": weights}


def landings(arch: str, dm, args) -> tuple[InnerLoop, dict]:
    net = ARCHS[arch]()
    loop = InnerLoop(net, "soft_ce")
    if args.distilled:
        from distillscape.run import Run

        run = Run.open(args.distilled)
        loop = run.loop()
        return loop, run.land(run.sampler().sample(args.points, seed=0), loop)
    inits = InitSampler(net).sample(args.points, seed=0)
    g = torch.Generator().manual_seed(1)
    idx = torch.randperm(len(dm.train_y), generator=g)[:100]
    x, y = dm.train_x[idx], dm.train_y[idx]

    def loss(p):
        return F.cross_entropy(loop.forward(p, x), y)

    grads = torch.vmap(torch.func.grad(loss))(inits)
    return loop, {k: (inits[k] - 0.1 * grads[k]).detach() for k in loop.names}


def pyhessian_top(loop, point: dict, x, y, args) -> tuple[list[float], float]:
    from pyhessian import hessian

    net = loop.net
    net.load_state_dict({k: v for k, v in point.items()}, strict=False)
    loader = [(x[i:i + args.data_chunk], y[i:i + args.data_chunk]) for i in range(0, len(y), args.data_chunk)]
    torch.manual_seed(0)
    t0 = time.perf_counter()
    peer = hessian(net, torch.nn.CrossEntropyLoss(), dataloader=loader, cuda=False)
    top, _ = peer.eigenvalues(maxIter=args.peer_iters, tol=args.peer_tol, top_n=args.eigs)
    return top, time.perf_counter() - t0


def agree(a, ra, b, rb) -> tuple[float, bool]:
    """Largest |a - b| relative to the larger magnitude, and whether every pair is within its residuals."""
    a, ra, b, rb = (torch.as_tensor(v, dtype=torch.float64) for v in (a, ra, b, rb))
    rel = ((a - b).abs() / torch.maximum(a.abs(), b.abs()).clamp_min(1e-12)).max().item()
    return rel, bool(((a - b).abs() <= ra + rb + 1e-6).all())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data", help="directory holding MNIST/raw")
    ap.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    ap.add_argument("--distilled", default=None, help="a distillscape-distill run on MNIST whose batch lands the inits")
    ap.add_argument("--points", type=int, default=32, help="landings certified at once")
    ap.add_argument("--examples", type=int, default=None, help="the first this many training images (default: all)")
    ap.add_argument("--eigs", type=int, default=10, help="k: top-k and bottom-k")
    ap.add_argument("--lanczos-steps", type=int, default=60)
    ap.add_argument("--slq-starts", type=int, default=1)
    ap.add_argument("--slq-steps", type=int, default=30)
    ap.add_argument("--loop-points", type=int, default=2, help="landings run one at a time (the same method)")
    ap.add_argument("--peer-points", type=int, default=1, help="landings given to PyHessian (0: skip it)")
    ap.add_argument("--peer-iters", type=int, default=100, help="PyHessian's power iterations per eigenvalue")
    ap.add_argument("--peer-tol", type=float, default=1e-3)
    ap.add_argument("--data-chunk", type=int, default=1000)
    ap.add_argument("--init-chunk", type=int, default=None,
                    help="models per vmapped pass (default: curvature.points_per_pass's rule, as the certificate)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)

    dm = TensorDataModule("mnist", root=args.data, val_size=0)
    dm.setup()
    n = args.examples or len(dm.train_y)
    x, y = dm.train_x[:n].to(device), dm.train_y[:n].to(device)
    print(f"threads {torch.get_num_threads()}, device {device}, {n} training images, {args.points} landings, "
          f"k={args.eigs}, Lanczos {args.lanczos_steps} steps, SLQ {args.slq_starts} x {args.slq_steps}")
    for arch in args.archs:
        loop, points = landings(arch, dm, args)
        loop.net.to(device)
        points = {k: v.to(device) for k, v in points.items()}
        d = sum(v[0].numel() for v in points.values())
        # points per pass by the certificate's memory rule: 32 conv nets in one pass ran out of 24 GB
        chunk = args.init_chunk or points_per_pass(args.data_chunk, activations_per_example(loop.net, x[:1]))
        task = TrueTask(loop, x, y, args.data_chunk, chunk)
        t0 = time.perf_counter()
        ours = spectra(task, points, args, seed=0)
        ours_s = (time.perf_counter() - t0) / args.points
        print(f"\n{arch} ({d} parameters, {chunk} landings per vmapped pass)")
        print(f"  ours (batched over {args.points})   : {ours_s:8.2f} s/landing")
        if args.loop_points:
            t0 = time.perf_counter()
            loop_res = [spectra(task, head({k: v[i:] for k, v in points.items()}, 1), args, seed=100 + i)
                        for i in range(args.loop_points)]
            loop_s = (time.perf_counter() - t0) / args.loop_points
            print(f"  loop (one landing at a time) : {loop_s:8.2f} s/landing  -> batched {loop_s / ours_s:6.2f}x faster")
            for i, r in enumerate(loop_res):
                for which in ("top", "bottom"):
                    rel, ok = agree(ours[which][i], ours[f"{which}_residual"][i], r[which][0], r[f"{which}_residual"][0])
                    print(f"    landing {i} {which}-{args.eigs}: max rel. diff {rel:.2e}, within residuals: {ok}")
                moments = [(w * nd).sum(-1).mean().item() for w, nd in ((ours["weights"][i], ours["nodes"][i]),
                                                                        (r["weights"][0], r["nodes"][0]))]
                print(f"    landing {i} SLQ mean eigenvalue (tr H / D): batched {moments[0]:.4g}, loop {moments[1]:.4g}")
        for i in range(args.peer_points if args.device == "cpu" else 0):
            try:
                top, peer_s = pyhessian_top(loop, {k: v[i] for k, v in points.items()}, x, y, args)
            except ImportError:
                print("  PyHessian: not installed (pip install pyhessian); skipped")
                break
            rel, ok = agree(ours["top"][i], ours["top_residual"][i], top, [args.peer_tol * abs(t) for t in top])
            print(f"  PyHessian top-{args.eigs} only   : {peer_s:8.2f} s/landing  -> ours {peer_s / ours_s:6.2f}x faster "
                  f"(target >= 10x); landing {i}: max rel. diff {rel:.2e}, within residual + tol: {ok}")
            print(f"    ours top: {[round(v, 4) for v in ours['top'][i].tolist()]}")
            print(f"    PyHessian: {[round(v, 4) for v in top]}")
        print(f"  ours bottom (landing 0): {[round(v, 4) for v in ours['bottom'][0].tolist()]}, "
              f"residuals {[f'{v:.1e}' for v in ours['bottom_residual'][0].tolist()]}")


if __name__ == "__main__":
    main()
