"""logger=wandb: an offline run of the real distillation whose run file holds the resolved config, the
metrics, the distilled image grid and the distilled artifact; offline unless a key is configured; the
API key is never written anywhere."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import compose_cfg
from distillscape.tracking import offline_mode, read_run_records, scrub

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 characters, like a real W&B key
TINY = ["dataset=digits", "arch=mlp", "distill.steps=20", "distill.val_every=10", "distill.val_inits=2",
        "distill.eval_inits=4", "direct.epochs=1", "baseline.tune_inits=2", "baseline.lr_grid=[0.1]",
        "checkpoint_every=10", "snapshot_every=10", "logger=wandb"]


@pytest.fixture
def no_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    return tmp_path


def test_offline_unless_a_key_is_configured(no_key, monkeypatch):
    assert offline_mode(None) is True
    (no_key / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + FAKE_KEY + "\n")
    (no_key / ".netrc").chmod(0o600)
    assert offline_mode(None) is False  # `wandb login` wrote a key: online
    (no_key / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert offline_mode(None) is False
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert offline_mode(None) is True
    assert offline_mode(True) is True and offline_mode(False) is False  # logger.offline=... forces it


def test_scrub_replaces_secrets_anywhere():
    cfg = {"a": {"b": [f"x{FAKE_KEY}y", 3]}, "c": "fine"}
    assert scrub(cfg, [FAKE_KEY]) == {"a": {"b": ["<redacted>", 3]}, "c": "fine"}


def _records(run_dir, timeout: float = 120.0) -> dict[str, list]:
    """The run file's records by kind, once the file is whole: wandb's service process may still be
    writing it when `run.finish()` returns here (seen in CI, on loaded cores), so wait for its `exit`."""
    records = read_run_records(run_dir, wait_s=timeout)
    out: dict[str, list] = {}
    for r in records:
        kind = r.WhichOneof("record_type")
        out.setdefault(kind, []).append(getattr(r, kind))
    assert "exit" in out, f"{run_dir}: no exit record after {timeout:.0f} s ({len(records)} records)"
    return out


def test_offline_run_holds_config_metrics_images_artifact_never_the_key(tmp_path, monkeypatch):
    from distillscape import tracking
    from distillscape.tasks.distill import distill

    # wandb's default staging dir (~/.local/share/wandb) is not used; the run's own directory is
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setattr(tracking, "_STAGING_SET", str(tmp_path / "elsewhere"))  # as if a previous job set it
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)  # configured, but WANDB_MODE says offline
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    metrics = distill(compose_cfg("distill", TINY, out))

    run_dir = next((out / "wandb").glob("offline-run-*"))
    rec = _records(run_dir)
    run = rec["run"][0]
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    # the run config is the resolved job config
    assert config["distill"]["steps"] == 20 and config["arch"]["_target_"] == "distillscape.models.MLP"
    assert config["paths"]["output_dir"] == str(out)
    # ... once: exactly the job config's keys, no datamodule/module hparams merged in at the top level,
    # and no later config updates (Lightning's log_hyperparams at fit and test)
    from distillscape.job import Job

    job_keys = set(Job.of(compose_cfg("distill", TINY, out)).resolved())
    # an image task's config without the RL task's blocks (env: null, rl: {...}), which it never reads
    assert {"env", "rl"} <= job_keys and not {"env", "rl"} & set(config)
    assert set(config) - {"_wandb"} == job_keys - {"env", "rl"}, set(config) ^ job_keys
    later = [u.key for c in rec.get("config", []) for u in c.update if u.key != "_wandb"]
    assert later == [], later
    history = [{"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in h.item} for h in rec["history"]]
    losses = [h["train/outer_loss"] for h in history if "train/outer_loss" in h]
    assert losses and all(v > 0 for v in losses)
    assert any("val/onestep_acc_mean" in h for h in history)
    # the direct baseline's training curves, in the same run, apart from the distillation's
    direct_losses = [h["direct/train/loss"] for h in history if "direct/train/loss" in h]
    assert direct_losses and all(v > 0 for v in direct_losses)
    assert any("direct/val/acc" in h for h in history)
    assert not any("train/loss" in h for h in history)  # no direct curve under the distillation's names
    # ... on its own step axis: the distillation's trainer/global_step and epoch never restart or go back
    direct_rows = [h for h in history if any(k.startswith("direct/") for k in h)]
    assert all("direct/step" in h and "trainer/global_step" not in h and "epoch" not in h for h in direct_rows)
    assert any("direct/epoch" in h for h in direct_rows)
    for key in ("epoch", "direct/step"):
        values = [h[key] for h in history if key in h]
        assert values and values == sorted(values), (key, values)
    for axis, names in (("trainer/global_step", ("train/outer_loss", "val/onestep_acc_mean")),
                        ("direct/step", ("direct/train/loss", "direct/val/acc"))):
        for name in names:  # each curve runs forward along its axis
            xs = [h[axis] for h in history if name in h]
            assert xs and xs == sorted(xs), (name, axis, xs)
    defined = {m.name: m.step_metric for m in rec["metric"] if m.name}
    assert all(defined.get(k) == "direct/step" for h in direct_rows for k in h if k.startswith("direct/")
               and k != "direct/step" and not k.startswith("direct/step")), defined
    summary = {}
    for s in rec["summary"]:
        for u in s.update:
            summary["/".join(u.nested_key) or u.key] = u.value_json
    assert json.loads(summary["test/onestep_acc_mean"]) == pytest.approx(metrics["test/onestep_acc_mean"])
    # the baseline's test accuracy once, as direct/test/acc (direct/acc of metrics.json is the same number)
    assert json.loads(summary["direct/test/acc"]) == pytest.approx(metrics["direct/acc"])
    assert "direct/acc" not in summary and "direct/loss" not in summary
    # the distilled image grid, as an image file of the run
    images = list((run_dir / "files" / "media" / "images" / "distilled").glob("images_*.png"))
    assert images and images[0].stat().st_size > 1000
    assert json.loads(summary["distilled/images/_type"]) == "image-file"
    # the batch over the outer steps: a snapshot image at steps 0, 10, 20, each with the step it shows
    snaps = [(h["trainer/global_step"], h["distilled/snapshot/captions"]) for h in history
             if "distilled/snapshot/captions" in h]
    assert snaps == [(0, ["outer step 0"]), (10, ["outer step 10"]), (20, ["outer step 20"])], snaps
    snapshots = list((run_dir / "files" / "media" / "images" / "distilled").glob("snapshot_*.png"))
    assert len(snapshots) == 3
    from PIL import Image

    from distillscape.tracking import SNAPSHOT_PX

    width, height = Image.open(snapshots[0]).size  # 10 digits of 8x8 pixels: each enlarged to >= 64 across
    assert width >= 10 * SNAPSHOT_PX and height >= SNAPSHOT_PX, (width, height)
    # the distilled artifact: safetensors + JSON files, with their digests in the manifest
    art = next(a for a in rec["artifact"] if a.type == "distilled")
    # named by what it is (dataset, arch, method), so that the next run of its kind is a new version of it
    from distillscape.artifacts import read_json
    from distillscape.tracking import artifact_name

    assert art.name == artifact_name(read_json(out / "distilled.json")) and run.run_id not in art.name
    assert art.name.startswith("distilled-digits-mlp-"), art.name
    files = {c.path: c for c in art.manifest.contents}
    assert {"distilled.safetensors", "distilled.json", "metrics.json", "direct_minimum.safetensors"} <= set(files)
    assert all(c.digest for c in files.values())
    # ... staged inside the run directory, byte for byte the files the job wrote
    for name, c in files.items():
        staged = Path(c.local_path)
        assert staged.is_relative_to(out / "wandb" / "data"), staged
        assert staged.read_bytes() == (out / name).read_bytes(), name
    assert not (tmp_path / "elsewhere").exists()
    # the key is nowhere: not in the run file, its logs, or any output of the job
    leaked = [p for p in out.rglob("*") if p.is_file() and FAKE_KEY.encode() in p.read_bytes()]
    assert leaked == []


def test_landing_csv_becomes_a_wandb_table(tmp_path, monkeypatch, no_key):
    """What distillscape-landing logs: landing_stats.csv, one row per landing, as a W&B table."""
    from lightning.pytorch.loggers import WandbLogger

    from distillscape.tracking import finish_run, log_csv_table

    monkeypatch.setenv("WANDB_SILENT", "true")
    csv_path = tmp_path / "landing_stats.csv"
    csv_path.write_text("kind,landing_test_acc\ndistilled,0.75\nrandom_real,0.25\n")
    logger = WandbLogger(save_dir=str(tmp_path), offline=offline_mode(None), project="t")
    log_csv_table(logger, "landing/table", csv_path)
    finish_run(logger)
    run_dir = next((tmp_path / "wandb").glob("offline-run-*"))
    table = json.loads(next((run_dir / "files" / "media" / "table").rglob("*.table.json")).read_text())
    assert table["columns"] == ["kind", "landing_test_acc"]
    assert table["data"] == [["distilled", 0.75], ["random_real", 0.25]]


def test_every_report_figure_gets_its_own_key(tmp_path):
    """Two centres' surfaces both have train_loss.png: the keys keep their paths apart."""
    from types import SimpleNamespace

    from distillscape.report import Made
    from distillscape.tracking import figure_keys

    files = ["distilled.png", "minimum/train_loss.png", "landing/train_loss.png", "minimum/distilled_loss.png"]
    for f in files:
        (tmp_path / "a" / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "a" / f).write_bytes(b"png")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "distilled.png").write_bytes(b"png")
    runs = [SimpleNamespace(path=tmp_path / "a", label="surfaces", figures=[tmp_path / "a" / f for f in files]),
            SimpleNamespace(path=tmp_path / "b", label="surfaces", figures=[tmp_path / "b" / "distilled.png"])]
    made = Made(surface_grids={"g": tmp_path / "surfaces_01.png"})
    keys = figure_keys(runs, made)
    assert len(keys) == 6 and len(set(keys.values())) == 6
    assert {"figures/surfaces/minimum/train_loss", "figures/surfaces/landing/train_loss",
            "figures/surfaces/distilled", "figures/surfaces/distilled#2", "figures/report/surfaces_01"} <= set(keys)


