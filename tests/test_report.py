"""The study report: metric rows folded with mean +- std and the inits behind them, rates of 0/1 events
as k/n, the landing and likeness pivots, a self-contained HTML file from real run directories laid out
along the study's questions, multiruns grouped by their overrides, the logger part (csv, W&B offline),
and the page in headless Chromium (test_browser: no console errors, every figure decoded, a screenshot
with the figures on it)."""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from distillscape.report import (Row, binary_count, flat_rows, landing_pivot, likeness_pivot, nested_rows, read_run,
                                 read_runs, stat_text, sweep_groups)
from distillscape.stats import describe
from test_browser import browser_ready, check_report  # noqa: F401  (fixture)
from test_instances import compose_cfg, tiny_instances, tiny_run  # noqa: F401  (fixtures)


def test_flat_rows_fold_mean_std_and_find_the_inits():
    flat = {"test/onestep_acc_mean": 0.5, "test/onestep_acc_std": 0.1, "test/onestep_acc_min": 0.3,
            "test/onestep_acc_max": 0.7, "test/onestep_loss": 1.5, "test/onestep_inits": 8.0,
            "random_real/acc_mean": 0.2, "random_real/acc_std": 0.05, "random_real/inits": 4.0,
            "random_real/lr": 0.1, "direct/acc": 0.9}
    rows = {r.metric: r for r in flat_rows(flat)}
    assert rows["test/onestep_acc"] == Row("test/onestep_acc", 0.5, 0.1, 8.0, (0.3, 0.7))
    assert rows["random_real/acc"] == Row("random_real/acc", 0.2, 0.05, 4.0, None)
    assert rows["test/onestep_loss"].n == 8.0          # a loss is a mean over the run's inits
    assert rows["random_real/lr"].n is None            # a tuned rate is not
    assert rows["direct/acc"].n is None and rows["direct/acc"].std is None
    assert "test/onestep_acc_std" not in rows and "test/onestep_acc_mean" not in rows


def test_nested_rows_read_any_mean_std_n_structure():
    data = {"distilled": {"train_loss": {"mean": 1.0, "std": 0.5, "n": 25}, "count": 3,
                          "deeper": {"test_acc": {"mean": 0.8, "inits": 10}}},
            "config": {"lr": 0.1}, "per_image": [{"x": 1}], "note": "text", "lrs": [0.5, 0.25]}
    rows = {r.metric: r for r in nested_rows(data)}
    assert rows["distilled/train_loss"] == Row("distilled/train_loss", 1.0, 0.5, 25)
    assert rows["distilled/deeper/test_acc"] == Row("distilled/deeper/test_acc", 0.8, None, 10)
    assert rows["distilled/count"].mean == 3
    assert rows["lrs"].mean == "0.5, 0.25"
    assert not any(k.startswith(("config", "per_image", "note")) for k in rows)


@pytest.fixture(scope="session")
def landing_dir(tmp_path_factory) -> Path:
    """A directory as distillscape-landing leaves it (its statistics file only: read defensively)."""
    d = tmp_path_factory.mktemp("landing")
    (d / "landing_stats.json").write_text(json.dumps(
        {"distilled": {"true_loss": {"mean": 0.61, "std": 0.07, "n": 25}},
         "random_real": {"true_loss": {"mean": 2.1, "std": 0.2, "n": 25}}}))
    (d / "broken.json").write_text("{not json")
    return d


@pytest.fixture(scope="session")
def tiny_report(tiny_run, tiny_instances, landing_dir, tmp_path_factory) -> Path:  # noqa: F811
    from distillscape.tasks.report import main

    out = tmp_path_factory.mktemp("report")
    runs = f"runs=[{tiny_run},{tiny_instances},{landing_dir}]"
    return main(compose_cfg("report", [runs, "report.title=tiny study", "logger=csv"], out))


