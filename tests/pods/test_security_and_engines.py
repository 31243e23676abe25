"""Pod security as a cluster enforces it, and the vLLM pod contract, on real pods.

The vLLM engine runs from a stand-in image (``tests/images``: ``vllm serve`` answered by
llama.cpp's OpenAI server), because vLLM cannot be installed here. What this checks is the
pod contract the operator renders for vLLM: the command and arguments, the port, the
startup/liveness probes on ``/health``, the volumes and the GPU limit on a node that
advertises GPUs. It cannot check vLLM's own behaviour (its loading, batching, CUDA).
"""

from __future__ import annotations

import httpx
from kubernetes import client

from tests.e2e.steps import apply
from tests.support import realpods
from tests.support.wait import wait_for

from .test_serving import healthy, smollm2


def relabel_warnings(cluster, namespace: str) -> str:
    """What the apiserver says about the namespace's running pods if ``restricted`` were enforced now."""
    out = cluster.kubectl("label", "--dry-run=server", "--overwrite", "namespace", namespace,
                          "pod-security.kubernetes.io/enforce=restricted")
    return out.stderr.strip()


def test_chart_operator_runs_in_cluster_under_restricted(cluster, api, chart_operator):
    ns = client.CoreV1Api(api).read_namespace(realpods.NS_OPERATOR)
    assert ns.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = realpods.operator_pods(api)
    assert len(pods) == 2  # the chart's default: two replicas, one holding the Lease
    for pod in pods:
        assert pod.spec.node_name == "modelops-worker"
        assert pod.status.container_statuses[0].ready
        assert pod.spec.containers[0].image == "ghcr.io/modelops-dev/modelops-operator:0.1.0"
        ctx = pod.spec.containers[0].security_context
        assert ctx.read_only_root_filesystem and ctx.run_as_non_root and ctx.capabilities.drop == ["ALL"]
    wait_for(lambda: realpods.leader_pod(api) is not None, timeout=60, what="one operator pod holding the Lease")
    assert relabel_warnings(cluster, realpods.NS_OPERATOR) == ""


def test_model_pods_run_under_restricted(cluster, api, infra, models):
    ns = client.CoreV1Api(api).read_namespace(models)
    assert ns.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    apply(cluster, models, smollm2())
    healthy(cluster, api, "smol")
    pod = client.CoreV1Api(api).list_namespaced_pod(models, label_selector="modelops.dev/deployment=smol").items[0]
    assert pod.spec.security_context.run_as_non_root
    gateway = next(c for c in pod.spec.containers if c.name == "gateway")
    assert gateway.security_context.read_only_root_filesystem
    assert relabel_warnings(cluster, models) == ""


def test_vllm_pod_contract_on_the_standin_image(cluster, api, infra, models):
    m = smollm2("vllm-contract")
    m["spec"]["engine"] = {"type": "vllm", "args": ["--max-model-len", "1024"]}
    m["spec"]["resources"] = {"gpu": {"count": 1, "type": "nvidia-l4"}, "cpu": "250m", "memory": "1Gi"}
    apply(cluster, models, m)
    healthy(cluster, api, "vllm-contract")
    pod = client.CoreV1Api(api).list_namespaced_pod(
        models, label_selector="modelops.dev/deployment=vllm-contract").items[0]
    engine = next(c for c in pod.spec.containers if c.name == "engine")
    assert engine.image == realpods.VLLM_STANDIN_IMAGE
    assert engine.command == ["vllm", "serve"]
    assert engine.resources.limits["nvidia.com/gpu"] == "1"
    assert pod.spec.node_name == "modelops-worker"
    url = realpods.service_url(api, models, "vllm-contract")
    resp = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
        "model": "smollm2", "max_tokens": 8, "messages": [{"role": "user", "content": "Say hello."}]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"].strip()
