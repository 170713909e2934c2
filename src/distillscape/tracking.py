"""Weights & Biases tracking: how a W&B run is set up for a job, and what else (images, tables,
artifacts) gets logged to it besides Lightning's metrics.

- Offline by default: a run goes online only when an API key is configured and WANDB_MODE does not say
  offline. Offline runs live in <output_dir>/wandb/offline-run-*; `wandb sync` uploads them later.
- Jobs of one Hydra multirun share a W&B group named after the sweep; each is tagged with its
  overrides. The run config is the resolved job config.
- Artifact files are staged (copied until uploaded) inside the run directory, under
  <save_dir>/wandb/data/artifacts/staging, not in ~/.local/share/wandb: a run directory archived or cleaned elsewhere
  keeps what `wandb sync` uploads. (The run file names them by absolute path: sync a copied run from the
  same path, e.g. on the shared file system, or copy it back there.) A WANDB_DATA_DIR set by the user wins.
- The API key is never written by us: the config we hand to W&B is scrubbed of it, and it is never a
  config value (wandb reads it from the environment or ~/.netrc itself).
Every helper takes whatever logger the job has and does nothing unless it is a WandbLogger, except
log_report and log_surface, which give other loggers the numbers. wandb itself is imported only
inside the helpers that use it.
"""
from __future__ import annotations

import math
import netrc
import os
import struct
import time
import zlib
from pathlib import Path
from typing import Any, Iterable

from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

MAX_TAG = 64  # W&B refuses longer tags


def api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def offline_mode(offline: bool | None) -> bool:
    """offline=None: offline unless an API key is configured and WANDB_MODE does not ask for offline."""
    if offline is not None:
        return bool(offline)
    return os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun") or not api_key_configured()


def server_unreachable(timeout_s: float = 5.0) -> str | None:
    """Why the W&B server (WANDB_BASE_URL, or the proxy HTTPS_PROXY names) cannot be reached, in a few words; None
    when a connection opens. wandb itself retries for minutes and then prints a long traceback."""
    import socket
    from urllib.parse import urlsplit

    base = urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") if base.scheme == "https" else None
    target = urlsplit(proxy if "://" in (proxy or "") else f"http://{proxy}") if proxy else base
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        socket.create_connection((target.hostname, port), timeout=timeout_s).close()
    except OSError as e:  # no route, no name server, refused, timed out
        what = "the proxy " if proxy else ""
        return f"{what}{target.hostname}:{port} cannot be reached ({getattr(e, 'strerror', None) or e})"
    return None


def _hydra():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def sweep_group() -> str | None:
    """The multirun's name, shared by all its jobs: '<task> <sweep dir's last two parts>'."""
    hc = _hydra()
    if hc is None or str(hc.mode) != "RunMode.MULTIRUN":
        return None
    return f"{hc.job.name} " + "/".join(Path(str(hc.sweep.dir)).parts[-2:])


def override_tags() -> list[str]:
    hc = _hydra()
    if hc is None:
        return []
    return [o[:MAX_TAG] for o in hc.overrides.task if not o.lstrip("+~").startswith(("hydra.", "paths."))]


