"""A distilled set made elsewhere (distill.method=import), read from the tensor files other projects publish.

Layouts read (`read_imported`):
- MTT (Cazenavette et al.'s code) and DC-BENCH's TM entries: a directory with images_best.pt (float
  [n, C, H, W]), labels_best.pt (class indices [n]) and optionally lr_best.pt (the learned rate, a scalar);
- DC-BENCH's DC / DSA / DM entries: one .pt file holding {"data": [(images, labels), ...]} (one pair per
  experiment; `index` picks one, the last by default as DC-BENCH reads them);
- a .safetensors file with tensors images, labels and optionally lr.
Labels are class indices [n] (hard) or [n, classes] (soft: used as the targets of the inner loss as they are).
Torch files are loaded with weights_only=True: tensors and plain containers only, never arbitrary objects.
Every check fails in one line naming the file and what is wrong, before anything is trained.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from .artifacts import read_tensors
from .errors import ArtifactError

MTT_FILES = ("images_best.pt", "labels_best.pt", "lr_best.pt")


@dataclass
class Imported:
    images: torch.Tensor           # [n, C, H, W] float
    labels: torch.Tensor           # [n] class indices or [n, classes] soft targets
    lr: float | None               # the rate the file gives, if any
    source: str                    # which layout it was read as


def _torch_load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ArtifactError(f"{path} holds Python objects beyond tensors and plain containers; distillscape loads "
                            f"torch files only with weights_only=True: save the tensors alone (torch.save(tensor))") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ArtifactError(f"{path} is not a readable torch file ({str(e).splitlines()[0][:120]})") from None


def _raw(path: Path, index: int) -> tuple[object, object, object, str]:
    if path.is_dir():
        images_file, labels_file, lr_file = (path / f for f in MTT_FILES)
        missing = [f.name for f in (images_file, labels_file) if not f.exists()]
        if missing:
            raise ArtifactError(f"distill.imported.path={path} is a directory without {' and '.join(missing)}: give "
                                f"MTT's layout (images_best.pt, labels_best.pt, optionally lr_best.pt), a DC-BENCH "
                                f".pt file or a .safetensors file")
        lr = _torch_load(lr_file) if lr_file.exists() else None
        return _torch_load(images_file), _torch_load(labels_file), lr, "mtt"
    if not path.exists():
        raise ArtifactError(f"distill.imported.path={path} does not exist")
    if path.suffix == ".safetensors":
        t = read_tensors(path)
        missing = [k for k in ("images", "labels") if k not in t]
        if missing:
            raise ArtifactError(f"{path} lacks the tensor(s) {', '.join(missing)} (it holds {', '.join(sorted(t)) or 'none'})")
        return t["images"], t["labels"], t.get("lr"), "safetensors"
    obj = _torch_load(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), (list, tuple)) or not obj["data"]:
        raise ArtifactError(f"{path} is not DC-BENCH's layout: it should hold a dict whose 'data' is a non-empty list "
                            f"of (images, labels) pairs (got {type(obj).__name__}"
                            + (f" with keys {sorted(map(str, obj))}" if isinstance(obj, dict) else "") + ")")
    data = obj["data"]
    if not -len(data) <= index < len(data):
        raise ArtifactError(f"distill.imported.index={index}, but {path} holds {len(data)} (images, labels) pair(s)")
    pair = data[index]
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise ArtifactError(f"{path}: data[{index}] should be an (images, labels) pair, got {type(pair).__name__}")
    return pair[0], pair[1], None, "dc_bench"


def read_imported(path, num_classes: int, image_shape: tuple[int, ...], index: int = -1) -> Imported:
    """The images, labels and rate of a distilled set in one of the layouts above, checked against the
    dataset it is evaluated on (image shape, class count)."""
    path = Path(path)
    images, labels, lr, source = _raw(path, index)
    where = f"{path} ({source} layout)"
    if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.dim() != 4:
        raise ArtifactError(f"{where}: images must be a float tensor [n, C, H, W], got "
                            f"{_describe(images)}")
    if tuple(images.shape[1:]) != tuple(image_shape):
        raise ArtifactError(f"{where}: images are {list(images.shape[1:])}, the dataset's {list(image_shape)}: "
                            f"import a set distilled from this dataset (or choose its dataset=)")
    n = images.shape[0]
    if not isinstance(labels, torch.Tensor) or labels.shape[:1] != (n,) or labels.dim() not in (1, 2):
        raise ArtifactError(f"{where}: labels must be [n] class indices or [n, classes] soft labels for the {n} "
                            f"images, got {_describe(labels)}")
    if labels.dim() == 1:
        if labels.is_floating_point() and not torch.equal(labels, labels.round()):
            raise ArtifactError(f"{where}: 1-D labels must be whole class indices, got fractional values")
        labels = labels.long()
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ArtifactError(f"{where}: labels range over [{labels.min().item()}, {labels.max().item()}], the "
                                f"dataset has classes 0..{num_classes - 1}")
    elif labels.shape[1] != num_classes or not labels.is_floating_point():
        raise ArtifactError(f"{where}: soft labels must be float [n, {num_classes}], got {_describe(labels)}")
    for name, t in (("images", images), ("labels", labels)):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ArtifactError(f"{where}: {name} hold NaN or inf")
    if lr is not None:
        if not isinstance(lr, torch.Tensor) or lr.numel() != 1 or not torch.isfinite(lr).all() or lr.item() <= 0:
            raise ArtifactError(f"{where}: the learning rate must be one positive number, got {_describe(lr)}")
        lr = float(lr.item())
    return Imported(images.float(), labels, lr, source)


def _describe(t) -> str:
    if isinstance(t, torch.Tensor):
        return f"a {t.dtype} tensor of shape {list(t.shape)}" + (f" ({t.item():g})" if t.numel() == 1 else "")
    return type(t).__name__
