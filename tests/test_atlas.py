"""The atlas's cross-method table (distillscape.report.atlas, issue 24 §3): read over hand-made job directories whose
numbers are known (an oracle for the interval maths: t-intervals from mean, std and n against Student's t
quantile from a table, Wilson intervals against published values), and over a real tiny atlas run as a Hydra
multirun of studies (slow)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import compose_cfg
from distillscape.report.atlas import read_atlas, sentences, table_rows
from test_study import as_list

REPO = Path(__file__).resolve().parents[1]
T_975_19 = 2.093024  # Student's t, 0.975 quantile, 19 degrees of freedom (any t table)
WILSON_3_OF_8 = (0.1368, 0.6943)  # the Wilson score 95% interval of 3 successes in 8 (z = 1.96)
WILSON_0_OF_8 = (0.0, 0.3244)


def write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if path.suffix == ".json" else yaml.safe_dump(data))


def hand_made_job(root: Path, num: int, method: str, protocol: str, acc: tuple[float, float, float],
                  barrier: dict | None = None, minima: int | None = None, early: tuple[float, float, float, float] | None = None,
                  landing_done: bool = True) -> None:
    job = root / str(num)
    write(job / "config_resolved.yaml", {"task": "study", "config": {"study": {
        "method": method, "dataset": "digits", "arch": "mlp", "protocol": protocol,
        "stages": {"distill": [], "landing": []}}}})
    write(job / "distill" / "study_stage.json", {"status": "ran"})
    name = "onestep" if protocol == "one_step" else protocol
    write(job / "distill" / "metrics.json", {f"test/{name}_acc_mean": acc[0], f"test/{name}_acc_ci95_low": acc[1],
                                             f"test/{name}_acc_ci95_high": acc[2], f"test/{name}_inits": 100.0})
    if landing_done:
        write(job / "landing" / "study_stage.json", {"status": "ran"})
    else:  # started: its finished parts are kept, its statistics not written
        (job / "landing" / "landing_parts").mkdir(parents=True)
    if barrier is not None:
        write(job / "landing" / "landing_stats.json", {"kinds": {"distilled": {"barrier_to_direct": barrier}}})
    if minima is not None:
        write(job / "landing" / "certificate.json", {"groups": {"landing": {"counts": {
            "minimum": {"k": minima, "n": 8}, "saddle": {"k": 0, "n": 8}, "not_stationary": {"k": 8 - minima, "n": 8}}}}})
    if early is not None:
        mean, lo, hi, control_acc = early
        write(job / "landing" / "early.json", {"controls": {
            "difference": {"checkpoint_minus_controls": {"mean": mean, "lo": lo, "hi": hi, "n": 8}},
            "landing_test_acc": {"mean": 0.85, "lo": 0.84, "hi": 0.86}, "chosen": 0.02,
            "fractions": [{"fraction": 0.02, "test_acc": {"mean": control_acc, "lo": control_acc - 0.01,
                                                          "hi": control_acc + 0.01}}]}})


@pytest.fixture
def hand_made_atlas(tmp_path) -> Path:
    """meta x {one_step, yang} and dm x one_step on digits/mlp; dm x yang asked for but never started. The
    command line's study.arch=mlp replaced the experiment's mlp,simple_convnet (so no convnet job is missing)."""
    root = tmp_path / "atlas"
    write(root / "multirun.yaml", {"hydra": {"sweeper": {"params": {
        "study.method": "meta,dm", "study.dataset": "digits", "study.arch": "mlp,simple_convnet",
        "study.protocol": "one_step,yang"}}, "overrides": {"task": ["study.arch=mlp", "experiment=atlas"]}}})
    hand_made_job(root, 0, "meta", "one_step", (0.86, 0.85, 0.87), {"mean": 0.5, "std": 0.2, "n": 20}, minima=3,
                  early=(0.2, 0.1, 0.3, 0.7))  # controls at 70% [69%, 71%] against landings at [84%, 86%]: not matched
    hand_made_job(root, 1, "meta", "yang", (0.80, 0.79, 0.81), {"mean": 0.1, "std": 0.4, "n": 20}, minima=0,
                  early=(0.01, -0.05, 0.07, 0.845))
    # dm's landing stopped before its statistics: no barrier, no certificate, listed as missing
    hand_made_job(root, 2, "dm", "one_step", (0.84, 0.80, 0.865), landing_done=False)
    return root


def test_table_has_each_jobs_intervals_and_lists_what_is_missing(hand_made_atlas):
    jobs, missing = read_atlas(hand_made_atlas)
    assert [(j.method, j.protocol) for j in jobs] == [("meta", "one_step"), ("meta", "yang"), ("dm", "one_step")]
    meta = jobs[0]
    assert meta.accuracy == {"mean": 0.86, "lo": 0.85, "hi": 0.87, "n": 100}
    half = T_975_19 * 0.2 / math.sqrt(20)
    assert meta.barrier["lo"] == pytest.approx(0.5 - half, abs=1e-5) and meta.barrier["hi"] == pytest.approx(0.5 + half, abs=1e-5)
    assert (meta.verdicts["minimum"]["low"], meta.verdicts["minimum"]["high"]) == pytest.approx(WILSON_3_OF_8, abs=1e-4)
    assert (jobs[1].verdicts["minimum"]["low"], jobs[1].verdicts["minimum"]["high"]) == pytest.approx(WILSON_0_OF_8, abs=1e-4)
    rows = table_rows(jobs)
    assert rows[0][5:10] == ["86.0% [85.0%, 87.0%]", "100", "3 / 0 / 5 of 8 [0.14, 0.69]",
                             f"0.5 [{0.5 - half:.3g}, {0.5 + half:.3g}]", "20.0% [10.0%, 30.0%]: early (controls' accuracy not matched)"]
    assert rows[1][9] == "1.0% [-5.0%, 7.0%]: inconclusive"
    assert rows[2][7:10] == ["–", "–", "–"]
    assert missing == ["job 2 (dm/digits/mlp/one_step): landing not finished (still running, or stopped: rerunning "
                       "the command resumes it)",
                       f"dm/digits/mlp/yang: no job directory (not run yet, or it failed before starting; rerun the "
                       f"command with hydra.sweep.dir={hand_made_atlas})"]
    said = sentences(jobs)
    # meta and dm one-step accuracies overlap ([0.85, 0.87] and [0.80, 0.865]): no ranking is claimed
    assert ("test accuracy (digits, mlp, one_step), the two highest methods: meta 86.0% [85.0%, 87.0%] and dm 84.0% "
            "[80.0%, 86.5%]: inconclusive, the 95% intervals overlap.") in said
    assert ("test accuracy of meta (digits, mlp) by protocol: yang 80.0% [79.0%, 81.0%] is lower than one step 86.0% "
            "[85.0%, 87.0%], beyond the 95% intervals.") in said
    # the yang barrier's interval (0.1 ± 0.187) reaches 0; the one-step one does not
    assert any(s.startswith("job 1 (meta/digits/mlp/yang): barrier") and s.endswith("inconclusive, the interval reaches 0.")
               for s in said)
    assert any(s.startswith("job 0 (meta/digits/mlp/one_step): barrier") and "above 0 beyond" in s for s in said)
    assert [("early training" in s, "Caution" in s) for s in said if "controls" in s] == [(True, True), (False, False)]


def test_a_barrier_of_zero_on_every_landing_reads_as_linearly_connected(hand_made_atlas):
    """A barrier is >= 0 by construction: 0 on all 25 landings (std 0) is a finding, not an inconclusive interval."""
    hand_made_job(hand_made_atlas, 3, "dm", "yang", (0.85, 0.84, 0.86), {"mean": 0.0, "std": 0.0, "n": 25}, minima=0)
    said = [s for s in sentences(read_atlas(hand_made_atlas)[0]) if s.startswith("job 3 (dm/digits/mlp/yang): barrier")]
    assert said == ["job 3 (dm/digits/mlp/yang): barrier from the landing to the direct minimum 0 [0, 0] over 25 "
                    "landings: 0 on every landing: linearly connected (no straight path rises above its end losses)."]


def test_report_on_an_atlas_writes_its_page_figures_and_numbers(hand_made_atlas, tmp_path):
    from distillscape.tasks.report import report

    page = report(compose_cfg("report", [f"runs=[{hand_made_atlas}]"], tmp_path / "report"))
    html = page.read_text()
    assert "86.0% [85.0%, 87.0%]" in html and "dm/digits/mlp/yang: no job directory" in html
    assert html.count("data:image/png;base64,") == 3  # accuracy, minima, barrier
    numbers = json.loads((tmp_path / "report" / "atlas_atlas.json").read_text())
    assert [j["accuracy"]["mean"] for j in numbers["jobs"]] == [0.86, 0.80, 0.84] and len(numbers["missing"]) == 2


TINY_ATLAS = [
    "experiment=atlas", "study.method=meta,dm", "study.arch=mlp", "study.protocol=one_step,yang",
    "hydra/launcher=basic",
    as_list("study.overrides.distill", ["distill.steps=20", "distill.val_every=10", "distill.val_inits=2",
                                        "distill.eval_inits=10", "direct.epochs=2", "baseline.tune_inits=2",
                                        "baseline.lr_grid=[0.1,1.0]", "snapshot_every=0", "checkpoint_every=10",
                                        "distill.eval.yang_steps=20"]),
    as_list("study.overrides.landscape", ["experiment=plane_minima", "sweep.resolution=[3,3]",
                                          "landscape.train_subsample=200"]),
    as_list("study.overrides.landing", [
        "analysis.inits=4", "analysis.kinds=[distilled]", "analysis.polish_inits=2", "analysis.polish_steps=5",
        "analysis.curvature_inits=2", "analysis.curvature_examples=100", "analysis.power_iters=5",
        "analysis.hutchinson_probes=2", "analysis.train_examples=200", "analysis.test_examples=200",
        "analysis.barrier_points=3", "analysis.trajectory_inits=2", "analysis.trajectory_steps=[1,5]",
        "analysis.certificate=true", "analysis.certificate_inits=3", "analysis.certificate_examples=200",
        "analysis.certificate_eigs=2", "analysis.lanczos_steps=6", "analysis.slq_starts=1", "analysis.slq_steps=4",
        "analysis.early=[controls]", "analysis.early_inits=3", "analysis.control_fractions=[0.02]",
        "analysis.control_models=2", "analysis.control_steps=5"]),
    as_list("study.overrides.instances", ["instances.models=3", "instances.neighbours=2", "instances.test_limit=100"]),
    "+study.tasks.report=none"]  # the per-job report pages: not what this test reads


@pytest.mark.slow
def test_a_tiny_real_atlas_gives_one_row_per_job_and_lists_a_missing_one(tmp_path):
    """2 methods x mlp x 2 protocols on digits through distillscape-study's multirun; then one job's directory
    is removed (a job that never ran) and the report lists it instead of a row."""
    sweep = tmp_path / "atlas"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-m", "distillscape.tasks.study", "--multirun", *TINY_ATLAS, f"hydra.sweep.dir={sweep}",
                           f"paths.data_dir={tmp_path / 'data'}"], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    jobs, missing = read_atlas(sweep)
    assert sorted((j.method, j.protocol) for j in jobs) == [("dm", "one_step"), ("dm", "yang"), ("meta", "one_step"),
                                                            ("meta", "yang")]
    assert missing == []
    for j in jobs:
        assert j.accuracy["n"] == 10 and j.accuracy["lo"] <= j.accuracy["mean"] <= j.accuracy["hi"]
        assert j.barrier["n"] == 4 and j.barrier["lo"] <= j.barrier["mean"] <= j.barrier["hi"]
        assert sum(c["k"] for c in j.verdicts.values()) == 3 and j.early["n"] == 3
    gone = next(j for j in jobs if (j.method, j.protocol) == ("dm", "yang"))
    import shutil
    shutil.rmtree(gone.path)
    jobs, missing = read_atlas(sweep)
    assert len(jobs) == 3 and missing == [f"dm/digits/mlp/yang: no job directory (not run yet, or it failed before "
                                          f"starting; rerun the command with hydra.sweep.dir={sweep})"]