def test_report_is_self_contained_and_complete(tiny_report, tiny_run, tiny_instances):  # noqa: F811
    page = tiny_report.read_text()
    pngs = [p for d in (tiny_run, tiny_instances) for p in read_run(d).figures]
    assert len(pngs) >= 6
    assert page.count('src="data:image/png;base64,') == len(pngs)
    assert not re.search(r'(src|href)="(https?:|file:|//)', page) and "<script" not in page and "<link" not in page
    # every metric with mean +- std and its inits, the likeness table, the ensemble, versions, configs, commands
    assert re.search(r"test/onestep_acc</td><td class=num>0\.5 ± 0\.1</td><td class=num>4</td>", page)
    assert "likeness/distilled/direct_agrees" in page and "random_real (n=20)" in page
    assert "ensemble of 3 one-step models" in page
    assert "distilled/true_loss</td><td class=num>0.61 ± 0.07</td><td class=num>25" in page
    assert "torchmetrics" in page and "lightning" in page
    assert "resolved config" in page and "neighbours: 3" in page
    # the task, recognized from what the dir holds (no .hydra here); runs are described in the appendix (h3)
    assert "<h3>instances: <code>" in page
    # the questions' sections, reachable from the contents list; a computed sentence in each
    for sid in ("generalise", "instances", "landing", "appendix"):
        assert f'<a href="#{sid}">' in page and (f'<section id="{sid}">' in page or f"<section id={sid}>" in page)
    assert "one step on the distilled batch reaches" in page
    assert "The distilled landing" not in page  # landing_dir has no direct minimum: no sentence made up


def test_report_logs_metrics_to_the_csv_logger(tiny_report):
    csv = (tiny_report.parent / "csv" / "metrics.csv").read_text().splitlines()
    header = csv[0].split(",")
    assert any(h.endswith("/metrics/test/onestep_acc") for h in header)
    assert any("likeness/distilled/direct_agrees" in h for h in header)


def test_report_logs_figures_table_and_artifact_to_wandb_offline(tiny_run, tiny_instances, tmp_path,  # noqa: F811
                                                                  monkeypatch):
    from distillscape.tasks.report import main

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    main(compose_cfg("report", [f"runs=[{tiny_run},{tiny_instances}]", "logger=wandb"], tmp_path))
    import wandb

    wandb.finish()
    run_dir = next((tmp_path / "wandb").glob("offline-run-*"))
    files = [p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()]
    assert any(f.startswith("files/media/images/figures/") and f.endswith(".png") for f in files), files
    assert any(f.startswith("files/media/table/metrics") for f in files), files
    assert any(f.startswith("files/media/html/report") for f in files), files
    # the artifact: its files are staged with the run (offline) and named in its record
    # (the record file is written by wandb's service process: give it a moment to flush)
    for _ in range(40):
        record = next(run_dir.glob("*.wandb")).read_bytes()
        if b"distilled.safetensors" in record:
            break
        time.sleep(0.5)
    assert b"distilled-" in record and b"distilled.safetensors" in record


# -- headless Chromium (test_browser) ------------------------------------------------------------------------
@pytest.mark.browser
def test_report_opens_in_chromium_without_errors_and_shows_its_figures(browser_ready, tiny_report, tmp_path):  # noqa: F811
    got = check_report(tiny_report, tmp_path, min_images=6)
    assert got["plots"] == 0  # no surfaces in this study: no plotly.js either
    from PIL import Image

    img = Image.open(tmp_path / "report.png").convert("L")
    # the top of the page: headings, the contents and the accuracy table: far from blank
    hist = img.histogram()
    n = sum(hist)
    assert sum(hist[:200]) / n > 0.01 and sum(hist[:60]) / n > 0.002
    shutil.copy(tmp_path / "report.png", tiny_report.parent / "report_screenshot.png")  # kept beside the report


# -- rates, pivots, multiruns -------------------------------------------------------------------------------
def test_binary_count_recognises_rates_of_zero_one_events_from_mean_std_n():
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 10, 25, 333):
        for p in (0.0, 0.1, 0.5, 0.9, 1.0):
            values = (torch.rand(n, generator=g) < p).double()
            d, k = describe(values), int(values.sum())
            assert binary_count(d["mean"], d["std"], d["n"], known_rate=True) == k, (n, p)
            # all zeros / all ones have std 0 like any constant: a rate only when known to be one
            assert binary_count(d["mean"], d["std"], d["n"]) == (k if 0 < k < n else None), (n, p)
        continuous = torch.rand(n, generator=g) if n > 1 else torch.tensor([0.37])
        d = describe(continuous)
        assert binary_count(d["mean"], d["std"], d["n"]) is None
    assert stat_text({"mean": 0.9, "std": 0.31622776601683794, "n": 10}) == "9/10"  # not 0.900 ± 0.316
    assert stat_text({"mean": 0.61, "std": 0.07, "n": 25}) == "0.61 ± 0.07 (n=25)"
    assert Row("r", 0.9, 0.31622776601683794, 10).cells()[1] == "9/10"
    assert Row("r", 0.5, 0.1, 4).cells()[1] == "0.5 ± 0.1"
    assert stat_text({"mean": 0.0, "std": 0.0, "n": 5}) == "0 ± 0 (n=5)"  # a barrier that is 0 every time


