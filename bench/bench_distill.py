"""Benchmark: distill full MNIST into 10 images (one per class) for ONE inner step from random inits,
on CPU (or on a GPU: pass the override trainer=gpu), for mlp and simple_convnet.

Reports one-step test accuracy (mean ± std over 100 held-out inits), outer steps per second and peak
memory (max RSS of the job's process, which it records itself). Each architecture runs the real `distillscape-distill`
job (experiment=mnist_onestep) in its own process, so the peak memory is that job's alone.

    python bench/bench_distill.py [--data ../shared/data] [--steps N] [--archs mlp mlp512 simple_convnet]

Targets (issue 2): >= 88% mean for mlp, >= 90% for simple_convnet. `mlp512` is the mlp with one hidden
layer of 512 units instead of the default 128 (arch=mlp arch.hidden=[512]).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"mlp": 0.88, "mlp512": 0.88, "simple_convnet": 0.90}
VARIANTS = {"mlp512": ["arch=mlp", "arch.hidden=[512]"]}  # name -> overrides; any other name is an arch/ config


def one(arch: str, data: str, steps: int | None, out: Path, extra: list[str]) -> dict:
    """Run one distillation in a child process; return its metrics and the child's peak memory."""
    args = [sys.executable, "-m", "distillscape.tasks.distill", "experiment=mnist_onestep",
            *VARIANTS.get(arch, [f"arch={arch}"]),
            f"paths.data_dir={data}", f"hydra.run.dir={out}", "trainer.enable_progress_bar=false", *extra]
    if steps:
        args.append(f"distill.steps={steps}")
    t0 = time.perf_counter()
    subprocess.run(args, cwd=REPO, check=True)
    wall = time.perf_counter() - t0
    m = json.loads((out / "metrics.json").read_text())
    return {"arch": arch, "acc_mean": m["test/onestep_acc_mean"], "acc_std": m["test/onestep_acc_std"],
            "inits": int(m["test/onestep_inits"]), "steps_per_second": m["train/steps_per_second"],
            "distill_seconds": m["train/seconds"], "job_seconds": wall, "peak_rss_mib": m["train/peak_rss_mib"],
            "direct_acc": m["direct/acc"], "random_real_acc": m["random_real/acc_mean"],
            "peak_gpu_mib": m.get("train/peak_gpu_mib")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("DISTILLSCAPE_DATA", str(REPO.parent / "shared" / "data")))
    p.add_argument("--steps", type=int, default=None, help="outer steps (default: the experiment's)")
    p.add_argument("--archs", nargs="+", default=["mlp", "mlp512", "simple_convnet"])
    p.add_argument("--out", default=None, help="where the runs write (default: a temporary directory)")
    p.add_argument("extra", nargs="*", help="further Hydra overrides for every run")
    a = p.parse_args()
    base = Path(a.out or tempfile.mkdtemp(prefix="bench_distill_"))
    rows = []
    for arch in a.archs:  # one after the other, so that timings do not share the cores
        rows.append(one(arch, a.data, a.steps, base / arch, a.extra))
    # the runs say where they ran: a job on a GPU records its peak GPU memory
    gpu = any(r["peak_gpu_mib"] is not None for r in rows)
    where = "GPU " + torch.cuda.get_device_name() if gpu else "CPU"
    print(f"\nMNIST, 10 distilled images, 1 inner step, random inits, {where} ({os.cpu_count()} cores, "
          f"torch threads {os.environ.get('OMP_NUM_THREADS', 'default')})")
    print(f"{'arch':16} {'one-step acc':>18} {'inits':>6} {'target':>7} {'steps/s':>8} {'peak MiB':>9} "
          f"{'direct':>7} {'rand.real':>9}")
    for r in rows:
        t = TARGETS.get(r["arch"])
        mark = "" if t is None else ("  ok" if r["acc_mean"] >= t else "  MISSED")
        print(f"{r['arch']:16} {r['acc_mean']:.4f} ± {r['acc_std']:.4f} {r['inits']:6d} {t or 0:7.2f} "
              f"{r['steps_per_second']:8.2f} {r['peak_rss_mib']:9.0f} {r['direct_acc']:7.4f} "
              f"{r['random_real_acc']:9.4f}{mark}"
              + (f"  peak GPU {r['peak_gpu_mib']:.0f} MiB" if r["peak_gpu_mib"] is not None else ""))
    (base / "bench_distill.json").write_text(json.dumps(rows, indent=2))
    print(f"runs and bench_distill.json in {base}")


if __name__ == "__main__":
    main()
