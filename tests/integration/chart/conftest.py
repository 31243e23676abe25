"""Fixtures for the chart on the local cluster.

These tests prove the RBAC by running the operator with the chart ServiceAccount's
token: no other cluster-wide operator may reconcile the same objects meanwhile. The
e2e suite's ``operator`` fixture runs one for the rest of the session once started,
so these tests are moved before the first e2e test (tests/integration/conftest.py).
"""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.support.kube import ClusterHandle

from .support import ChartOperator, Release, running

# Old revisions are pruned at once (revisionHistory 0), so a rollout also exercises delete.
TEST_VALUES = {"operator": {"revisionHistory": 0}}


@pytest.fixture(scope="module")
def release(cluster: ClusterHandle, crd: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    """The chart with its default values (cluster-wide), installed into its own namespace."""
    r = Release(cluster, TEST_VALUES, tmp_path_factory.mktemp("release"))
    r.install()
    try:
        yield r
    finally:
        r.uninstall()


@pytest.fixture(scope="module")
def chart_operator(release: Release, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChartOperator]:
    yield from running(release, tmp_path_factory.mktemp("operator"))
