"""Run the runnable examples in module docstrings."""

import doctest
import importlib

import pytest

MODULES = ["ingest.validation", "ingest.reading", "ingest.settings", "train.features", "train.slot_table",
           "serve.errors", "alerting.time_window", "serve.operator.metrics",
           "cluster.commands.alerts", "cluster.commands.foreground", "cluster.health",
           "ingest.mqtt_bridge", "cluster.shared_paths"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
