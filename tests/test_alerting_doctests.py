"""The alerting package's runnable docstring examples: lifecycle, silences, sensors, notification, store, delivery."""

import doctest
import importlib

import pytest

MODULES = ["alerting.lifecycle", "alerting.silences", "alerting.sensors", "alerting.notification",
           "alerting.database", "alerting.store", "alerting.router", "ingest.alert_message",
           "alerting.routing", "alerting.channels", "alerting.channels.webhook", "alerting.channels.alertmanager",
           "alerting.channels.email", "alerting.delivery"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