def test_landing_pivot_is_statistic_by_kind_without_settings():
    stats = {"settings": {"init_seed": 2_000_000, "inits": 10},
             "direct_minimum": {"train_loss": 0.05},
             "kinds": {kind: {"landing_train_loss": {"mean": m, "std": 0.1, "n": 10},
                              "polish_improves": {"mean": 0.9, "std": 0.31622776601683794, "n": 10}}
                       for kind, m in (("distilled", 0.5), ("random_real", 2.0), ("random_synthetic", 2.3))}}
    header, rows = landing_pivot(stats)
    assert header == ["statistic", "distilled", "random real", "random synthetic", "direct minimum", "what it is"]
    assert rows[0] == ["landing_train_loss", "0.5 ± 0.1 (n=10)", "2 ± 0.1 (n=10)", "2.3 ± 0.1 (n=10)", "0.05",
                       "train loss after the step"]
    assert rows[1][1:4] == ["9/10"] * 3
    assert not any("init_seed" in r[0] for r in rows)
    assert not any(r.metric.startswith("settings") for r in nested_rows(stats))  # settings go to the appendix


def test_likeness_pivot_shows_rates_as_counts(tiny_instances):  # noqa: F811
    inst = json.loads((tiny_instances / "instances.json").read_text())
    header, rows = likeness_pivot(inst)
    assert header[0] == "statistic" and any(h.startswith("random_real (n=") for h in header)
    row = next(r for r in rows if r[0].startswith("pixel_nn_same_class"))
    d = inst["likeness"]["distilled"]["pixel_nn_same_class"]
    assert row[1] == f"{round(d['mean'] * d['n'])}/{d['n']}"


def make_multirun(root: Path, values: dict[tuple[str, str, int], float]) -> Path:
    """A multirun directory as Hydra leaves it (multirun.yaml, <job>/.hydra/overrides.yaml) with the
    metrics.json a distillation writes; values: (arch, images per class, seed) -> one-step accuracy."""
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text("hydra: {mode: MULTIRUN}\n")
    for job, ((arch, ipc, seed), acc) in enumerate(values.items()):
        d = root / str(job)
        (d / ".hydra").mkdir(parents=True)
        overrides = [f"arch={arch}", f"distill.images_per_class={ipc}", f"seed={seed}", "logger=none"]
        (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"task_name": "distill", "dataset": {"name": "digits"}}))
        (d / "metrics.json").write_text(json.dumps({"test/onestep_acc_mean": acc, "test/onestep_acc_std": 0.01,
                                                    "test/onestep_inits": 8.0, "direct/acc": 0.9}))
    return root


def test_multirun_jobs_are_named_and_grouped_by_their_overrides(tmp_path):
    rng = np.random.default_rng(0)
    values = {(arch, ipc, seed): float(rng.uniform(0.3, 0.9)) for arch in ("mlp", "convnet") for ipc in (1, 10)
              for seed in (0, 1, 2)}
    sweep = make_multirun(tmp_path / "multirun" / "12-00-00", values)
    runs = read_runs([sweep])
    assert len(runs) == 12 and runs[0].label == "arch=mlp distill.images_per_class=1 seed=0"
    groups = sweep_groups(runs)[sweep]
    assert len(groups) == 4
    for g in groups:
        arch, ipc = g["settings"]["arch"], int(g["settings"]["distill.images_per_class"])
        accs = [values[(arch, ipc, s)] for s in (0, 1, 2)]
        st = g["stats"]["test/onestep_acc_mean"]
        assert st["n"] == 3 and st["mean"] == pytest.approx(np.mean(accs)) and st["std"] == pytest.approx(np.std(accs, ddof=1))
    from distillscape.tasks.report import report

    page = Path(report(compose_cfg("report", [f"runs=[{sweep}]", "logger=none"], tmp_path / "rep"))).read_text()
    assert "arch=convnet distill.images_per_class=10" in page and "(0)" not in page
    g = next(g for g in groups if g["label"] == "arch=mlp distill.images_per_class=10")
    assert stat_text(g["stats"]["test/onestep_acc_mean"]) in page
    assert (tmp_path / "rep" / "figures" / "sweep_12-00-00.png").exists()
    assert page.count('src="data:image/png;base64,') == 1  # the sweep plot


