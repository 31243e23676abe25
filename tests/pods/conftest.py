"""The real-pod tier: the product run as a user runs it, on the local cluster's real node.

The operator is installed with the Helm chart and runs in-cluster from the image built
here (``tests.images``), under Pod Security ``restricted`` enforced on its namespace; the
model pods run in a namespace that enforces ``restricted`` too, pinned to the real node
(kubelet + containerd + runc). GPUs are advertised by the node, not present: engines run
on the CPU (SmolLM2-135M through Ollama, and the vLLM stand-in image).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
from kubernetes import client

from tests.cluster import realnode
from tests.cluster.controlplane import Ports
from tests.components import install
from tests.support import realpods
from tests.support.kube import ClusterHandle
from tests.support.wait import wait_for

SMOLLM2_OBJECT = "smollm2/v1/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def real_node(cluster: ClusterHandle) -> str:
    """The real node is Ready and has every image (the cluster fixture built and loaded them)."""
    out = cluster.kubectl("get", "node", realnode.NODE_NAME, "-o", "json")
    node = json.loads(out.stdout)
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])
    realnode.load_images()  # a no-op unless an image changed since `up`
    return realnode.NODE_NAME


@pytest.fixture(scope="session")
def infra(cluster: ClusterHandle, real_node: str) -> realpods.Infra:
    """The cluster's GCS emulator (with SmolLM2's weights uploaded) and Prometheus."""
    infra = realpods.infra(Ports().base)
    infra.upload("models", SMOLLM2_OBJECT, path=install.smollm2_gguf())
    return infra


@pytest.fixture(scope="session")
def chart_operator(cluster: ClusterHandle, api: client.ApiClient, infra: realpods.Infra,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`helm install` of the chart, the operator in-cluster, watching the models' namespace."""
    for name in (realpods.NS_OPERATOR, realpods.NS_MODELS):
        cluster.kubectl("apply", "-f", "-", input=json.dumps(realpods.namespace_body(name, "restricted")))
    values = tmp_path_factory.mktemp("helm") / "values.json"
    realpods.install_operator(cluster, values, realpods.operator_values())
    wait_for(lambda: realpods.operator_pod(api) is not None, timeout=60, what="the operator pod")
    try:
        yield values
    finally:
        realpods.helm(cluster, "uninstall", realpods.RELEASE, "-n", realpods.NS_OPERATOR, "--wait")


@pytest.fixture
def models(chart_operator: Path, api: client.ApiClient) -> Iterator[str]:
    """The models' namespace; every ModelDeployment a test made is deleted (with its pods) afterwards."""
    yield realpods.NS_MODELS
    custom = client.CustomObjectsApi(api)
    for md in custom.list_namespaced_custom_object("modelops.dev", "v1alpha1", realpods.NS_MODELS,
                                                   "modeldeployments")["items"]:
        custom.delete_namespaced_custom_object("modelops.dev", "v1alpha1", realpods.NS_MODELS, "modeldeployments",
                                               md["metadata"]["name"])
    core = client.CoreV1Api(api)
    wait_for(lambda: not core.list_namespaced_pod(realpods.NS_MODELS).items, timeout=120,
             what="the models' pods to be gone")
