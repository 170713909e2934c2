"""The surface.npz file, its one owner: what a sweep writes (`landscape.merge_shards`) and what the report,
the landing task and the loggers read.

A surface holds `axis0` (and `axis1` for a plane) with the coordinates of each axis, one grid-shaped array per
metric named in `metrics` (e.g. `train/loss`, `test/acc`, `episode/return`), the sweep's `fingerprint`, how it
was computed (`batching`, `data_batch`) and what the task adds (centre and direction names, marked points, and
for a PPO-loss metric whose experience it is measured on: `experience`).
Its shards (shards/shard_IIII_of_NNNN.npz) are written and read with the same `write_npz` / `read_npz`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .artifacts import atomic_write
from .errors import ArtifactError

SURFACE_FILE = "surface.npz"  # in each centre's directory of a landscape job


def write_npz(path, arrays: dict[str, np.ndarray]) -> Path:
    """`arrays` as an .npz file, written atomically (a reader never sees half a file)."""
    def w(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a path
            np.savez(f, **arrays)
    return atomic_write(path, w)


def read_npz(path) -> dict[str, np.ndarray]:
    """Every array of an .npz file (a surface or a shard); an unreadable file is an ArtifactError saying what to do."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError) as e:
        raise ArtifactError(f"{path} is not a readable .npz ({e}); delete it and rerun the sweep to recompute it") from None


def read_surface(path) -> dict[str, np.ndarray]:
    """A surface.npz as name -> array."""
    return read_npz(path)


def metrics_of(surface: dict) -> list[str]:
    """The metrics a surface holds, in the order the sweep computed them ([] for a file without them)."""
    return [str(m) for m in surface.get("metrics", [])]


def axes_of(surface: dict, metric: str) -> list[np.ndarray]:
    """The coordinates of each axis of `metric`'s grid (one for a line, two for a plane)."""
    return [surface[f"axis{i}"] for i in range(surface[metric].ndim)]


def centre_index(axes: list[np.ndarray]) -> tuple[int, ...]:
    """The grid point nearest the origin of the plane: where the sweep's centre is."""
    return tuple(int(np.abs(a).argmin()) for a in axes)


def experience_arrays(said: dict[str, str]) -> dict[str, np.ndarray]:
    """The arrays that record whose experience each PPO-loss metric is on (metric -> words); none when empty."""
    return {"experience": np.array(json.dumps(said))} if said else {}


def experience_of(surface: dict) -> dict[str, str]:
    """metric -> whose experience it is measured on, as `experience_arrays` wrote it ({} for other surfaces)."""
    return json.loads(str(surface.get("experience", "{}")))
