"""The worked examples in the pure modules' docstrings are tests too."""

import doctest
import importlib

import pytest

MODULES = ["modelops.domain.steps", "modelops.domain.analysis", "modelops.domain.durations",
           "modelops.domain.source", "modelops.domain.revision"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0 and result.attempted > 0
