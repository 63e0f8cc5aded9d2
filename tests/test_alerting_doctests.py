"""The alerting package's pure parts: lifecycle, silences, sensors, notification, as their docstrings show."""

import doctest
import importlib

import pytest

MODULES = ["alerting.lifecycle", "alerting.silences", "alerting.sensors", "alerting.notification",
           "alerting.database", "alerting.store", "ingest.alert_message"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
