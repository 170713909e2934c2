"""Resumable runs: what a checkpoint needs beyond Lightning's own state, and skipping finished jobs.

A distillation draws fresh random inits every outer step from torch's global RNG and reads real
batches in shuffled order. Lightning's checkpoint already holds the synthetic batch (the module's
parameters), the optimizer state and the loop counters; to continue *exactly* where a run stopped
it also needs
- the RNG states at the moment of the checkpoint: `RngState`, a callback whose state is plain
  tensors / ints (so `torch.load(weights_only=True)` reads it), and
- the real batch of outer step k to depend on (seed, k) only, not on how many times the loader was
  re-created: `StepIndexedBatches`, the train loader's batch sampler.

A job writes `complete.json` when it has finished; rerunning the same job into the same directory
(the same `hydra.run.dir`, or the same `hydra.sweep.dir` of a multirun) returns its metrics instead of
recomputing them. A job killed before that resumes from `checkpoints/last.ckpt` with `ckpt_path=last`.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any, Callable, Iterator

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from .artifacts import atomic_write, read_json, write_json
from .config import ConfigError

COMPLETE = "complete.json"
# Keys that say where or how visibly a job runs, not what it computes: a rerun may change them.
NOT_IDENTITY = ("paths", "ckpt_path", "skip_complete", "logger", "trainer.enable_progress_bar")


# -- RNG state in the checkpoint ---------------------------------------------------------------------
class RngState(L.Callback):
    """Saves the torch (CPU and CUDA), numpy and Python RNG states with every checkpoint and restores
    them on resume, so the inits drawn after a resume are the ones an uninterrupted run draws."""

    def state_dict(self) -> dict[str, Any]:
        np_kind, np_keys, np_pos, np_gauss, np_cached = np.random.get_state()
        py_version, py_state, py_gauss = random.getstate()
        state = {"torch": torch.get_rng_state(),
                 "numpy": {"kind": np_kind, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                           "has_gauss": int(np_gauss), "cached_gaussian": float(np_cached)},
                 "python": {"version": py_version, "state": list(py_state),
                            "gauss": py_gauss}}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Applied just before the first step after the resume, not now: setup between here and that
        # step (on_train_start hooks, loaders) may draw random numbers, as it did once at step 0 of
        # the uninterrupted run, whose state at step k+1 is the one saved at step k.
        self._pending = state

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        state, self._pending = getattr(self, "_pending", None), None
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                             n["cached_gaussian"]))
        p = state["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


# -- real batches as a function of the step ----------------------------------------------------------
class StepIndexedBatches:
    """Batch sampler whose k-th batch (k counted over the whole run) is slice k % per_epoch of the
    permutation seeded by (seed, k // per_epoch). Each new iterator starts at `start()` (the trainer's
    global step), so a run resumed mid-epoch reads the batches the uninterrupted run read.
    The seed is the run's seed (`PL_GLOBAL_SEED`, set by `seed_everything`) unless one is given."""

    def __init__(self, n: int, batch_size: int, start: Callable[[], int] = lambda: 0, seed: int | None = None):
        self.n, self.batch_size, self.start = n, batch_size, start
        self.seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else seed
        self.per_epoch = n // batch_size  # incomplete last batch dropped, as in training loaders

    def __len__(self) -> int:
        return self.per_epoch

    def permutation(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))

    def __iter__(self) -> Iterator[list[int]]:
        k = int(self.start())
        perm = self.permutation(k // self.per_epoch)
        for i in range(k % self.per_epoch, self.per_epoch):  # to the end of this epoch
            yield perm[i * self.batch_size:(i + 1) * self.batch_size].tolist()


# -- the job's config beside its outputs, and skipping finished jobs --------------------------------------
def _task_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def identity(cfg: DictConfig) -> dict:
    """The resolved config without the keys that do not change what a job computes."""
    data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    data.pop("hydra", None)
    for key in NOT_IDENTITY:
        *parents, leaf = key.split(".")
        node = data
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return data


def config_digest(cfg: DictConfig) -> str:
    return hashlib.sha256(json.dumps(identity(cfg), sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_job_config(cfg: DictConfig, out: Path) -> None:
    """The resolved config and the command-line overrides beside the job's outputs (Hydra's .hydra/
    keeps the unresolved config; this one has every interpolation, e.g. the data path, filled in)."""
    data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    data.pop("hydra", None)
    text = OmegaConf.to_yaml(OmegaConf.create({"overrides": _task_overrides(), "config": data}))
    atomic_write(out / "config_resolved.yaml", lambda tmp: Path(tmp).write_text(text))


def finished_metrics(cfg: DictConfig, out: Path) -> dict | None:
    """The metrics of this very job if it already finished in `out`, else None.

    A `complete.json` of a job with a different config means the directory is being reused for
    another job (e.g. a sweep rerun with other overrides into the same hydra.sweep.dir): refused."""
    if not cfg.get("skip_complete", True):
        return None
    marker = out / COMPLETE
    if not marker.exists():
        return None
    done = read_json(marker)
    if done.get("config_digest") != config_digest(cfg):
        raise ConfigError(
            f"{out} holds a finished job with another config (overrides {done.get('overrides')}, now "
            f"{_task_overrides()}); give this run its own directory (hydra.run.dir / hydra.sweep.dir) or "
            f"pass skip_complete=false to overwrite it")
    return read_json(out / "metrics.json")


def mark_complete(cfg: DictConfig, out: Path) -> None:
    write_json(out / COMPLETE, {"config_digest": config_digest(cfg), "overrides": _task_overrides()})
