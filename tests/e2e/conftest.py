"""End-to-end fixtures: the CRD installed and the operator running as a real process.

The operator runs out of cluster (kwok pods run no containers) with its own identity
on the local cluster (``modelops-operator``, so the audit log tells its writes apart),
or with the given kubeconfig on any other cluster.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Iterator

import pytest

from tests.support.kube import ClusterHandle
from tests.support.operator import OperatorProcess
from tests.support.prometheus import PrometheusServer
from tests.support.receiver import Receiver, serving

if TYPE_CHECKING:
    from tests.components.servers import FakeGCS


@pytest.fixture(scope="session")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator["FakeGCS"]:
    """fake-gcs-server: the model registry the operator polls for new serving configs."""
    from tests.components.servers import FakeGCS

    server = FakeGCS(tmp_path_factory.mktemp("gcs")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    """Real Prometheus, scraping the harness's stand-in gateways (one per test module)."""
    prom = PrometheusServer().start()
    try:
        yield prom
    finally:
        prom.stop()


@pytest.fixture(scope="session")
def notifications() -> Iterator[Receiver]:
    """A real HTTP receiver the operator notifies: receiver ``e2e`` (CloudEvents webhook, path /e2e)
    and ``e2e-slack`` (Slack-shaped, path /slack), for ModelDeployments naming them."""
    with serving() as rec:
        yield rec


@pytest.fixture(scope="session")
def operator(cluster: ClusterHandle, crd: str, gcs, notifications: Receiver,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    receivers = {"e2e": {"type": "webhook", "url": notifications.url("/e2e")},
                 "e2e-slack": {"type": "slack", "url": notifications.url("/slack")}}
    op = OperatorProcess(cluster.operator_kubeconfig or cluster.kubeconfig, log,
                         # Only the tests' namespaces (t-*): the real-pod tier's operator, installed
                         # by the chart in the same cluster, owns its own namespace.
                         extra_env={**gcs.env(), "MODELOPS_METADATA_POLL_SECONDS": "1",
                                    "MODELOPS_NAMESPACES": '["t-*"]',
                                    "MODELOPS_NOTIFY_RECEIVERS": json.dumps(receivers)})
    op.start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture(autouse=True)
def operator_gcs_settings(gcs: "FakeGCS", monkeypatch: pytest.MonkeyPatch) -> None:
    """The GCS settings are part of every pod template (the pods' GCS clients get them), so revision
    names depend on them: e2e tests compute expected names with OperatorConfig(), which must see the
    operator's settings. Per test (monkeypatch), so no other tier sees them; MODELOPS_ names, so the
    Google client in this process is not redirected."""
    monkeypatch.setenv("MODELOPS_STORAGE_EMULATOR_HOST", gcs.url)
    monkeypatch.setenv("MODELOPS_GOOGLE_CLOUD_PROJECT", "test")