def synthetic_surface() -> dict:
    """A surface.npz's arrays as landscape writes them: a bowl for the loss, its own accuracy."""
    a, b = np.linspace(-1, 1, 5), np.linspace(-2, 2, 7)
    A, B = np.meshgrid(a, b, indexing="ij")
    loss = 0.1 + (A - 0.5) ** 2 + B ** 2
    return {"axis0": a, "axis1": b, "train/loss": loss, "train/acc": 1 / (1 + loss),
            "metrics": np.array(["train/loss", "train/acc"]), "centre_name": np.array("minimum"),
            "direction_names": np.array(["random 0", "random 1"]),
            "marked_names": np.array(["minimum", "landing"]), "marked_coords": np.array([[0.0, 0.0], [0.5, 2.0]]),
            "marked_offplane": np.array([0.0, 0.35])}


def test_vtk_export_reads_back_in_meshio_with_every_metric(tmp_path):
    import meshio

    from distillscape.plots import surface_vtk

    s = synthetic_surface()
    path = surface_vtk(s, tmp_path / "s.vtu")
    mesh = meshio.read(path)
    assert mesh.points.shape == (35, 3) and mesh.cells_dict["quad"].shape == (4 * 6, 4)
    for k, (i, j) in enumerate([(0, 0), (2, 3), (4, 6)]):  # point index i * len(axis1) + j is grid point (i, j)
        p = i * 7 + j
        assert tuple(mesh.points[p, :2]) == (s["axis0"][i], s["axis1"][j])
        assert mesh.point_data["train_loss"][p] == pytest.approx(s["train/loss"][i, j])
        assert mesh.point_data["log10_train_loss"][p] == pytest.approx(np.log10(s["train/loss"][i, j]))
    marks = meshio.read(tmp_path / "s_marks.vtu")
    assert marks.point_data["offplane"].tolist() == [0.0, 0.35]


def test_interactive_surface_switches_costs_and_marks_points_on_it():
    from distillscape.plots import surface_3d

    s = synthetic_surface()
    fig = surface_3d(s, "digits / MLP / run: around minimum")
    kinds = [t.type for t in fig.data]
    assert kinds == ["surface", "scatter3d", "scatter3d", "surface", "scatter3d", "scatter3d"]  # a trace per point
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == ["train/loss", "train/acc"]
    assert buttons[1].args[0]["visible"] == [False, False, False, True, True, True]
    minimum, landing = fig.data[1], fig.data[2]
    # a mark on a grid point sits at that point's value (log10 for a loss)
    assert minimum.z[0] == pytest.approx(np.log10(s["train/loss"][2, 3]))
    assert landing.z[0] == pytest.approx(np.log10(s["train/loss"][3, 6]))
    # named in the legend, not by text labels beside the points (which overlapped when points were close)
    assert minimum.name == "minimum" and landing.name == "landing (projected; 35% off-plane)"
    assert minimum.mode == "markers" and minimum.text is None and minimum.showlegend is not False
    assert "digits / MLP" in fig.layout.title.text
    assert "not drawn" not in fig.layout.title.text


