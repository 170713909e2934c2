"""The one-command study, end to end on digits with tiny settings: every stage runs from its own
conf/ config, in order, into one output dir; the report shows them all and opens in Chromium;
a rerun resumes (finished stages are skipped); an unknown stage is skipped with its reason."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distillscape.artifacts import read_json
from test_instances import compose_cfg
from test_browser import browser_ready, check_report  # noqa: F401  (fixture)

def as_list(key: str, overrides: list[str]) -> str:
    """A Hydra override setting a list of override strings (each element quoted)."""
    return f"{key}=[" + ",".join(f'"{o}"' for o in overrides) + "]"


TINY = ["study.arch=mlp",
        as_list("study.overrides.distill", ["distill.steps=20", "distill.val_every=10", "distill.val_inits=2",
                                            "distill.eval_inits=4", "direct.epochs=2", "baseline.tune_inits=2",
                                            "baseline.lr_grid=[0.1,1.0]", "snapshot_every=10", "checkpoint_every=10"]),
        as_list("study.overrides.landscape", ["experiment=plane_minima", "sweep.resolution=[3,3]",
                                              "landscape.train_subsample=200"]),
        as_list("study.overrides.landing", ["analysis.inits=4", "analysis.polish_inits=2", "analysis.polish_steps=5",
                                            "analysis.curvature_inits=2", "analysis.curvature_examples=100",
                                            "analysis.power_iters=5", "analysis.hutchinson_probes=2",
                                            "analysis.train_examples=200", "analysis.test_examples=200",
                                            "analysis.barrier_points=3", "baseline.tune_inits=2",
                                            "baseline.lr_grid=[0.1,1.0]"]),
        as_list("study.overrides.instances", ["instances.models=3", "instances.neighbours=2", "instances.test_limit=100"]),
        "+study.stages.nosuch=[]",
        # a second landscape stage, added after the report by the merge: it must still run before it
        "+study.tasks.surfaces=landscape", as_list("+study.stages.surfaces", ["dataset=digits", "logger=none"]),
        as_list("+study.overrides.surfaces", ["experiment=surfaces_2x2", "sweep.resolution=[3,3]",
                                              "landscape.train_subsample=200"])]


SAID: list[str] = []  # what the first run of the study printed


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    import contextlib
    import io

    from distillscape.tasks.study import study

    out = tmp_path_factory.mktemp("study")
    said = io.StringIO()
    with contextlib.redirect_stdout(said):  # not a terminal: progress lines, no bars
        study(compose_cfg("study", TINY, out))
    SAID[:] = said.getvalue().splitlines()
    return out


def test_every_stage_says_when_it_starts_and_ends(study):
    """A study printed nothing while a stage ran (8 minutes of distillation without a line)."""
    ran = [s for s, e in read_json(study / "study.json")["stages"].items() if e["status"] == "ran"]
    for stage in ran:
        assert any(line.startswith("[study] ") and f" {stage}" in line and ": started, " in line for line in SAID), stage
        assert any(line.startswith(f"[study] {stage}: done in ") for line in SAID), (stage, SAID[-40:])
    # the distillation's Trainer reports its outer steps as it goes (a line every N steps without a terminal)
    assert any(line.startswith("outer steps ") and "/20" in line for line in SAID)


def test_study_runs_every_installed_stage_in_one_dir(study):
    log = read_json(study / "study.json")["stages"]
    assert list(log)[:2] == ["distill", "landscape"] and list(log)[-1] == "report"
    assert log["surfaces"]["task"] == "landscape" and log["surfaces"]["status"] == "ran"
    assert {p.parent.name for p in (study / "surfaces").rglob("surface.npz")} == {"minimum", "landing"}
    assert log["nosuch"] == {"status": "skipped", "reason": "conf/nosuch.yaml does not exist"}
    assert (study / "distill" / "distilled.safetensors").exists()
    assert (study / "instances" / "instances.json").exists()
    assert list((study / "landscape").rglob("surface.npz"))
    for stage in ("distill", "landscape", "instances", "report"):
        assert log[stage]["status"] == "ran", (stage, log[stage])
        assert (study / stage / ".hydra" / "overrides.yaml").exists()
    # every stage reads the study's data directory (a study-level paths.data_dir=... reaches them all)
    data_dirs = {yaml.safe_load((study / s / ".hydra" / "config.yaml").read_text())["paths"]["data_dir"]
                 for s in ("distill", "landscape", "instances")}
    assert len(data_dirs) == 1 and Path(data_dirs.pop()).is_absolute()
    if log["landing"]["status"] == "ran":  # the landing task is another helper's; skipped with a reason otherwise
        assert (study / "landing" / "landing_stats.json").exists()
    page = (study / "report" / "report.html").read_text()
    assert "distillscape-distill dataset=digits arch=mlp" in page
    assert "surface.npz" in page and "likeness/distilled/direct_agrees" in page
    assert str(study / "surfaces") in page  # the report shows the second landscape stage too
    assert page.count("data:image/png;base64,") >= 6


def test_study_rerun_resumes(study, capsys):
    from distillscape.tasks.study import study as run_study

    before = (study / "distill" / "distilled.safetensors").stat().st_mtime_ns
    run_study(compose_cfg("study", TINY, study))
    log = read_json(study / "study.json")["stages"]
    assert {log[s]["status"] for s in ("distill", "landscape", "instances", "report")} == {"finished before"}
    assert (study / "distill" / "distilled.safetensors").stat().st_mtime_ns == before
    out = capsys.readouterr().out
    assert "skipped, conf/nosuch.yaml does not exist" in out
    # the prefix as written: rich read `[study]` as a style tag and printed " distill: finished before"
    assert "[study] distill: finished before" in out and "[study] nosuch: skipped" in out, out


@pytest.mark.browser
def test_study_report_opens_in_chromium(study, browser_ready, tmp_path):  # noqa: F811
    report = study / "report" / "report.html"
    # every figure decoded, and the 3-D surfaces (a plane through both minima; 2 centres of the 2x2) drawn
    check_report(report, tmp_path, min_images=6, min_plots=3)


def test_study_report_follows_the_questions(study):
    page = (study / "report" / "report.html").read_text()
    for sid in ("generalise", "instances", "surfaces", "appendix"):
        assert f'<a href="#{sid}">' in page
    # the 2x2: one grid of both centres of the surfaces stage, not four panels with four scales
    grids = list((study / "report" / "figures").glob("surfaces_*surfaces*.png"))
    assert len(grids) == 1
    assert page.count("<script>") == 2 and page.count("Plotly.newPlot") == 1  # plotly.js once, one loop
    assert "is lowest at" in page  # a computed sentence about each surface
    # the distilled batch once: the instances stage shows it page by page, distill/distilled.png is listed
    body, appendix = page.split("<section id=appendix>")
    assert "distill/distilled.png" not in body and "distilled.png" in appendix
    assert len(list((study / "report" / "vtk").glob("*.vtu"))) >= 3
