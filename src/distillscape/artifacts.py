"""Artifacts on disk: safetensors for tensors, JSON for everything else, never pickle.

Every write goes to a temporary file in the same directory and is renamed into place, so a crash
leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import ArtifactError

FORMAT_VERSION = 1


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, writer) -> Path:
    """Call writer(tmp_path) and move the result to `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer(tmp)
        # mkstemp makes the file owner-only (0600); the result should carry the permissions any file
        # written here gets, so that others (a team's shared directory, the host user reading what a
        # container wrote) can read it
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.filename in (None, tmp) and e.errno is not None:  # a write into the file: name the file, not its temporary
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


_TEMPORARY = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")  # what atomic_write's mkstemp names


def remove_temporaries(root: Path, recursive: bool = True) -> list[Path]:
    """Delete the temporary files atomic_write left under `root` (in it only, recursive=False) when its process
    was killed (kill -9, an out-of-memory kill) in the middle of a write: half-written, never renamed into
    place. Only where this process alone writes now (resume.claim, resume.holding)."""
    found = Path(root).rglob("*.tmp") if recursive else Path(root).glob("*.tmp")
    gone = [p for p in found if _TEMPORARY.fullmatch(p.name) and p.is_file()]
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def write_json(path, data: dict) -> Path:
    def w(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False, default=str)
            f.write("\n")
    return atomic_write(path, w)


def _alone(t: torch.Tensor) -> torch.Tensor:
    """t as a tensor that owns its whole storage. safetensors refuses two tensors sharing memory, and a view
    can pass `.contiguous()` unchanged: a column of a [1, T] stack, one landing's statistic (analysis.inits=1)."""
    t = t.detach().cpu()
    if t.is_contiguous() and t.storage_offset() == 0 and t.untyped_storage().nbytes() == t.numel() * t.element_size():
        return t
    return t.clone(memory_format=torch.contiguous_format)


def write_tensors(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    tensors = {k: _alone(v) for k, v in tensors.items()}

    def save(tmp):
        try:
            save_file(tensors, tmp, metadata=metadata)
        except SafetensorError as e:  # safetensors reports a full disk as its own error: make it the OSError it is
            if (m := re.search(r"os error (\d+)", str(e))) is None:
                raise
            raise OSError(int(m.group(1)), os.strerror(int(m.group(1))), str(path)) from None
        if metadata and len(metadata) > 1:
            _sort_metadata(tmp)
    return atomic_write(path, save)


def _sort_metadata(path) -> None:
    """Put the metadata of a safetensors file in key order, in place. safetensors writes it from a Rust
    HashMap, whose order is drawn anew in every process: the same tensors and metadata gave other bytes on
    every run. The header keeps its length (the same keys and values, only reordered; padded with the
    spaces the format allows)."""
    with open(path, "r+b") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
        meta = header.pop("__metadata__", None)
        if meta is None:
            return
        ordered = json.dumps({"__metadata__": dict(sorted(meta.items())), **header}, separators=(",", ":"),
                             ensure_ascii=False).encode()
        if len(ordered) > size:  # another escaping than the writer's: leave the file as written
            return
        f.seek(8)
        f.write(ordered.ljust(size, b" "))


def check_finite(path, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Refuse weights or a synthetic batch holding NaN or inf, naming the file and the tensor: such a
    model computes only NaN, and a sweep over it would run to the end before failing somewhere else."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ArtifactError(f"{path}: tensor {name!r} holds {bad} non-finite value(s) (NaN or inf) of "
                                f"{t.numel()}; the run that wrote it diverged: rerun it (e.g. with a smaller "
                                f"learning rate) instead of analysing it")
    return tensors


def read_tensors(path, finite: bool = True) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; with `finite` (weights, distilled batches) NaN/inf are refused.
    Results that may hold them by design (a landing's diverged loss) pass finite=False."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path} does not exist")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"{path} is not a readable safetensors file ({e}); it is corrupt or truncated: "
                            f"re-create it by rerunning the job that wrote it") from None
    return check_finite(path, tensors) if finite else tensors


def read_checkpoint(path) -> dict[str, Any]:
    """A Lightning checkpoint, loaded with `weights_only=True` (tensors and plain data only: unpickling
    arbitrary objects would run their code) and its `state_dict` checked for NaN/inf."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message advises weights_only=False, which would run whatever the file holds: never
        raise ArtifactError(f"checkpoint {path} was refused: it holds Python objects beyond tensors and plain "
                            f"data, and distillscape loads checkpoints only with weights_only=True. Use a "
                            f"checkpoint distillscape wrote (checkpoints/last.ckpt of a distill run)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ArtifactError(f"checkpoint {path} is corrupt or truncated ({str(e).splitlines()[0][:120]}); resume "
                            f"from an earlier one (checkpoint=<path>) or restart the run") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ArtifactError(f"checkpoint {path} is not a Lightning checkpoint (no state_dict)")
    check_finite(path, {k: v for k, v in ckpt["state_dict"].items() if isinstance(v, torch.Tensor)})
    return ckpt


def read_json(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path} is not valid JSON ({e}); it is corrupt or truncated: "
                            f"re-create it by rerunning the job that wrote it") from None


@dataclass
class Distilled:
    """A distilled dataset: what one-step training needs, plus where it came from."""
    images: torch.Tensor          # [n, C, H, W], normalized space
    labels: torch.Tensor          # [n, classes], the targets of the inner loss
    lrs: torch.Tensor             # [inner_steps, 1 or n_param_tensors], positive
    meta: dict[str, Any] = field(default_factory=dict)
    fixed_init: dict[str, torch.Tensor] | None = None

    @property
    def metrics(self) -> dict[str, float]:
        return self.meta.get("metrics", {})


def save_distilled(out_dir, d: Distilled, stem: str = "distilled") -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    tensors = {"images": d.images, "labels": d.labels, "lrs": d.lrs}
    for k, v in (d.fixed_init or {}).items():
        tensors[f"fixed_init.{k}"] = v
    st = write_tensors(out_dir / f"{stem}.safetensors", tensors)
    js = write_json(out_dir / f"{stem}.json", {"format_version": FORMAT_VERSION, **d.meta})
    return st, js


_REQUIRED_META = ("dataset", "num_classes", "image_shape", "normalization", "arch", "inner")


def load_distilled(path) -> Distilled:
    """Load a distilled dataset from its directory or from either of its two files."""
    path = Path(path)
    if path.is_dir():
        path = path / "distilled.safetensors"
    st = path.with_suffix(".safetensors")
    js = path.with_suffix(".json")
    tensors = read_tensors(st)
    meta = read_json(js)
    missing = [k for k in ("images", "labels", "lrs") if k not in tensors]
    missing += [k for k in _REQUIRED_META if k not in meta]
    if missing:
        raise ArtifactError(f"{st.parent} holds an incomplete distilled artifact (missing {', '.join(missing)}); "
                            f"rerun distillscape-distill to re-create it")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{js} has format_version {meta.get('format_version')}, this distillscape reads "
                            f"{FORMAT_VERSION}")
    fixed = {k.removeprefix("fixed_init."): v for k, v in tensors.items() if k.startswith("fixed_init.")}
    meta.pop("format_version")
    return Distilled(tensors["images"], tensors["labels"], tensors["lrs"], meta, fixed or None)
