"""The CPU image built and run for real: a base image made from Debian's packages (docker/make-debian-base.sh),
docker/Dockerfile.cpu built offline from a wheel directory, `distillscape-distill` on digits run inside it
with no network, its artifact read on the host.

Opt-in (`pytest -m docker`, part of `make test-all`; not of `make test`): about 10 minutes on 2 cores with
the vfs storage driver, and several GB of disk. Needs Debian's docker.io (and debootstrap when the base
image is absent). Starts dockerd when no engine answers (root only) and stops what it started; skips,
saying why, where that cannot be done. The wheels are fetched with this Python's pip into
$DISTILLSCAPE_DOCKER_WHEELS (default /var/tmp/distillscape-wheels), kept for the next run.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DIGITS_RUN_OVERRIDES, REPO
from distillscape.artifacts import load_distilled

pytestmark = pytest.mark.docker
BASE = "distillscape-base:bookworm"
IMAGE = "distillscape:cpu-test"
WHEELS = Path(os.environ.get("DISTILLSCAPE_DOCKER_WHEELS", "/var/tmp/distillscape-wheels"))


def run(cmd: list[str], timeout: float, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "DOCKER_BUILDKIT": "1", **env})


def buildkit_client() -> str | None:
    """A docker CLI that builds with BuildKit: one with the buildx plugin, or a CLI older than 23 (such as
    Debian bookworm's docker.io 20.10), which has BuildKit built in."""
    for cli in dict.fromkeys(c for c in (shutil.which("docker"), "/usr/bin/docker") if c and os.path.exists(c)):
        if run([cli, "buildx", "version"], 30).returncode == 0:
            return cli
        version = re.search(r"version (\d+)\.", run([cli, "--version"], 30).stdout)
        if version and int(version.group(1)) < 23:
            return cli
    return None


@pytest.fixture(scope="module")
def docker(tmp_path_factory):
    """The docker CLI, with an engine answering: the running one, or dockerd started here and stopped after."""
    cli = buildkit_client()
    if cli is None:
        pytest.skip("no docker CLI that builds with BuildKit: apt-get install docker.io (Debian's engine and CLI)")
    if run([cli, "info"], 60).returncode == 0:
        yield cli
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        pytest.skip("no Docker engine answers and none can be started here: dockerd "
                    + ("is missing (apt-get install docker.io)" if dockerd is None else "needs root"))
    log_path = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    with open(log_path, "w") as log:  # vfs: works inside containers and VMs without overlayfs
        proc = subprocess.Popen([dockerd, "--storage-driver=vfs"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while run([cli, "info"], 60).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text().strip().splitlines()[-1:] or ["(no output)"]
                pytest.skip(f"dockerd could not be started here: {tail[0]}")
            time.sleep(1)
        yield cli
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def base_image(docker):
    """The base image made from Debian's packages, made now when absent."""
    if run([docker, "image", "inspect", BASE], 60).returncode != 0:
        if os.geteuid() != 0 or shutil.which("debootstrap") is None:
            pytest.skip(f"{BASE} is absent and cannot be made here: docker/make-debian-base.sh needs root and "
                        "debootstrap (apt-get install debootstrap)")
        made = run(["sh", str(REPO / "docker" / "make-debian-base.sh"), BASE], 1800,
                   PATH=f"{Path(docker).parent}:{os.environ['PATH']}")  # the script calls `docker`
        assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-3000:]
    return BASE


def build_context(dest: Path) -> None:
    """The repository's files the build reads, plus every wheel the offline build needs (hard links to
    the wheel cache, fetched with this Python's pip: the base's Python is 3.11)."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("src", "conf"):
        shutil.copytree(REPO / name, dest / name, ignore=skip)
    (dest / "docker").mkdir()
    for name in ("Dockerfile.cpu", "Dockerfile.cpu.dockerignore"):
        shutil.copy2(REPO / "docker" / name, dest / "docker" / name)
    WHEELS.mkdir(parents=True, exist_ok=True)
    got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(WHEELS), "torch", "torchvision",
                          str(dest), "setuptools>=68", "wheel"], capture_output=True, text=True, timeout=3600)
    assert got.returncode == 0, got.stderr[-3000:]
    shutil.rmtree(dest / "src" / "distillscape.egg-info", ignore_errors=True)  # pip's metadata build
    shutil.copytree(WHEELS, dest / "docker" / "wheels", copy_function=_link_or_copy)


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def test_cpu_image_built_offline_runs_distill_on_digits_without_network(docker, base_image, tmp_path):
    if sys.version_info[:2] != (3, 11):
        pytest.skip(f"the wheels are fetched with this Python's pip for the base's Python 3.11; this is "
                    f"{sys.version_info[0]}.{sys.version_info[1]}")
    context = tmp_path / "context"
    context.mkdir()
    build_context(context)
    started = time.monotonic()
    built = run([docker, "build", "--network", "none", "-f", str(context / "docker" / "Dockerfile.cpu"),
                 "--build-arg", f"BASE_IMAGE={base_image}", "--build-arg", "PIP_NO_INDEX=1", "-t", IMAGE,
                 str(context)], 3600)
    build_s = time.monotonic() - started
    assert built.returncode == 0, built.stderr[-4000:]
    out = tmp_path / "runs"
    out.mkdir()
    try:
        size = int(run([docker, "image", "inspect", "-f", "{{.Size}}", IMAGE], 60).stdout)
        started = time.monotonic()
        ran = run([docker, "run", "--rm", "--network", "none", "--user", f"{os.getuid()}:{os.getgid()}",
                   "-v", f"{out}:/runs", IMAGE, "distillscape-distill", "hydra.run.dir=/runs/digits",
                   "trainer.enable_progress_bar=false", *DIGITS_RUN_OVERRIDES], 1800)
        run_s = time.monotonic() - started
    finally:
        run([docker, "image", "rm", IMAGE], 600)  # the image only; BuildKit's cache stays for a rerun
    print(f"\nbuild {build_s:.0f} s, image {size / 1e9:.2f} GB, run {run_s:.0f} s\n{ran.stdout[-1500:]}")
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-3000:]
    # the artifact, read on the host by the project's reader
    d = load_distilled(out / "digits")
    assert d.meta["dataset"] == "digits" and d.images.shape == (10, 1, 8, 8)
    m = d.metrics
    assert m and all(math.isfinite(v) for v in m.values()), m
    assert m["test/onestep_acc_mean"] > 0.2, m  # chance: 0.1 (10 classes)
    assert m["direct/acc"] > 0.5, m
    assert (out / "digits" / "complete.json").exists() and (out / "digits" / "distilled.png").stat().st_size > 1000
    # files written in the container belong to the caller, not to root
    assert (out / "digits" / "distilled.safetensors").stat().st_uid == os.getuid()
