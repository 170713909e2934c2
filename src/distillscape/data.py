"""One LightningDataModule for every dataset: whole splits in memory as normalized tensors.

Each dataset is read once into a uint8/float tensor, normalized per channel with statistics of its
training split, and served by index batches (no per-item PIL transform in the hot path). A
validation split is held out of train with a fixed seed, so every task (distill, direct training,
landscapes) sees the same train/val/test partition.
"""
from __future__ import annotations

import functools
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler, TensorDataset

from .config import DATASETS
from .errors import ConfigError, DatasetCorruptError, DatasetNotFoundError


# Where each torchvision dataset expects its files under the data directory, for error messages.
_LAYOUT = {
    "mnist": ("MNIST/raw", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                            "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    "fashion_mnist": ("FashionMNIST/raw", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]),
}


# (images in train + test, channels, height, width, classes) of each dataset, known without reading it: a run's
# memory is estimated from these before anything is loaded
SHAPES = {"digits": (1797, 1, 8, 8, 10), "mnist": (70000, 1, 28, 28, 10), "fashion_mnist": (70000, 1, 28, 28, 10),
          "cifar10": (60000, 3, 32, 32, 10)}


def default_data_dir() -> str:
    return os.environ.get("DISTILLSCAPE_DATA") or "./data"


@dataclass
class Splits:
    """Raw splits before normalization: images [N, C, H, W] float in [0, 1], labels int64."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]


def _missing(name: str, root: Path, download: bool, cause: Exception | None = None) -> DatasetNotFoundError:
    sub, files = _LAYOUT[name]
    how = ("the download failed" + (f" ({type(cause).__name__}: {cause})" if cause else "")
           if download else "download=false")
    return DatasetNotFoundError(
        f"{name} not found: expected {', '.join(files)} in {root / sub} ({how}). "
        f"Put the files there, point the data directory elsewhere with paths.data_dir=/path or the "
        f"DISTILLSCAPE_DATA environment variable, or let torchvision fetch them with dataset.download=true "
        f"on a machine with internet access."
    )


def _load_digits(seed: int = 0, test_fraction: float = 0.2) -> Splits:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    # scikit-learn ships no test split: a fixed permutation gives one that never changes.
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(y) * test_fraction))
    te, tr = perm[:n_test], perm[n_test:]
    return Splits(x[tr], y[tr], x[te], y[te], [str(i) for i in range(10)])


def check_idx(path: Path) -> None:
    """An IDX file (MNIST's format) whose size is what its header says: magic 0x0000 08 ndim, then ndim
    big-endian sizes, then that many unsigned bytes. Truncated or foreign files are named with both sizes."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
        ndim = head[3] if len(head) == 4 and head[:3] == b"\x00\x00\x08" else None
        dims = f.read(4 * ndim) if ndim else b""
    if ndim is None or len(dims) != 4 * ndim:
        raise DatasetCorruptError(f"{path} is corrupt: not an IDX file of unsigned bytes (header {head.hex() or 'empty'}, "
                                  f"{size} bytes); replace it with the official file")
    shape = [int.from_bytes(dims[4 * i:4 * i + 4], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + math.prod(shape)
    if size != expected:
        raise DatasetCorruptError(f"{path} is corrupt: {size} bytes, but its header ({'x'.join(map(str, shape))}) "
                                  f"needs {expected}; it is {'truncated' if size < expected else 'too long'}: replace it "
                                  f"with the official file")


def _load_mnist_like(name: str, root: Path, download: bool) -> Splits:
    import torchvision

    sub, files = _LAYOUT[name]
    present = [root / sub / f for f in files if (root / sub / f).is_file()]
    for path in present:  # torchvision reports a truncated file as missing, or fails on a reshape
        check_idx(path)

    cls = {"mnist": torchvision.datasets.MNIST, "fashion_mnist": torchvision.datasets.FashionMNIST}[name]
    try:
        tr, te = cls(str(root), train=True, download=download), cls(str(root), train=False, download=download)
    except RuntimeError as e:  # torchvision: "Dataset not found. You can use download=True ..."
        raise _missing(name, root, download, e if download else None) from e
    except OSError as e:  # download=True without network
        raise _missing(name, root, download, e) from e
    except (AssertionError, ValueError) as e:  # torchvision's IDX reader asserts on bad headers
        sub = _LAYOUT[name][0]
        raise DatasetCorruptError(f"{name} files in {root / sub} are corrupt or not in IDX format "
                                  f"({type(e).__name__}); replace them with the official files") from e
    return Splits(tr.data.unsqueeze(1).float() / 255, tr.targets.long(),
                  te.data.unsqueeze(1).float() / 255, te.targets.long(), list(tr.classes))


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    # CIFAR-10's official python format is a pickle of {b"data": uint8[N, 3072], b"labels": [...]};
    # it is read here exactly as torchvision reads it, without its md5 check so that
    # re-packed or generated files of the same format load too.
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    labels = np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)
    return data, labels


def _load_cifar10(root: Path, download: bool) -> Splits:
    base = root / _LAYOUT["cifar10"][0]
    if not all((base / f).exists() for f in _LAYOUT["cifar10"][1]):
        if not download:
            raise _missing("cifar10", root, download)
        import torchvision

        try:
            torchvision.datasets.CIFAR10(str(root), train=True, download=True)
        except (OSError, RuntimeError) as e:
            raise _missing("cifar10", root, download, e) from e
    parts = [_read_cifar_batch(base / f"data_batch_{i}") for i in range(1, 6)]
    test = _read_cifar_batch(base / "test_batch")
    classes = [str(i) for i in range(10)]
    meta = base / "batches.meta"
    if meta.exists():
        with open(meta, "rb") as f:
            classes = list(pickle.load(f, encoding="latin1")["label_names"])
    tx = torch.from_numpy(np.concatenate([p[0] for p in parts])).float() / 255
    ty = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return Splits(tx, ty, torch.from_numpy(test[0]).float() / 255, torch.from_numpy(test[1]), classes)


def load_splits(name: str, root: str | os.PathLike | None = None, download: bool = False) -> Splits:
    """The raw splits of a dataset, read once per process (every task and test reuses them)."""
    root = None if name == "digits" else str(Path(root if root is not None else default_data_dir()).expanduser())
    return _load_splits_cached(name, root, download)


@functools.lru_cache(maxsize=4)
def _load_splits_cached(name: str, root: str | None, download: bool) -> Splits:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    if name == "digits":
        return _load_digits()
    root = Path(root if root is not None else default_data_dir()).expanduser()
    if name == "cifar10":
        return _load_cifar10(root, download)
    return _load_mnist_like(name, root, download)


def to_pixels(images: torch.Tensor, mean, std) -> torch.Tensor:
    """Undo the dataset normalization and clip to [0, 1]: what the images look like as pictures."""
    mean = torch.as_tensor(mean).view(1, -1, 1, 1)
    std = torch.as_tensor(std).view(1, -1, 1, 1)
    return (images * std + mean).clamp(0, 1)


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


class TensorDataModule(L.LightningDataModule):
    """Whole-split, in-memory, normalized tensors for train / val / test.

    `train_subset` keeps a fixed random subset of the training split (for the cost-surface study of
    subsets of growing size); `val_size` images are held out of train for validation.
    """

    def __init__(self, name: str = "digits", root: str | None = None, download: bool = False,
                 val_size: int = 200, batch_size: int = 256, eval_batch_size: int = 1000,
                 train_subset: int | None = None, split_seed: int = 0, num_workers: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.name, self.root, self.download = name, root, download
        self.val_size, self.batch_size, self.eval_batch_size = val_size, batch_size, eval_batch_size
        self.train_subset, self.split_seed = train_subset, split_seed
        self._ready = False

    # -- loading -------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        s = load_splits(self.name, self.root, self.download)
        g = torch.Generator().manual_seed(self.split_seed)
        perm = torch.randperm(len(s.train_y), generator=g)
        if self.val_size >= len(perm):
            raise ConfigError(f"dataset.val_size={self.val_size} leaves no training data: {self.name} has {len(perm)} "
                              f"training images, of which val_size are held out for validation; choose "
                              f"dataset.val_size below {len(perm)} (default 200)")
        val_idx, train_idx = perm[: self.val_size], perm[self.val_size:]
        if self.train_subset is not None:
            train_idx = train_idx[: self.train_subset]
        train_x = s.train_x[train_idx]
        # per-channel statistics of the training split define the normalization everywhere
        self.mean = train_x.mean(dim=(0, 2, 3))
        self.std = train_x.std(dim=(0, 2, 3)).clamp_min(1e-6)
        self.train_x, self.train_y = self.normalize(train_x), s.train_y[train_idx]
        self.val_x, self.val_y = self.normalize(s.train_x[val_idx]), s.train_y[val_idx]
        self.test_x, self.test_y = self.normalize(s.test_x), s.test_y
        self.classes = s.classes
        self._ready = True

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std.view(1, -1, 1, 1) + self.mean.view(1, -1, 1, 1)

    # -- facts other parts need ------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    def normalization(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    def check_per_class(self, per_class: int, why: str, otherwise: str) -> None:
        """Refuse, before any work, a split that cannot give `per_class` training images of every class (a
        small dataset.train_subset): what `class_balanced_sample` needs, said as what to change."""
        counts = torch.bincount(self.train_y, minlength=self.num_classes)
        fewest = int(counts.argmin())
        if int(counts[fewest]) < per_class:
            where = (f"dataset.train_subset={self.train_subset} keeps {len(self.train_y)} training images"
                     if self.train_subset is not None else f"{self.name} has {len(self.train_y)} training images")
            raise ConfigError(f"{where}, {int(counts[fewest])} of class {self.classes[fewest]}; {why} needs "
                              f"{per_class} of every class: raise dataset.train_subset (null: all) {otherwise}")

    def class_balanced_sample(self, per_class: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """`per_class` random training images of each class, class-sorted (as a distilled batch is)."""
        idx = []
        for c in range(self.num_classes):
            pool = (self.train_y == c).nonzero().flatten()
            if len(pool) < per_class:
                raise ValueError(f"class {c} has only {len(pool)} training images, {per_class} requested")
            idx.append(pool[torch.randperm(len(pool), generator=generator)[:per_class]])
        idx = torch.cat(idx)
        return self.train_x[idx], self.train_y[idx]

    # -- loaders: index batches over preloaded tensors (the train order is StepIndexedBatches) --
    def _eval_loader(self, x, y, batch_size):
        ds = TensorDataset(x, y)  # TensorDataset indexes with a whole list of indices at once
        return DataLoader(ds, sampler=BatchSampler(SequentialSampler(ds), min(batch_size, len(ds)), drop_last=False),
                          batch_size=None, num_workers=self.hparams.num_workers, generator=torch.Generator())

    def train_dataloader(self):
        # batch k of a run depends only on (seed, k), so a run resumed mid-epoch reads what it would have
        ds = TensorDataset(self.train_x, self.train_y)
        batches = StepIndexedBatches(len(ds), min(self.batch_size, len(ds)), start=self._global_step)
        return DataLoader(ds, sampler=batches, batch_size=None, num_workers=self.hparams.num_workers,
                          generator=torch.Generator())  # own generator: iter() leaves the global RNG alone

    def _global_step(self) -> int:
        return self.trainer.global_step if self.trainer is not None else 0

    def val_dataloader(self):
        return self._eval_loader(self.val_x, self.val_y, self.eval_batch_size)

    def test_dataloader(self):
        return self._eval_loader(self.test_x, self.test_y, self.eval_batch_size)
