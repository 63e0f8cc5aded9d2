"""The README and operations guide say what the code does.

- the quick start is exactly the two commands ``make up`` and ``make test``, and the Makefile runs them;
- ``docs/configuration.md`` is what ``python -m cluster.config_reference`` generates now, and each
  environment variable it documents is a real override;
- every ``smoke`` command line in the docs parses, and every relative link points at a file.
"""

from __future__ import annotations

import json
import re

import pytest

from cluster import config_reference
from cluster.cli import build_parser
from ingest.settings import REPO_ROOT, load_settings

README = REPO_ROOT / "README.md"
GUIDES = [README, REPO_ROOT / "docs" / "operations.md"]


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```(?:sh|bash)?\n(.*?)```", text, flags=re.S)


def test_quick_start_is_exactly_make_up_and_make_test():
    section = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    first = code_blocks(section)[0]
    assert [line.strip() for line in first.strip().splitlines()] == ["make up", "make test"]
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^up: .*\n\t\$\(BIN\)/smoke up$", makefile, flags=re.M)
    assert re.search(r"^test: .*\n\t\$\(BIN\)/ruff check \.\n\t\$\(BIN\)/python -m pytest", makefile, flags=re.M)
    # A fresh machine has only Python 3.11 and make: the venv and the install come from the Makefile.
    assert "-m venv $(VENV)" in makefile and "pip install --quiet -e '.[dev]'" in makefile


def test_configuration_reference_is_up_to_date():
    assert config_reference.main(["--check"]) == 0, "run: python -m cluster.config_reference"


def test_documented_environment_variables_are_real_overrides():
    text = (REPO_ROOT / "docs" / "configuration.md").read_text()
    names = re.findall(r"`(SMOKE_[A-Z0-9_]+)`", text)
    current = load_settings(environ={}).model_dump(mode="json")
    assert len(names) > 40
    for name in names:
        if name == "SMOKE_SECTION":
            continue
        section, key = name[len("SMOKE_"):].lower().split("__", 1)
        value = current[section][key]
        # Setting each variable to the current value must be accepted: an unknown key is an error.
        settings = load_settings(environ={name: _as_environment_text(value)})
        assert settings.model_dump(mode="json")[section][key] == value, name


def _as_environment_text(value: object) -> str:
    """How a user writes a setting's value in its SMOKE_ variable: plain text, JSON for structure."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float | str):
        return str(value)
    return json.dumps(value)


def smoke_command_lines() -> list[str]:
    lines = []
    for guide in GUIDES:
        for block in code_blocks(guide.read_text()):
            for line in block.splitlines():
                line = line.split(" #", 1)[0].strip()
                match = re.match(r"^(?:\S*/)?smoke (.+)$", line)
                if match and "<" not in line and "[" not in line and "$" not in line:
                    lines.append(match.group(1))
    return lines


@pytest.mark.parametrize("argv", smoke_command_lines())
def test_documented_smoke_commands_parse(argv: str):
    build_parser().parse_args(argv.split())


def test_relative_links_exist():
    for guide in [*GUIDES, *(REPO_ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", guide.read_text()):
            assert (guide.parent / target).exists(), f"{guide.name} links to missing {target}"
