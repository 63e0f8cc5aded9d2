"""Run the runnable examples in the delivery modules' docstrings."""

import doctest
import importlib

import pytest

MODULES = ["alerting.routing", "alerting.channels", "alerting.channels.webhook", "alerting.channels.alertmanager",
           "alerting.channels.email", "alerting.delivery"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
