"""The worked examples in the pure modules' docstrings are tests too."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "modelops_inference.defaults",
    "modelops_inference.accounting",
    "modelops_inference.security",
    "modelops_inference.proxy",
    "modelops_inference.metadata",
    "modelops_inference.storage_init.download",
    "modelops_inference.split",
    "modelops_inference.responseid",
    "modelops_inference.feedback",
    "modelops_inference.structured",
    "modelops_inference.cost",
    "modelops_inference.cache",
    "modelops_inference.cache_store",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
