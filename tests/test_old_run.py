"""A run directory written by the release before the "one house" redesign (tests/data/run_v0_1: a
digits / mlp distillation made with that code, checkpoints and snapshots left out for size) still
opens, sweeps, lands and reports with today's code."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from distillscape.artifacts import read_json
from distillscape.run import Run
from conftest import REPO, compose_cfg

OLD_RUN = REPO / "tests" / "data" / "run_v0_1"


@pytest.fixture()
def old_run(tmp_path) -> Path:
    run = tmp_path / "old_run"
    shutil.copytree(OLD_RUN, run)
    return run


def test_old_run_opens_with_its_data_and_points(old_run):
    run = Run.open(old_run)
    assert run.dataset_name == "digits" and run.arch_name == "MLP" and run.num_classes == 10
    dm = run.datamodule()  # the run's own dataset settings: the same split and normalization as then
    for k in ("mean", "std"):
        assert dm.normalization()[k] == pytest.approx(run.meta["normalization"][k])
    landing = run.landing(seed=0)
    init = run.init(seed=0)
    assert set(landing) == set(init) == set(run.meta["inner"]["param_names"])
    assert any(not torch.equal(landing[k], init[k]) for k in landing), "the inner step must move the init"
    minimum = dict(run.direct_minimum().named_parameters())
    assert set(minimum) == set(landing)
    # the one-step accuracy the old run recorded is what one step gives today from the same held-out inits
    inits = run.inits(8, seed=1_000_001)  # the test stream of distill.eval_seed (seeds.EVAL_STREAMS)
    landed = run.land(inits)
    from distillscape.inner import evaluate_stack

    acc, _ = evaluate_stack(run.loop(), landed, dm.test_x, dm.test_y)
    assert acc.mean().item() == pytest.approx(read_json(old_run / "metrics.json")["test/onestep_acc_mean"], abs=1e-6)


def test_old_run_sweeps_and_reports(old_run, tmp_path):
    from distillscape.tasks.landscape import landscape
    from distillscape.tasks.report import report

    surfaces = landscape(compose_cfg("landscape", [f"distilled={old_run}", "sweep.resolution=[3,3]",
                                                   "sweep.costs=[train,distilled]", "logger=none",
                                                   f"landscape.out_dir={tmp_path / 'surfaces'}"], tmp_path / "ls"))
    assert len(surfaces) == 1
    with np.load(surfaces[0]) as z:
        assert z["train/loss"].shape == (3, 3) and np.isfinite(z["train/loss"]).all()
        assert np.isfinite(z["distilled/loss"]).all()
    page = report(compose_cfg("report", [f"runs=[{old_run},{tmp_path / 'surfaces'}]", "logger=none"], tmp_path / "rep"))
    html = Path(page).read_text()
    assert "one step on the distilled batch" in html and "distilled.png" in html


def test_old_run_report_to_wandb_has_every_figure_and_each_surface_as_a_table(old_run, tmp_path, monkeypatch):
    from distillscape.tasks.landscape import landscape
    from distillscape.tasks.report import report
    from distillscape.tracking import read_run_records

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    landscape(compose_cfg("landscape", [f"distilled={old_run}", "sweep.resolution=[3,4]", "sweep.costs=[train]",
                                        "sweep.centres=[minimum,landing]", "logger=none",
                                        f"landscape.out_dir={tmp_path / 'surfaces'}"], tmp_path / "ls"))
    report(compose_cfg("report", [f"runs=[{old_run},{tmp_path / 'surfaces'}]", "logger=wandb"], tmp_path / "rep"))
    import wandb

    wandb.finish()
    run_dir = next((tmp_path / "rep" / "wandb").glob("offline-run-*"))
    records = read_run_records(run_dir, wait_s=120)  # the service process may still be writing the file
    assert records and records[-1].WhichOneof("record_type") == "exit", f"{run_dir}: the run file is not whole"
    keys = {"/".join(i.nested_key) or i.key for r in records
            if r.WhichOneof("record_type") == "history" for i in r.history.item}
    figures = {k.rsplit("/", 1)[0] for k in keys if k.startswith("figures/") and k.endswith("/_type")}
    # both centres' train_loss figures under their own keys, the report's 2x2 grid, the distilled batch
    assert {"figures/surfaces/minimum/train_loss", "figures/surfaces/landing/train_loss",
            "figures/old_run/distilled"} <= figures, figures
    assert any(f.startswith("figures/report/surfaces_") for f in figures), figures
    tables = sorted((run_dir / "files" / "media" / "table" / "surfaces").rglob("*.table.json"))
    assert len(tables) == 2
    import json

    t = json.loads(tables[0].read_text())
    assert t["columns"][:2] == ["axis0", "axis1"] and "train/loss" in t["columns"] and len(t["data"]) == 12
