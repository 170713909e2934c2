"""The README stays a short front page whose commands, names and links are true; docs/ pages link soundly."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_README_LINES = 160
PAGES = [README, REPO / "CONTRIBUTING.md", REPO / "ARCHITECTURE.md", REPO / "docker" / "README.md",
         *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text outside code: a link or heading shown inside a code block is not one."""
    return FENCE.sub("", text)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", prose(page.read_text()), re.M)}


def test_readme_is_short_and_opens_with_the_two_commands():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move the subject to docs/, "
        "measured figures to docs/results.md")
    body = [line for line in lines if line.strip()]
    assert body[0].startswith("# "), "README.md starts with its title"
    assert body[1].startswith("```"), "the first thing after the title is the block of the two commands"
    assert body[2].split("#")[0].strip() == "make run", body[2]
    assert body[3].split("#")[0].strip() == "make test", body[3]
    # the README's test command is the one CI runs
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert ci[-1] == "make test", f".ci/run ends with {ci[-1]!r}, not the README's `make test`"


def test_every_relative_link_resolves_to_a_file_and_heading():
    broken = []
    for page in PAGES:
        for target in LINK.findall(INLINE_CODE.sub("", prose(page.read_text()))):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path, _, fragment = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading in {dest.name})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_readme_names_every_console_script_and_links_every_docs_page():
    readme = README.read_text()
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts, "pyproject.toml lists no console scripts"
    missing = [name for name in scripts if f"`{name}`" not in readme]
    assert not missing, f"console scripts not in the README's task table: {missing}"
    unlinked = [p.name for p in (REPO / "docs").glob("*.md") if f"(docs/{p.name})" not in readme]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def test_readme_names_every_config_group():
    readme = README.read_text()
    conf = REPO / "conf"
    groups = sorted(str(d.relative_to(conf)) for d in conf.rglob("*") if d.is_dir())
    assert "dataset" in groups and "hydra/launcher" in groups, groups
    # `hydra/launcher` names both hydra and hydra/launcher
    missing = [g for g in groups if not re.search("`" + re.escape(g) + "[`/]", readme)]
    assert not missing, f"config groups under conf/ the README does not name: {missing}"


def readme_commands() -> list[str]:
    """Every `distillscape-<task> key=value ...` command the README shows, in code blocks and in the tables."""
    readme = README.read_text()
    in_blocks = re.findall(r"^(distillscape-\w+ .*?)(?:\s+#.*)?$", readme, re.M)
    in_tables = re.findall(r"`(distillscape-\w+ [^`]+)`", readme)
    return in_blocks + in_tables


def test_every_readme_command_composes_and_passes_the_checks(tmp_path):
    from distillscape.config import settings
    from distillscape.errors import ConfigError
    from distillscape.tasks.common import compose_task

    commands = readme_commands()
    assert len(commands) >= len(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])
    for command in commands:
        # `<run>` and its kind stand for a directory the user has; composing does not open it
        args = shlex.split(re.sub(r"<[^>]+>", str(tmp_path / "run"), command))
        task = args[0].removeprefix("distillscape-")
        multirun = "-m" in args
        # a multirun's comma lists compose one job at a time: the first value stands for the sweep
        overrides = [a.split(",")[0] if multirun and "[" not in a else a for a in args[1:] if a != "-m"]
        try:
            settings(compose_task(task, [f"paths.output_dir={tmp_path / 'out'}", *overrides]))
        except ConfigError as e:  # the range checks every task makes before any work
            pytest.fail(f"the README's {command!r} is refused: {e}")