def test_points_mostly_off_the_plane_are_named_not_stacked_on_the_centre():
    """A point whose offset from the centre lies mostly off the plane projects near the centre (all of them,
    on random planes): drawn there it looked like the centre. It is left out and named in the title."""
    from distillscape.plots import OFFPLANE_DRAWN, surface_3d, surface_grid_figure

    s = synthetic_surface()
    s["marked_names"] = np.array(["minimum", "landing", "init"])
    s["marked_coords"] = np.array([[0.0, 0.0], [0.5, 0.1], [0.01, -0.02]])
    s["marked_offplane"] = np.array([0.0, 0.35, 0.97])
    assert 0.35 <= OFFPLANE_DRAWN < 0.97
    fig = surface_3d(s, "around minimum")
    names = [t.name for t in fig.data if t.type == "scatter3d"]
    assert not any(n.startswith("init") for n in names) and "init (97% off)" in fig.layout.title.text
    grid = surface_grid_figure({"minimum": s}, ["train/loss"], "grid")
    ax = grid.axes[0]
    labels = [h.get_label() for h in ax.get_legend().legend_handles] if ax.get_legend() else []
    assert [x.split(" ")[0] for x in ax.get_legend_handles_labels()[1]] == ["minimum", "landing"], labels
    assert any("init (97% off)" in t.get_text() for t in ax.texts)
    s["marked_offplane"] = np.array([0.0, 0.9, 0.97])  # one point left to draw: still named, in a legend
    one = surface_3d(s, "around minimum")
    assert [t.name for t in one.data if t.type == "scatter3d"] == ["minimum", "minimum"] and one.layout.showlegend


def _summary(values):
    t = torch.tensor(values, dtype=torch.float64)
    return {"mean": t.mean().item(), "std": t.std().item(), "n": len(values)}


def test_trajectory_sentences_use_the_tables_statistics_with_intervals():
    """The sentence reads the per-landing statistics the landing table shows (issue 25: it read the argmax of
    the mean curve, 100, while the table said 80 ± 27); a reading only when the intervals separate it."""
    from distillscape.report import landing_pivot, trajectory_summary

    early = {"agreement_peak_step": _summary([10, 10, 20, 10, 10]), "agreement_peak": _summary([0.9, 0.91, 0.88, 0.9, 0.92]),
             "agreement_last": _summary([0.6, 0.62, 0.58, 0.61, 0.6]), "agreement_drop": _summary([0.3, 0.29, 0.3, 0.29, 0.32]),
             "steps_to_match": _summary([12, 11, 13, 12, 12])}
    late = {"agreement_peak_step": _summary([100, 500, 50, 500, 250]), "agreement_peak": _summary([0.84, 0.85, 0.83, 0.84, 0.84]),
            "agreement_last": _summary([0.83, 0.85, 0.82, 0.84, 0.83]), "agreement_drop": _summary([0.01, 0.0, 0.01, 0.0, 0.01])}
    unlike = {"agreement_peak_step": _summary([10, 100, 10, 10, 100]), "agreement_peak": _summary([0.2, 0.22, 0.21, 0.2, 0.2]),
              "agreement_last": _summary([0.2, 0.2, 0.2, 0.2, 0.2]), "agreement_drop": _summary([0.0, 0.02, 0.01, 0.0, 0.0])}
    stats = {"trajectory": {"steps": [0, 10, 100, 500]},
             "kinds": {"distilled": early, "random_synthetic": late, "random_real": unlike}}
    d, s, r = trajectory_summary(stats)
    assert "peaks at step 12 [" in d and "earlier point of training" in d
    assert "needs 12 [" in d
    # the sentence's peak step is the table's agreement_peak_step, not the argmax of a mean curve
    header, rows = landing_pivot(stats)
    table_step = next(row for row in rows if row[0] == "agreement_peak_step")[header.index("distilled")]
    assert table_step.startswith("12 ±") and "inconclusive" in s and "reaches the last checkpoint" in s
    assert "unlike direct training" in r


def _interval(mean, half, n=10):
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "std": half, "n": n}


def _early(diff_mean, half):
    agreement = {k: _interval(0.8, 0.02) for k in ("landing_checkpoint", "landing_controls", "controls_controls",
                                                     "checkpoint_controls")}
    return {"controls": {"inits": 10, "controls_per_init": 3, "control_steps": 100, "chosen": 0.02,
                         "fractions": [{"fraction": 0.02, "images": 24, "test_acc": _interval(0.8, 0.02)}],
                         "landing_test_acc": _interval(0.8, 0.02), "checkpoint_test_acc": _interval(0.8, 0.02),
                         "checkpoint_step": _interval(20, 5), "agreement": agreement,
                         "difference": {"checkpoint_minus_controls": _interval(diff_mean, half),
                                        "landing_minus_among_controls": _interval(0.0, 0.01)}}}


