"""The Docker files, read without an engine: base image and torch index are build arguments whose defaults
are pinned public releases, what they mount is in the build context, the entry points and environment
are the package's. Building and running the CPU image for real: tests/test_docker_build.py (-m docker)."""
from __future__ import annotations

import re
import tomllib

import pytest

from conftest import REPO

DOCKERFILES = {"Dockerfile": (r"nvidia/cuda:\d+\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", "cu128"),
               "Dockerfile.cpu": (r"python:\d+\.\d+\.\d+-slim-[a-z]+", "cpu")}
README = (REPO / "docker" / "README.md").read_text()


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "docker" / name).read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, args = line.partition(" ")
            out.append((op.upper(), args.strip()))
    return out


def build_args(name: str) -> dict[str, str | None]:
    return {k: (v if sep else None) for op, a in instructions(name) if op == "ARG"
            for k, sep, v in [a.partition("=")]}


@pytest.mark.parametrize("name", DOCKERFILES)
def test_base_image_is_a_build_argument_defaulting_to_a_pinned_release(name):
    ins = instructions(name)
    assert ins[0] == ("ARG", ins[0][1]) and ins[0][1].startswith("BASE_IMAGE=")  # declared before FROM
    assert [a for op, a in ins if op == "FROM"] == ["${BASE_IMAGE}"]
    default = build_args(name)["BASE_IMAGE"]
    assert re.fullmatch(DOCKERFILES[name][0], default), default
    assert default in README


@pytest.mark.parametrize("name", DOCKERFILES)
def test_torch_comes_from_a_build_argument_index_or_the_wheel_directory(name):
    args = build_args(name)
    assert args["TORCH_INDEX_URL"] == f"https://download.pytorch.org/whl/{DOCKERFILES[name][1]}"
    assert args["PIP_NO_INDEX"] is None  # unset unless given: pip reads it from the environment of RUN
    installs = [a for op, a in instructions(name) if op == "RUN" and "pip install" in a]
    assert len(installs) == 2, installs
    torch_line, package_line = installs
    assert 'pip install --find-links /wheels --index-url "$TORCH_INDEX_URL" torch torchvision' in torch_line
    assert "pip install --find-links /wheels /context" in package_line
    for line in installs:
        assert "--mount=type=bind,source=docker/wheels,target=/wheels" in line
    assert "--mount=type=bind,target=/context,rw" in package_line  # pip builds in the tree: writable mount
    # the installed stack imports at build time (a torchvision built for another torch fails here)
    assert "import torch, torchvision, distillscape" in package_line


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_build_context_holds_what_the_build_reads(name):
    ignore = (REPO / "docker" / f"{name}.dockerignore").read_text().splitlines()
    kept = {line[1:] for line in ignore if line.startswith("!")}
    assert kept == {"pyproject.toml", "README.md", "src", "conf", "docker/wheels"}
    for path in kept:
        assert (REPO / path).exists(), path
    assert not [a for op, a in instructions(name) if op in ("COPY", "ADD")]  # everything comes through mounts
    assert (REPO / "docker" / "wheels" / "README.md").exists()  # the mount source exists in a fresh clone


@pytest.mark.parametrize("name", DOCKERFILES)
def test_entry_points_data_volume_and_config_dir(name):
    ins = instructions(name)
    env = " ".join(a for op, a in ins if op == "ENV")
    assert "DISTILLSCAPE_CONF_DIR=/app/conf" in env and "DISTILLSCAPE_DATA=/data" in env
    assert "PATH=/opt/venv/bin:$PATH" in env
    assert "cp -r /context/conf /app/conf" in [a for op, a in ins if op == "RUN"][-1]
    volumes = " ".join(a for op, a in ins if op == "VOLUME")
    assert '"/data"' in volumes and '"/runs"' in volumes
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    cmd = next(a for op, a in ins if op == "CMD")
    assert re.search(r'"(distillscape-\w+)"', cmd).group(1) in scripts
    # every command the README runs in a container is an entry point of the package
    used = set(re.findall(r"distillscape:\w+(?:\s|\\)+(distillscape-[a-z]+)", README))
    assert used and used <= set(scripts), used
    # the package reads exactly these variables
    cli = (REPO / "src" / "distillscape" / "tasks" / "cli.py").read_text()
    paths = (REPO / "conf" / "paths" / "default.yaml").read_text()
    assert "DISTILLSCAPE_CONF_DIR" in cli and "DISTILLSCAPE_DATA" in paths
