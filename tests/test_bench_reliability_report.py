"""RELIABILITY.md names real tests, quotes real records, and is the rendering of the committed run."""

from __future__ import annotations

import ast
import json
import re

import pytest

from bench.reliability_report import (
    DOCUMENT,
    GUARANTEES,
    NOT_RECORDED,
    RECORDED,
    ROOT,
    columns,
    read,
    render,
    unrecorded,
)

TESTS = ROOT / "tests"


def _functions(path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


@pytest.mark.parametrize("test", sorted({t for g in GUARANTEES for t in g.tests}))
def test_every_named_test_exists(test: str) -> None:
    path, function = test.split("::")
    assert (ROOT / path).exists(), path
    assert function in _functions(ROOT / path), f"{test} is named in RELIABILITY.md but does not exist"


def _recorded_names() -> set[str]:
    """Scenario names the tests pass to reliability_record (sizes like ``[{mode}]`` stripped)."""
    names = set()
    for path in TESTS.glob("*.py"):
        text = path.read_text()
        names |= {re.sub(r"\[.*$", "", m) for m in re.findall(r"reliability_record\(\s*f?\"([^\"]+)\"", text)}
        names |= set(re.findall(r"reliability_record, \"([^\"]+)\"", text))  # passed on to a helper
    return names


@pytest.mark.parametrize("scenario", sorted({s for g in GUARANTEES if g.figures for s in g.figures.scenarios}))
def test_every_quoted_scenario_is_recorded_by_some_test(scenario: str) -> None:
    assert scenario in _recorded_names(), f"no test records {scenario!r}"


def test_sizes_become_columns_and_missing_figures_say_so() -> None:
    recorded = {"stream.soak[full]": {"duration_s": 600, "workers": {"w0": {"max_mb": 327.0}, "w1": {"max_mb": 300}}},
                "stream.soak[short]": {"duration_s": 60}}
    soak = next(g for g in GUARANTEES if g.figures and g.figures.scenarios == ("stream.soak",))
    cols = columns(soak.figures, recorded)
    assert [heading for heading, _ in cols] == ["stream.soak[short]", "stream.soak[full]"]
    rows = dict(soak.figures.rows)
    assert read(recorded["stream.soak[full]"], rows["RSS max, worst worker (MB)"]) == 327.0
    assert read(recorded["stream.soak[short]"], rows["RSS max, worst worker (MB)"]) == NOT_RECORDED
    assert read(recorded["stream.soak[full]"], "duration_s") == 600
    text = render({"command": "python -m pytest --full x", "mode": "full", "scenarios": recorded})
    assert "| duration (s) | 60 | 600 |" in text
    assert "`python -m pytest --full x`" in text
    assert text.count(NOT_RECORDED) > 10  # every other scenario is absent from this run, and says so


def test_the_committed_document_is_the_rendering_of_the_committed_run() -> None:
    assert RECORDED.exists(), "bench/reliability.json is missing: run `make reliability`"
    run = json.loads(RECORDED.read_text())
    assert DOCUMENT.read_text() == render(run) + "\n", "RELIABILITY.md is stale: run python -m bench.reliability_report"
    assert run["mode"] == "full", "RELIABILITY.md quotes the full scenarios"
    assert unrecorded(run) == [], "the recorded run lacks these scenarios"