@pytest.mark.parametrize("diff, half, reading", [
    (0.10, 0.03, "Reading: distilled data encodes early training"),
    (-0.10, 0.03, "Reading: not early training"),
    (0.10, 0.2, "Reading: inconclusive"),     # the interval reaches 0: no reading
    (0.0, 0.001, "Reading: inconclusive"),
])
def test_early_reading_only_when_the_interval_separates_it(diff, half, reading):
    from distillscape.report import early_training

    lines, rows = early_training({}, _early(diff, half))
    assert lines[0].startswith(reading), lines[0]
    diff_row = next(r for r in rows if r[0] == "controls: checkpoint − controls")
    assert diff_row[1] in lines[-1]  # the sentence quotes the table's value
    assert early_training({}, {})[0][0].startswith("Reading: inconclusive — no accuracy-matched controls")


def test_missing_and_stale_sweeps_are_marked_not_shown(tmp_path):
    """A crashed sweep (directions, one shard of two, an old figure, no surface), a stale one (a surface older
    than a later sweep's directions) and an unfinished landing: the report says each is missing and shows
    neither their figures nor the crashed run's shard as a surface."""
    from distillscape.report import render

    run = tmp_path / "landscape_run"
    crashed, stale = run / "minimum", run / "landing"
    for d in (crashed, stale):
        (d / "shards").mkdir(parents=True)
    (crashed / "directions.safetensors").write_bytes(b"x")
    (crashed / "shards" / "shard_0000_of_0002.npz").write_bytes(b"x")
    png = (Path(__file__).parent / "data" / "run_v0_1" / "distilled.png").read_bytes()
    (crashed / "train_loss.png").write_bytes(png)
    np.savez(stale / "surface.npz", axis0=np.zeros(2))
    (stale / "train_loss.png").write_bytes(png)
    time.sleep(0.05)
    (stale / "directions.safetensors").write_bytes(b"x")  # a later sweep started here and did not finish
    (run / "landing_parts").mkdir()
    r = read_run(run)
    assert not [p for p in r.figures if p.parent in (crashed, stale)] and r.surfaces == []
    assert any("surface minimum: missing" in m and "1 of 2 shards" in m for m in r.missing)
    assert any("surface landing: stale" in m for m in r.missing)
    assert any(m.startswith("landing statistics: missing") for m in r.missing)
    page = render([r], "crashed")
    assert "Missing or failed parts" in page and "surface minimum: missing" in page
    assert "shard_0000_of_0002" not in page


def _write_surface(run: Path) -> Path:
    """A landscape run directory with one swept plane, as the landscape task leaves its surface.npz."""
    (run / "minimum").mkdir(parents=True, exist_ok=True)
    np.savez(run / "minimum" / "surface.npz", **synthetic_surface())
    return run


@pytest.fixture(scope="module")
def surface_report(tmp_path_factory) -> Path:
    from distillscape.tasks.report import main

    base = tmp_path_factory.mktemp("surface_report")
    land = _write_surface(base / "landscape")
    return main(compose_cfg("report", [f"runs=[{land}]", "logger=none"], base / "report"))


def test_report_with_a_3d_surface_inlines_the_small_plotly_bundle(surface_report):
    """4.8 of the report's 5.7 MB was the full plotly.js; the 3-D partial bundle draws every trace it uses."""
    page = surface_report.read_text()
    assert page.count("Plotly.newPlot") == 1 and "plotly.js (gl3d - minified)" in page
    assert len(page.encode()) < 2_300_000, len(page.encode())
    from distillscape.report import plotly_js

    from plotly.offline import get_plotlyjs

    assert len(plotly_js()) < 0.45 * len(get_plotlyjs())  # the bundle inlined is not the full one
    # the surface's 3-D figure links the files it shows: its surface.npz and its ParaView file
    hrefs = re.findall(r'<a href="([^"#][^"]*)">', page)
    assert "../landscape/minimum/surface.npz" in hrefs and any(h.startswith("vtk/") for h in hrefs), hrefs
    assert all((surface_report.parent / h).is_file() for h in hrefs), hrefs


