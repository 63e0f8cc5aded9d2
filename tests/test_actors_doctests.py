"""The runnable examples in the detection modules' docstrings."""

import doctest
import importlib

import pytest

MODULES = [
    "ingest.alert_message", "actors.detection", "actors.detectors.base", "actors.detectors.thresholds",
    "actors.detectors.zscore", "actors.detectors.rate_of_rise", "actors.detectors.stuck", "actors.detectors.silent",
    "actors.detectors.model_probability", "actors.detectors.particle_size", "actors.detectors.fusion",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