def test_run_file_read_while_being_written_yields_only_whole_records(tmp_path, monkeypatch, no_key):
    """wandb's service process may still be writing the run file when we read it: a cut or half-written
    tail is left out, and what is read is exactly the start of what the whole file holds (CI once parsed a
    cut record and failed on protobuf's 'Wire format was corrupt')."""
    import wandb

    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(project="t", dir=str(tmp_path), mode="offline")
    for i in range(60):  # records longer than a 32 KiB block, so some span blocks as first/middle/last chunks
        run.log({"i": i, "text": "x" * (700 * i)})
    run.finish()
    run_dir = next((tmp_path / "wandb").glob("offline-run-*"))
    whole = read_run_records(run_dir, wait_s=120)
    assert whole[-1].WhichOneof("record_type") == "exit" and len(whole) > 60
    path = next(run_dir.glob("run-*.wandb"))
    data = path.read_bytes()
    assert len(data) > 3 * 32768
    cut_dir = tmp_path / "cut"
    cut_dir.mkdir()
    for size in (7, 5000, 32768 - 3, 32768 + 11, len(data) // 2, len(data) - 1):
        (cut_dir / path.name).write_bytes(data[:size])
        part = read_run_records(cut_dir)
        assert part == whole[:len(part)], size
        assert len(part) < len(whole), size
    flipped = bytearray(data)  # a chunk whose bytes are not yet the ones its checksum covers
    flipped[len(data) // 2] ^= 0xFF
    (cut_dir / path.name).write_bytes(bytes(flipped))
    part = read_run_records(cut_dir)
    assert 0 < len(part) < len(whole) and part == whole[:len(part)]


def test_logged_config_leaves_out_the_other_kind_of_task():
    from distillscape.tracking import task_config

    image = {"dataset": {"name": "digits"}, "env": None, "rl": {"gamma": 0.99}, "arch": {}, "seed": 0}
    rl = {"dataset": {"name": "digits"}, "env": {"name": "cartpole"}, "rl": {"gamma": 0.99}, "arch": {}, "seed": 0}
    assert set(task_config(image)) == {"dataset", "arch", "seed"}
    assert set(task_config(rl)) == {"env", "rl", "arch", "seed"}
    report = {"runs": ["a"], "seed": 0}  # a task without either block: as it is
    assert task_config(report) == report


def test_artifact_name_is_the_same_for_runs_of_one_kind_and_differs_between_kinds():
    from distillscape.tracking import artifact_name

    meta = {"dataset": "digits", "arch": {"_target_": "distillscape.models.MLP"}, "inner": {"steps": 1, "loss": "mse"},
            "config": {"distill": {"label_mode": "soft"}}, "step": 400}
    again = {**meta, "step": 20}  # another run, another length: the same artifact, a new version
    other = {**meta, "inner": {"steps": 1, "loss": "soft_ce"}}
    assert artifact_name(meta) == artifact_name(again) != artifact_name(other)
    assert artifact_name(meta).startswith("distilled-digits-mlp-")
    import re

    assert re.fullmatch(r"[a-z0-9_.-]+", artifact_name({**meta, "dataset": "my data/set"}))
    assert artifact_name({}, "distilled-run7") == "distilled-run7"  # an unreadable distilled.json


def test_no_deprecated_anonymous_setting_warning(tmp_path):
    """Lightning handed wandb.init `anonymous=None`; wandb printed 'The anonymous setting has no effect'
    at every run."""
    import os
    import subprocess
    import sys

    code = ("from distillscape.tracking import JobWandbLogger\n"
            f"logger = JobWandbLogger(offline=True, save_dir={str(tmp_path)!r}, project='t')\n"
            "logger.experiment.log({'x': 1})\nlogger.experiment.finish()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    src = str(Path(__file__).resolve().parents[1] / "src")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**env, "HOME": str(tmp_path), "WANDB_MODE": "offline", "PYTHONPATH": src})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "wandb" in out.stderr  # wandb spoke on this stream (its offline notes), so its silence on this counts
    assert "anonymous setting" not in out.stderr, out.stderr