@pytest.mark.browser
def test_the_small_plotly_bundle_draws_the_3d_surface_in_chromium(browser_ready, surface_report, tmp_path):  # noqa: F811
    check_report(surface_report, tmp_path, min_images=1, min_plots=1)


def test_study_report_has_its_command_curves_data_links_and_class_coverage(tiny_run, tiny_instances, tmp_path):  # noqa: F811
    """The report of a study's stages: the study's command at the top, the distillation's learning curves
    (Lightning's csv/metrics.csv), each figure linked to its data files, and what 'its class' means."""
    from lightning.pytorch.loggers import CSVLogger

    from distillscape.tasks.report import main

    study = tmp_path / "study"
    shutil.copytree(tiny_run, study / "distill")
    shutil.copytree(tiny_instances, study / "instances")
    (study / ".hydra").mkdir()
    (study / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"task_name": "study", "seed": 0}))
    (study / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["experiment=study_digits", "study.arch=mlp"]))
    logger = CSVLogger(save_dir=str(study / "distill"), name="csv", version="")
    for step in range(0, 30, 5):
        logger.log_metrics({"train/outer_loss": 2.3 - step / 30, "train/inner_lr": 0.02 + step / 1000}, step=step)
        if step % 10 == 0:
            logger.log_metrics({"val/onestep_acc_mean": 0.1 + step / 50}, step=step)
    logger.save()
    page = main(compose_cfg("report", [f"runs=[{study / 'distill'},{study / 'instances'}]", "logger=none"],
                            study / "report")).read_text()
    top = page.split("<nav class=toc")[0]
    assert "<pre class=cmd>distillscape-study experiment=study_digits study.arch=mlp</pre>" in top
    assert "Learning curves of the distillation" in page and (study / "report" / "figures" / "curves_distill.png").exists()
    hrefs = re.findall(r'<a href="([^"#][^"]*)">', page)
    import os

    source = json.loads((study / "instances" / "instances.json").read_text())["source"]  # the batch it pages
    batch = Path(os.path.relpath(Path(source) / "distilled.safetensors", study / "report")).as_posix()
    for want in ("../distill/csv/metrics.csv", batch, "../instances/instances.json"):
        assert want in hrefs, (want, hrefs)
    assert all((study / "report" / h).is_file() for h in hrefs), hrefs
    assert "soft label&#39;s most likely class" in page or "soft label's most likely class" in page
    # which classes the batch covers, computed from its per-image labels and the batch's classes
    inst = json.loads((study / "instances" / "instances.json").read_text())
    classes = json.loads((Path(inst["source"]) / "distilled.json").read_text())["classes"]
    missing = [c for c in classes if c not in {p["label"] for p in inst["per_image"]}]
    if missing:
        assert f"No distilled image stands for class{'es' if len(missing) > 1 else ''} {', '.join(missing)}" in page
    else:
        assert f"Every class has a distilled image that stands for it" in page
    # command lines wrap instead of running off the page
    assert re.search(r"pre\.cmd\{[^}]*white-space:pre-wrap", page)


def test_class_coverage_names_the_classes_no_image_stands_for():
    from distillscape.report import class_coverage_summary

    names = [str(c) for c in range(10)]
    labels = [c for c in names if c not in ("1", "8")] + ["3", "3"]  # 10 images, two of class 3, none of 1 or 8
    eye = np.eye(10) * 20
    eye[1, 1], eye[1, 7], eye[8, 8], eye[8, 3] = 2, 18, 4, 16  # one step rarely gets 1 or 8 right
    inst = {"per_image": [{"index": i, "label": c} for i, c in enumerate(labels)],
            "confusion_matrices": {"direct model": np.eye(10).tolist(),
                                   "3 one-step models, pooled (acc 0.8)": eye.tolist()}}
    line, = class_coverage_summary(inst)
    assert line.startswith("No distilled image stands for classes 1, 8") and "8 of 10 classes" in line
    assert "1: 0.10, 8: 0.20" in line and "against 1.00 on the other classes" in line
