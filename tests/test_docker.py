"""The Docker files, checked without a Docker engine (none runs here): pinned bases, copied paths
that exist, install commands identical to the README's, entry points and environment the package has."""
from __future__ import annotations

import re
import tomllib

import pytest

from conftest import REPO

DOCKERFILES = {"Dockerfile": r"nvidia/cuda:\d+\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+",
               "Dockerfile.cpu": r"python:\d+\.\d+\.\d+-slim-[a-z]+"}
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


@pytest.mark.parametrize("name", DOCKERFILES)
def test_base_image_pinned_to_a_release(name):
    bases = [a for op, a in instructions(name) if op == "FROM"]
    assert len(bases) == 1 and re.fullmatch(DOCKERFILES[name], bases[0]), bases
    assert bases[0] in README


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_copied_path_exists_and_is_in_the_build_context(name):
    copies = [a.split() for op, a in instructions(name) if op in ("COPY", "ADD")]
    assert copies
    ignore = (REPO / "docker" / f"{name}.dockerignore").read_text().splitlines()
    kept = {line[1:] for line in ignore if line.startswith("!")}
    for *sources, _dest in copies:
        for src in sources:
            assert not src.startswith("--"), f"{name}: unexpected COPY flag {src}"
            assert (REPO / src).exists(), f"{name} copies {src}, which is not in the repository"
            assert src in kept, f"{name} copies {src}, but {name}.dockerignore leaves it out of the context"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_install_commands_are_the_readmes(name):
    installs = [a for op, a in instructions(name) if op == "RUN" and "pip install" in a]
    assert len(installs) == 2, installs
    torch_line, package_line = installs
    assert "torch" in torch_line and "download.pytorch.org" in torch_line
    assert package_line == "pip install /app"  # the package from the repo, installed from its copy
    readme_commands = {line.split("#")[0].strip() for line in README.splitlines() if line.startswith("pip install")}
    assert torch_line in readme_commands and package_line in readme_commands
    workdirs = [a for op, a in instructions(name) if op == "WORKDIR"]
    assert workdirs[0] == "/app"  # where `pip install /app` finds what COPY put there


@pytest.mark.parametrize("name", DOCKERFILES)
def test_entry_points_data_volume_and_config_dir(name):
    ins = instructions(name)
    env = " ".join(a for op, a in ins if op == "ENV")
    assert "DISTILLSCAPE_DATA=/data" in env and "DISTILLSCAPE_CONF_DIR=/app/conf" in env
    volumes = " ".join(a for op, a in ins if op == "VOLUME")
    assert '"/data"' in volumes
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    cmd = next(a for op, a in ins if op == "CMD")
    assert re.search(r'"(distillscape-\w+)"', cmd).group(1) in scripts
    # every command the README runs in a container is an entry point of the package
    for used in set(re.findall(r"\b(distillscape-[a-z]+)\b", README)):
        assert used in scripts, used
    # the package reads exactly these variables
    common = (REPO / "src" / "distillscape" / "tasks" / "common.py").read_text()
    paths = (REPO / "conf" / "paths" / "default.yaml").read_text()
    assert "DISTILLSCAPE_CONF_DIR" in common and "DISTILLSCAPE_DATA" in paths


def test_readme_says_the_images_were_not_built_here():
    assert "were not built here" in README
