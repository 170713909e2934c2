"""The study report: metric rows folded with mean +- std and the inits behind them, a self-contained
HTML file from real run directories, the logger part (csv, W&B offline), and the page in headless
Chromium (no console errors, every figure decoded, a screenshot with the figures on it)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from distillscape.report import Row, flat_rows, nested_rows, read_run
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
    assert "<h2>instances: <code>" in page  # the task, recognized from what the dir holds (no .hydra here)


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


# -- headless Chromium ------------------------------------------------------------------------------
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed with apt-get when absent; the tests skip with the reason otherwise."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe:
        return exe
    if shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and there is no apt-get to install it with")
    try:
        r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
                           capture_output=True, text=True, timeout=600,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if r.returncode != 0:
            subprocess.run(["apt-get", "update"], capture_output=True, timeout=300)
            r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
                               capture_output=True, text=True, timeout=600,
                               env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"chromium could not be installed: {e}")
    exe = shutil.which("chromium")
    if r.returncode != 0 or not exe:
        pytest.skip(f"chromium could not be installed (apt-get: {r.stderr.strip().splitlines()[-1:]})")
    return exe


def console_errors(chromium: str, page: Path, screenshot: Path, height: int = 4000) -> list[str]:
    """Load the page headless, take a screenshot; return the console lines Chromium logged (a page
    without scripts logs none unless something failed: a resource, a parse, a script error)."""
    r = subprocess.run([chromium, *CHROMIUM_FLAGS, "--enable-logging=stderr", "--v=0",
                        f"--window-size=1400,{height}", f"--screenshot={screenshot}", page.resolve().as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert screenshot.exists(), r.stderr[-2000:]
    return [line for line in r.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def images_decoded(chromium: str, page: Path, tmp_path: Path) -> tuple[int, int]:
    """(decoded, total) <img> of the page, counted by a script added to a copy of it."""
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", (
        "<script>window.addEventListener('load',()=>{const i=[...document.images];"
        "document.title='decoded '+i.filter(x=>x.complete&&x.naturalWidth>0).length+' of '+i.length;});"
        "</script></body>")))
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    m = re.search(r"<title>decoded (\d+) of (\d+)</title>", dom)
    assert m, dom[:500]
    return int(m.group(1)), int(m.group(2))


def test_the_console_check_catches_errors(chromium, tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><img src="missing.png"><script>throw new Error("boom")</script>'
                   "</body></html>")
    errors = console_errors(chromium, bad, tmp_path / "bad.png", height=300)
    assert any("Uncaught Error: boom" in e for e in errors), errors


def test_report_opens_in_chromium_without_errors_and_shows_its_figures(chromium, tiny_report, tmp_path):
    shot = tmp_path / "report.png"
    assert console_errors(chromium, tiny_report, shot) == []
    decoded, total = images_decoded(chromium, tiny_report, tmp_path)
    assert total >= 6 and decoded == total
    from PIL import Image

    img = Image.open(shot).convert("L")
    # figures make the page far from blank: many non-white pixels, and the dark ones of the images
    hist = img.histogram()
    n = sum(hist)
    assert sum(hist[:200]) / n > 0.03 and sum(hist[:60]) / n > 0.005
    shutil.copy(shot, tiny_report.parent / "report_screenshot.png")  # kept beside the report for a look