def scrub(obj: Any, secrets: Iterable[str]) -> Any:
    """obj with every string that contains one of `secrets` replaced by '<redacted>'."""
    secrets = [s for s in secrets if s]
    if isinstance(obj, dict):
        return {k: scrub(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub(v, secrets) for v in obj]
    if isinstance(obj, str) and any(s in obj for s in secrets):
        return "<redacted>"
    return obj


class JobWandbLogger(WandbLogger):
    """A WandbLogger whose run config is the resolved job config, handed over once at the start.
    Lightning would also merge every LightningModule's and DataModule's `hparams` into it at the top
    level, at each fit / test (the datamodule's data settings twice over, beside the config that
    already holds them): that is left out.

    A second fit in the same run (a distillation's direct baseline, before the distillation) logs on its
    own step axis while `step_prefix` is set (`own_step_axis`): its metrics, `epoch` included, go under the
    prefix and are drawn against `<prefix>step` (wandb's define_metric), so `trainer/global_step` and
    `epoch` belong to the distillation alone and never restart or zig-zag."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Lightning always hands wandb.init `anonymous` (None by default), a setting wandb has deprecated:
        # "The anonymous setting has no effect" was printed by every run
        self._wandb_init.pop("anonymous", None)
        self.step_prefix: str | None = None
        self._on_own_axis: set[str] = set()

    def log_hyperparams(self, params, *args, **kwargs) -> None:  # noqa: D102
        return None

    def log_metrics(self, metrics, step=None) -> None:  # noqa: D102
        prefix = self.step_prefix
        if prefix is None:
            return super().log_metrics(metrics, step)
        row = {k if k.startswith(prefix) else prefix + k: v for k, v in metrics.items()}
        axis = f"{prefix}step"
        if step is not None:
            row[axis] = step
        run = self.experiment
        for key in row:
            # each name defined exactly (an exact definition wins over Lightning's "*" glob on
            # trainer/global_step), before its first value
            if key not in self._on_own_axis:
                if key == axis:
                    run.define_metric(key)
                else:
                    run.define_metric(key, step_metric=axis)
                self._on_own_axis.add(key)
        run.log(row)


class own_step_axis:
    """`with own_step_axis(logger, "direct/"):` a fit logged on its own step axis (JobWandbLogger); any
    other logger is left as it is."""

    def __init__(self, logger, prefix: str):
        self.logger, self.prefix = logger, prefix

    def __enter__(self):
        if isinstance(self.logger, JobWandbLogger):
            self.logger.step_prefix = self.prefix
        return self.logger

    def __exit__(self, *exc) -> None:
        if isinstance(self.logger, JobWandbLogger):
            self.logger.step_prefix = None


_STAGING_SET: str | None = None  # the WANDB_DATA_DIR this process set for its last run (not the user's)


def stage_artifacts_in(save_dir: str | os.PathLike) -> None:
    """Stage this job's artifact files under <save_dir>/wandb/data (wandb adds artifacts/staging), unless the
    user set WANDB_DATA_DIR.
    (wandb reads the variable whenever it stages a file; a later job of an in-process multirun moves it
    to its own directory.)"""
    global _STAGING_SET
    user = os.environ.get("WANDB_DATA_DIR")
    if user is not None and user != _STAGING_SET:
        return
    _STAGING_SET = str(Path(save_dir).absolute() / "wandb" / "data")
    os.environ["WANDB_DATA_DIR"] = _STAGING_SET


RL_KEYS = ("env", "rl")  # what only an RL task (env=...) reads


def task_config(config: dict) -> dict:
    """The job config as the run shows it: the blocks of the other kind of task left out. A dataset task's
    config holds the RL defaults (env: null, rl: {...}) and an RL task's the default dataset group, none of
    which it reads; on W&B they read as settings of the run and clutter its comparisons."""
    if "env" not in config and "rl" not in config:
        return config
    unused = ("dataset",) if config.get("env") is not None else RL_KEYS
    return {k: v for k, v in config.items() if k not in unused}


def wandb_logger(cfg: DictConfig) -> WandbLogger:
    kw = OmegaConf.to_container(cfg.logger, resolve=True)
    kw.pop("_target_")
    stage_artifacts_in(kw["save_dir"])
    offline = offline_mode(kw.pop("offline", None))
    group = kw.pop("group", None) or sweep_group()
    tags = list(dict.fromkeys([*(kw.pop("tags", None) or []), *override_tags()]))
    config = task_config(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))
    config = scrub(config, [os.environ.get("WANDB_API_KEY", "")])
    Path(kw["save_dir"]).mkdir(parents=True, exist_ok=True)
    return JobWandbLogger(offline=offline, group=group, tags=tags, config=config, **kw)


# -- logging beyond metrics --------------------------------------------------------------------------
def _run(logger):
    return logger.experiment if isinstance(logger, WandbLogger) else None


def log_images(logger, images: dict[str, str | os.PathLike], step: int | None = None) -> None:
    """Figures saved as files (distilled grid, landscape plots) as W&B images."""
    if (run := _run(logger)) is None:
        return
    import wandb

    run.log({k: wandb.Image(str(p)) for k, p in images.items()}, step=step)


def log_table(logger, key: str, columns: list[str], rows: list[list[Any]]) -> None:
    """A table (e.g. landing statistics per init) as a W&B table."""
    if (run := _run(logger)) is None:
        return
    import wandb

    run.log({key: wandb.Table(columns=columns, data=rows)})


def log_csv_table(logger, key: str, path: str | os.PathLike) -> None:
    """A CSV file we wrote (e.g. landing_stats.csv: one row per landing) as a W&B table."""
    if _run(logger) is None:
        return
    import csv

    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f))
    log_table(logger, key, header, [[_number(v) for v in r] for r in rows])


def _number(v: str):
    try:
        return float(v)
    except ValueError:
        return v


def log_artifact(logger, name: str, kind: str, files: Iterable[str | os.PathLike],
                 metadata: dict | None = None) -> None:
    """Files (safetensors + JSON, never pickle) as one versioned W&B artifact."""
    if (run := _run(logger)) is None:
        return
    import wandb

    art = wandb.Artifact(name, type=kind, metadata=metadata or {})
    for f in files:
        art.add_file(str(f))
    run.log_artifact(art)


SNAPSHOT_PX = 64  # each image of a snapshot is shown at least this many pixels across


def snapshot_grid(pixels):
    """The snapshot image: the batch ([N, C, H, W] in [0, 1]) as a grid of up to 10 a row, each image
    enlarged by an integer factor (nearest neighbour: pixels stay sharp squares) to at least SNAPSHOT_PX
    pixels; digits' 8x8 images made a 91x10-pixel grid that no one could read. [C, H', W'] in [0, 1]."""
    from torchvision.utils import make_grid

    scale = max(1, math.ceil(SNAPSHOT_PX / max(pixels.shape[-2:])))
    big = pixels.float().clamp(0, 1).repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    return make_grid(big, nrow=min(10, len(pixels)), padding=2, pad_value=1.0)


def log_snapshot(logger, pixels, step: int) -> None:
    """The distilled images at an outer step ([N, C, H, W] in [0, 1]) as one grid image under
    `distilled/snapshot`: W&B's media panel steps through them with its slider."""
    if _run(logger) is None:
        return
    grid = snapshot_grid(pixels)
    logger.log_image(key="distilled/snapshot", images=[grid.permute(1, 2, 0).numpy()], step=step,
                     caption=[f"outer step {step}"])


def log_distilled(logger, out: Path) -> None:
    """The distilled image grid and the distilled artifact of a finished distillation in `out`."""
    if _run(logger) is None:
        return
    from .artifacts import read_json

    log_images(logger, {"distilled/images": out / "distilled.png"})
    files = [out / f for f in ("distilled.safetensors", "distilled.json", "distilled.png", "metrics.json",
                               "direct_minimum.safetensors", "direct_minimum.json") if (out / f).exists()]
    log_artifact(logger, artifact_name(read_json(out / "distilled.json")), "distilled", files,
                 metadata=read_json(out / "metrics.json"))


def artifact_name(meta: dict, fallback: str = "distilled") -> str:
    """The W&B artifact of a distilled batch, named by what it is: `distilled-<dataset or env>-<arch>-
    <method>` (method: label mode, inner loss, inner steps). Runs of the same kind become versions of one
    artifact (W&B keeps each batch as a version, and one whose files did not change as the same version);
    a run id in the name made every run an artifact of its own. `meta`: the batch's distilled.json."""
    import re

    arch = str((meta.get("arch") or {}).get("_target_", "")).rsplit(".", 1)[-1]
    inner = meta.get("inner") or {}
    label_mode = ((meta.get("config") or {}).get("distill") or {}).get("label_mode")
    steps = inner.get("steps")
    parts = [meta.get("env") or meta.get("dataset"), arch, label_mode, inner.get("loss"),
             f"{steps}step" if steps is not None else None]
    name = "-".join(str(p) for p in ["distilled", *parts] if p).lower()
    name = re.sub(r"[^a-z0-9_.-]+", "_", name)  # W&B's artifact names: letters, digits, - _ .
    return name if name != "distilled" else fallback


DIRECT_TEST = {"direct/acc": "direct/test/acc", "direct/loss": "direct/test/loss"}  # metrics.json -> the curve's name


def log_direct_test(logger, metrics: dict[str, float]) -> None:
    """The test numbers of a direct baseline this run did not train (reused after a resume, or copied from
    direct.checkpoint), under the names and the step axis a trained one logs them with (`direct/test/*`);
    the job's own `direct/acc` is the same number and is not logged again."""
    if not isinstance(logger, JobWandbLogger):
        return
    with own_step_axis(logger, "direct/"):
        logger.log_metrics({DIRECT_TEST[k]: v for k, v in metrics.items() if k in DIRECT_TEST}, step=0)


REPORT_COLUMNS = ["run", "file", "metric", "mean", "std", "n"]
DISTILLED_FILES = ("distilled.safetensors", "distilled.json", "distilled.png")


def figure_keys(runs: list, made=None) -> dict[str, Path]:
    """A W&B key for every figure of the runs and of the report itself, none shared:
    `figures/<run>/<path in the run dir without suffix>` (two centres' `train_loss.png` stay apart) and
    `figures/report/<stem>` for what the report drew; a clash left (two runs of the same name) gets
    `#2`, `#3`."""
    keys: dict[str, Path] = {}

    def add(key: str, path: Path) -> None:
        k, i = key, 1
        while k in keys:
            i += 1
            k = f"{key}#{i}"
        keys[k] = Path(path)

    for r in runs:
        for p in r.figures:
            add(f"figures/{r.label}/{Path(p).relative_to(r.path).with_suffix('').as_posix()}", p)
    if made is not None:
        for p in [*made.surface_grids.values(), *made.sweep_figures.values()]:
            add(f"figures/report/{Path(p).stem}", p)
    return keys


def surface_tables(runs: list) -> dict[str, tuple[list[str], list[list[float]]]]:
    """Every 2-D cost surface of the runs as a table, a row per grid point (its two coordinates and
    every metric there), keyed `surfaces/<run>/<path of its directory>`."""
    from .surface import SURFACE_FILE, axes_of, metrics_of, read_surface

    out = {}
    for r in runs:
        for path in getattr(r, "surfaces", []):
            if Path(path).name != SURFACE_FILE:
                continue
            surface = read_surface(path)
            metrics = metrics_of(surface)
            if not metrics or surface[metrics[0]].ndim != 2:
                continue
            a, b = axes_of(surface, metrics[0])
            values = {m: surface[m] for m in metrics}
            grid = [[float(a[i]), float(b[j]), *(float(values[m][i, j]) for m in metrics)]
                    for i in range(len(a)) for j in range(len(b))]
            key = f"surfaces/{r.label}/{Path(path).parent.relative_to(r.path).as_posix()}"
            out[key] = (["axis0", "axis1", *metrics], grid)
    return out


def log_report(logger, runs: list, html_path: Path, rows: list[list[Any]], made=None) -> None:
    """A study report for a logger. W&B: every figure of the runs and of the report under its own key
    (`figure_keys`), every cost surface as a table (`surface_tables`), one table of `rows` (run, file,
    metric, mean, std, n), the page itself, and each
    distilled batch as an artifact (`artifact_name`); any other logger: the numbers
    (`<run>/<file>/<metric>` means). `runs` are the report's read runs (anything with .path, .label,
    .figures, .results); `made` what the report drew (report.Made) or None."""
    if (run := _run(logger)) is not None:
        import wandb

        log_images(logger, figure_keys(runs, made))
        run.log({"report": wandb.Html(Path(html_path).read_text())}, commit=False)  # same step as the table
        for key, (columns, grid) in surface_tables(runs).items():
            run.log({key: wandb.Table(columns=columns, data=grid)}, commit=False)
        log_table(logger, "metrics", REPORT_COLUMNS, rows)
        for r in runs:
            if (r.path / "distilled.safetensors").exists():
                meta = _read_meta(r.path / "distilled.json")
                log_artifact(logger, artifact_name(meta, f"distilled-{r.path.name}"), "distilled",
                             [r.path / f for f in DISTILLED_FILES if (r.path / f).exists()],
                             metadata=r.results.get("metrics.json", {}))
    else:
        logger.log_metrics({f"{r[0]}/{r[1].removesuffix('.json')}/{r[2]}": r[3] for r in rows})
    logger.save()


def _read_meta(path: Path) -> dict:
    """A distilled.json, or {} where it cannot be read (the artifact is then named by its directory)."""
    import json

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def log_surface(logger, name: str, figures: dict[str, Path], summary: dict[str, float]) -> None:
    """A cost surface: its scalars to any logger; its figures to loggers that take images (W&B,
    TensorBoard)."""
    if not logger:
        return
    logger.log_metrics({f"{name}/{k}": v for k, v in summary.items()}, step=0)
    try:
        from lightning.pytorch.loggers import TensorBoardLogger
        import matplotlib.image as mpimg

        for metric, path in figures.items():
            if isinstance(logger, WandbLogger):
                logger.log_image(key=f"{name}/{metric}", images=[str(path)])
            elif isinstance(logger, TensorBoardLogger):
                img = mpimg.imread(path)[..., :3]
                logger.experiment.add_image(f"{name}/{metric}", img, 0, dataformats="HWC")
    finally:
        logger.save()


def finish_run(logger) -> None:
    """Close the W&B run (the next job of an in-process multirun starts its own)."""
    if (run := _run(logger)) is not None:
        run.finish()


# -- reading an offline run back ------------------------------------------------------------------------
def read_run_records(run_dir: str | os.PathLike, wait_s: float = 0.0) -> list:
    """Every record of an offline run's .wandb file, as wandb's own protobuf `Record`s.

    The file is W&B's transaction log: a 7-byte header (':W&B', magic, version), then 32 KiB blocks of
    chunks, each with a 7-byte header (crc32 of type and data, length, type: 1 full, 2 first, 3 middle,
    4 last). wandb's service process writes it after `finish()` returns, so a chunk that runs past the end
    of the file or fails its checksum is a record still being written: the read stops there. With `wait_s`,
    read again until the run's closing `exit` record is in the file or `wait_s` seconds have passed."""
    deadline = time.monotonic() + wait_s
    while True:
        records = _records_written_so_far(next(Path(run_dir).glob("run-*.wandb")))
        if (records and records[-1].WhichOneof("record_type") == "exit") or time.monotonic() >= deadline:
            return records
        time.sleep(0.2)


def _records_written_so_far(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    block, pos, chunk, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and n == 0:
            break
        payload = data[pos + 7:pos + 7 + n]
        if len(payload) < n or zlib.crc32(bytes([kind]) + payload) != crc:
            break  # the writer has not finished this chunk yet
        chunk += payload
        pos += 7 + n
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(chunk)
            records.append(rec)
            chunk = b""
    return records
