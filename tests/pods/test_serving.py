"""A model served from real pods: weights copied from gs:// by the real init container,
Ollama and the gateway side by side in one pod behind real probes, answers through the
ModelDeployment's Service (kube-proxy), metrics scraped by Prometheus found through
Kubernetes service discovery."""

from __future__ import annotations

import httpx
from kubernetes import client

from tests.e2e.steps import apply, wait_phase
from tests.support import realpods
from tests.support.wait import wait_for

from .conftest import SMOLLM2_OBJECT


def smollm2(name: str = "smol", **spec) -> dict:
    source = "gs://models/" + SMOLLM2_OBJECT.rsplit("/", 1)[0] + "/"
    return {"apiVersion": "modelops.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
            "spec": {"model": {"name": "smollm2", "source": source},
                     "engine": {"type": "ollama", "ollama": {"numCtx": 1024}},
                     "resources": {"cpu": "250m", "memory": "1Gi"}, "replicas": 1, **spec}}


def healthy(cluster, api, name: str, timeout: float = 300) -> dict:
    try:
        return wait_phase(api, realpods.NS_MODELS, name, "Healthy", timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{realpods.diagnose(cluster, realpods.NS_MODELS)}") from None


def test_ollama_from_gcs_serves_through_its_service_and_is_scraped(cluster, api, infra, models):
    apply(cluster, models, smollm2())
    healthy(cluster, api, "smol")

    pod = client.CoreV1Api(api).list_namespaced_pod(models, label_selector="modelops.dev/deployment=smol").items[0]
    assert pod.spec.node_name == "modelops-worker"
    assert [c.name for c in pod.spec.init_containers] == ["storage-initializer"]
    assert pod.status.init_container_statuses[0].state.terminated.exit_code == 0

    url = realpods.service_url(api, models, "smol")
    resp = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
        "model": "smollm2", "max_tokens": 8, "messages": [{"role": "user", "content": "Say hello."}]})
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["choices"][0]["message"]["content"].strip()
    assert answer["usage"]["completion_tokens"] > 0

    def scraped() -> bool:
        rows = infra.query(
            f'sum(modelops_gateway_requests_total{{namespace="{models}",pod="{pod.metadata.name}"}})')
        return bool(rows) and float(rows[0]["value"][1]) >= 1
    wait_for(scraped, timeout=60, what="Prometheus (Kubernetes service discovery) to scrape the pod's gateway")
