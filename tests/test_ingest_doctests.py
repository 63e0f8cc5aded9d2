"""Run the runnable examples in the docstrings of the ingest modules added after the foundation."""

import doctest
import importlib

import pytest

MODULES = ["ingest.incidents", "ingest.kaggle", "ingest.kaggle_generator", "ingest.kaggle_compare",
           "ingest.sensor_kit", "ingest.lake", "ingest.loader", "ingest.simulator", "tests.malformed_corpus",
           "ingest.reading", "ingest.progress"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
