"""The report in a real browser: Debian's Chromium (never a downloaded one: `playwright install` needs the
network) driven by Playwright. A page passes when it logs no console error and raises no script error,
every <img> is decoded (naturalWidth > 0), every interactive surface has been drawn by Plotly (a WebGL
canvas inside its div), and every contents link points at an element of the page. The screenshot is
kept under the test's tmp dir.

Marked `browser`. `make test` installs Playwright (the `browser` extra); Chromium is installed from
Debian's packages by the fixture when absent and the tests run as root (as in CI, like the SLURM
cluster's packages); otherwise the tests skip with the reason (`apt-get install -y chromium`,
`pip install -e '.[browser]'`)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# no GPU, no sandbox (root in a container), nothing that reaches the network by itself
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _install_chromium() -> str | None:
    """apt-get install chromium, where we may; None when done, else why not."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "Debian's chromium is not installed (apt-get install -y chromium, as root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-qq", "chromium"]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            return f"{' '.join(cmd)} failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}"
    return None


def _skip_reason() -> str | None:
    global CHROMIUM
    if not Path(CHROMIUM).exists():
        if (why := _install_chromium()) is not None:
            return why
        CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[browser]'; no `playwright install` needed)"
    return None


@pytest.fixture(scope="session")
def browser_ready() -> str:
    """Chromium's path; the test skips with the reason when Chromium or Playwright is absent."""
    if (reason := _skip_reason()) is not None:
        pytest.skip(reason)
    return CHROMIUM


def inspect_page(page: Path, screenshot: Path, settle_ms: int = 1500) -> dict:
    """Load `page` in headless Chromium; what a reader would run into, as plain data."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            tab.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            tab.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            tab.on("requestfailed", lambda r: errors.append(f"request failed: {r.url[:80]}"))
            tab.goto(page.resolve().as_uri(), wait_until="load")
            tab.wait_for_timeout(settle_ms)
            out = tab.evaluate("""() => {
                const imgs = [...document.images];
                const plots = [...document.querySelectorAll('div.plot')];
                const links = [...document.querySelectorAll('nav.toc a')].map(a => a.getAttribute('href'));
                return {
                  images: imgs.length,
                  decoded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
                  plots: plots.length,
                  drawn: plots.filter(d => d.classList.contains('js-plotly-plot') && d.querySelector('canvas')
                                           && d.querySelector('.updatemenu-container, .legend, .gl-container')).length,
                  links: links,
                  dangling: links.filter(h => !h.startsWith('#') || !document.getElementById(h.slice(1))),
                  // a command line wider than its box runs off the page (it is to wrap)
                  overflowing: [...document.querySelectorAll('pre')].filter(p => p.offsetParent !== null && p.scrollWidth > p.clientWidth + 1).length,
                  commands: document.querySelectorAll('pre.cmd').length,
                };
            }""")
            tab.screenshot(path=str(screenshot), full_page=False)
            out["errors"] = errors
            return out
        finally:
            browser.close()


@pytest.mark.browser
def test_the_browser_check_catches_errors(browser_ready, tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><nav class=toc><a href="#nowhere">x</a></nav>'
                   '<img src="missing.png"><div class=plot></div><script>throw new Error("boom")</script>'
                   "</body></html>")
    got = inspect_page(bad, tmp_path / "bad.png", settle_ms=200)
    assert any("boom" in e for e in got["errors"]), got
    assert got["images"] == 1 and got["decoded"] == 0
    assert got["plots"] == 1 and got["drawn"] == 0
    assert got["dangling"] == ["#nowhere"]


def check_report(page: Path, tmp_path: Path, min_images: int = 1, min_plots: int = 0) -> dict:
    shot = tmp_path / "report.png"
    got = inspect_page(page, shot)
    assert got["errors"] == [], got["errors"]
    assert got["images"] >= min_images and got["decoded"] == got["images"], got
    assert got["plots"] >= min_plots and got["drawn"] == got["plots"], got
    assert got["links"] and got["dangling"] == [], got
    assert got["overflowing"] == 0, got
    assert shot.exists() and shot.stat().st_size > 10_000
    return got
