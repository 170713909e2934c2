"""Shared test fixtures: real configs composed from conf/, real data, tiny generated datasets."""
from __future__ import annotations

import os
import pickle
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig, open_dict

from distillscape.tasks.common import CONF_DIR, compose_task  # noqa: F401  (CONF_DIR: for tests that compose by hand)

REPO = Path(__file__).resolve().parents[1]
# Full MNIST lies in ../shared/data beside the checkout (torchvision's raw layout).
SHARED_DATA = Path(os.environ.get("DISTILLSCAPE_TEST_DATA", REPO.parent / "shared" / "data"))
HAS_MNIST = (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()
needs_mnist = pytest.mark.skipif(not HAS_MNIST, reason=f"full MNIST not found under {SHARED_DATA}/MNIST/raw")


def compose_cfg(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose a real config from conf/ as the app would, with the output dir pointed at output_dir."""
    cfg = compose_task(config_name, [f"paths.output_dir={output_dir}", *overrides])
    if "trainer" in cfg:
        with open_dict(cfg):
            cfg.trainer.enable_progress_bar = False
    return cfg


# -- tiny datasets in the real on-disk formats ------------------------------------------------------
def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file as MNIST / Fashion-MNIST ship them (uint8 data, big-endian dims)."""
    magic = 0x08 << 8 | array.ndim  # 0x08: unsigned byte data
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def make_mnist_like(root: Path, folder: str, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        # class-dependent blobs so that something is learnable
        images = rng.integers(0, 60, size=(n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 + 2 * c: 8 + 2 * c, 4:24] += 180
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def make_cifar10(root: Path, n_per_batch: int = 100, n_test: int = 100, seed: int = 0) -> Path:
    """CIFAR-10's python batches (pickled dicts of uint8 rows), as the official archive unpacks."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)

    def batch(n):
        labels = list(rng.integers(0, 10, size=n))
        data = rng.integers(0, 256, size=(n, 3 * 32 * 32)).astype(np.uint8)
        return {"data": data, "labels": labels}

    for i in range(1, 6):
        with open(base / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(n_per_batch), f)
    with open(base / "test_batch", "wb") as f:
        pickle.dump(batch(n_test), f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"]}, f)
    return root


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory) -> Path:
    """A data directory with small Fashion-MNIST, MNIST and CIFAR-10 files of the real formats."""
    root = tmp_path_factory.mktemp("data")
    make_mnist_like(root, "FashionMNIST", seed=1)
    make_mnist_like(root, "MNIST", seed=2)
    make_cifar10(root)
    return root


# -- a small finished distillation run that analysis tests can read --------------------------------
DIGITS_RUN_OVERRIDES = ["dataset=digits", "arch=mlp", "distill.steps=60", "distill.val_every=30",
                        "distill.val_inits=4", "distill.eval_inits=8", "direct.epochs=5",
                        "baseline.tune_inits=2", "baseline.lr_grid=[0.1,1.0]", "logger=none",
                        "checkpoint_every=30", "snapshot_every=30"]


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    """Output directory of a short real distillation on digits (mlp): distilled.* and direct_minimum.*"""
    from distillscape.tasks.distill import distill

    out = tmp_path_factory.mktemp("digits_run")
    distill(compose_cfg("distill", DIGITS_RUN_OVERRIDES, out))
    return out


# -- a real single-node SLURM cluster on localhost (tests/slurm/cluster.sh) ----------------------------
SLURM_CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> dict:
    """Start a cluster for the test module (a fresh slurmctld each module); stop exactly its daemons
    afterwards. Yields the environment clients need (SLURM_CONF; DISTILLSCAPE_SLURM_DIR holds its logs)."""
    if os.geteuid() != 0:
        pytest.skip("SLURM cannot be set up here: tests/slurm/cluster.sh needs root to install and start "
                    "slurm-wlm and munge")
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "DISTILLSCAPE_SLURM_DIR": str(state)}
    start = subprocess.run(["bash", str(SLURM_CLUSTER), "start"], env=env, capture_output=True, text=True,
                           timeout=900)
    if start.returncode == 3:
        pytest.skip(start.stderr.strip().splitlines()[-1])
    assert start.returncode == 0, start.stderr[-3000:]
    pids = {p.stem: int(p.read_text()) for p in state.glob("*.pid")}
    assert {"slurmctld", "slurmd"} <= set(pids)
    try:
        yield {**env, "SLURM_CONF": str(state / "slurm.conf")}
    finally:
        stop = subprocess.run(["bash", str(SLURM_CLUSTER), "stop"], env=env, capture_output=True, text=True,
                              timeout=120)
        assert stop.returncode == 0, stop.stderr
        for name, pid in pids.items():
            assert not Path(f"/proc/{pid}").exists(), f"{name} ({pid}) still running after stop"


__all__ = ["compose_cfg", "needs_mnist", "SHARED_DATA", "REPO"]
