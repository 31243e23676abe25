"""Test tiers and the cluster fixtures.

- unit: no cluster, no network.
- integration / e2e: the session fixture ``cluster`` starts the local control plane
  (building its binaries once) or, when MODELOPS_E2E_KUBECONFIG is set, uses that
  cluster instead (kind, GKE, ...). A tier that needs the cluster starts it; it
  never skips.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from kubernetes import client

from tests.cluster import build
from tests.cluster.controlplane import Cluster
from tests.support.kube import ClusterHandle
from tests.support.wait import wait_for

TIERS = ("unit", "integration", "e2e", "pods")
ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The tier follows the directory: tests/unit, tests/integration, tests/e2e, tests/pods.
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterHandle]:
    external = os.environ.get("MODELOPS_E2E_KUBECONFIG")
    if external:
        yield ClusterHandle(Path(external), local=False)
        return
    build.build_all()
    local = Cluster()
    already_up = local.is_up()
    if not already_up:
        local.up()
    try:
        yield ClusterHandle(local.kubeconfig, local=True,
                            operator_kubeconfig=local.state_dir / "operator.kubeconfig", audit_log=local.audit_log)
    finally:
        if not already_up:  # leave a developer's own `up` running; stop what we started
            local.down()


@pytest.fixture(scope="session")
def api(cluster: ClusterHandle) -> Iterator[client.ApiClient]:
    with cluster.api_client() as api_client:
        yield api_client


@pytest.fixture(scope="session")
def crd(cluster: ClusterHandle) -> str:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/modeldeployments.modelops.dev")
    wait_for(lambda: cluster.kubectl("get", "modeldeployments", "-A", check=False).returncode == 0,
             timeout=30, what="the ModelDeployment API to be served")
    return "modeldeployments.modelops.dev"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (with everything in it)."""
    base = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"t-{base}-{uuid.uuid4().hex[:5]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=name, labels={"modelops.dev/test": "true"})))
    try:
        yield name
    finally:
        core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def unwatched_namespace(request: pytest.FixtureRequest, api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace outside ``t-*``, which the e2e tier's operator watches: for tests that run
    their own operator replicas, or the operator's pieces, on it alone. Deleted afterwards."""
    name = f"own-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name, propagation_policy="Background")
