"""The worked examples in the pure modules' docstrings are tests too."""

import doctest
import importlib

import pytest

MODULES = ["modelops.domain.steps", "modelops.domain.analysis", "modelops.domain.durations",
           "modelops.domain.source", "modelops.domain.revision", "modelops.planning.analysis", "modelops.domain.golden",
           "modelops.adapters.kube", "modelops.adapters.leader", "modelops.adapters.cache", "modelops.planning.decide",
           "modelops.planning.engines.common", "modelops.planning.engines.hosted", "modelops.domain.autoscaling",
           "modelops.planning.autoscaling", "modelops.planning.reconcile"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0 and result.attempted > 0


def test_merge_patch_examples() -> None:
    from modelops.adapters import kube

    assert kube.merge_patch({"x": {"y": 1}}, {"x": {"y": 1}}) == {}
    assert kube.merge_patch({}, {"l": [1]}) == {"l": [1]}
