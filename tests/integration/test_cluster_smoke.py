"""The local cluster is a real one: scheduling, GPU capacity, garbage collection,
schema validation and RBAC behave as on any conformant cluster."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.support.wait import wait_for

GPU = "nvidia.com/gpu"
TOLERATION = client.V1Toleration(key=GPU, operator="Exists", effect="NoSchedule")


def gpu_deployment(name: str, gpus: int) -> client.V1Deployment:
    labels = {"app": name}
    container = client.V1Container(
        name="engine", image="registry.local/engine:test",
        resources=client.V1ResourceRequirements(limits={GPU: str(gpus)}, requests={"cpu": "1"}))
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[container], tolerations=[TOLERATION]))))


def test_nodes_advertise_gpu_capacity(api: client.ApiClient, cluster) -> None:
    nodes = client.CoreV1Api(api).list_node().items
    if cluster.local:
        # The real node (simulated GPUs too) is reserved by its own taint: tests/pods covers it.
        real = [n for n in nodes if n.metadata.labels.get("modelops.dev/node") == "real"]
        assert [n.metadata.name for n in real] == ["modelops-worker"]
        assert int(real[0].status.allocatable[GPU]) == 4
        assert any(t.key == "modelops.dev/node" and t.effect == "NoSchedule" for t in real[0].spec.taints)
        nodes = [n for n in nodes if n not in real]
    gpu_nodes = [n for n in nodes if int(n.status.capacity.get(GPU, "0")) > 0]
    assert gpu_nodes, "no node advertises nvidia.com/gpu"
    for n in gpu_nodes:
        assert any(t.key == GPU and t.effect == "NoSchedule" for t in n.spec.taints or []), n.metadata.name
    if cluster.local:
        by_product = {}
        for n in gpu_nodes:
            product = n.metadata.labels["nvidia.com/gpu.product"]
            by_product.setdefault(product, []).append(int(n.status.capacity[GPU]))
        assert by_product == {"NVIDIA-L4": [8, 8], "NVIDIA-H100-80GB-HBM3": [4, 4]}
        l4 = [n for n in gpu_nodes if n.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-L4"]
        assert all(n.metadata.labels["cloud.google.com/gke-accelerator"] == "nvidia-l4" for n in l4)
        assert any(GPU not in n.status.capacity for n in nodes), "expected a CPU-only node"


def test_gpu_deployment_lands_on_a_gpu_node_and_becomes_available(api, namespace) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment(namespace, gpu_deployment("one-gpu", 1))

    def available() -> bool:
        d = apps.read_namespaced_deployment("one-gpu", namespace)
        return any(c.type == "Available" and c.status == "True" for c in d.status.conditions or [])

    wait_for(available, timeout=60, what="Deployment one-gpu to be Available")
    pod = core.list_namespaced_pod(namespace, label_selector="app=one-gpu").items[0]
    node = core.read_node(pod.spec.node_name)
    assert int(node.status.allocatable[GPU]) >= 1
    assert pod.status.phase == "Running"


def test_more_gpus_than_any_node_has_stays_pending_and_says_why(api, namespace) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment(namespace, gpu_deployment("too-many", 64))

    def unschedulable():
        for pod in core.list_namespaced_pod(namespace, label_selector="app=too-many").items:
            for cond in pod.status.conditions or []:
                if cond.type == "PodScheduled" and cond.reason == "Unschedulable":
                    return pod, cond
        return None

    pod, cond = wait_for(unschedulable, timeout=60, what="the pod to be reported Unschedulable")
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name is None
    assert "Insufficient nvidia.com/gpu" in cond.message


def test_child_with_owner_reference_is_garbage_collected(api, namespace) -> None:
    core = client.CoreV1Api(api)
    owner = core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="owner"), data={"k": "v"}))
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="child", owner_references=[client.V1OwnerReference(
            api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)])))
    core.delete_namespaced_config_map("owner", namespace)

    def child_gone() -> bool:
        try:
            core.read_namespaced_config_map("child", namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(child_gone, timeout=60, what="the garbage collector to delete the child")


@pytest.fixture
def widget_crd(api):
    ext = client.ApiextensionsV1Api(api)
    group = f"smoke{uuid.uuid4().hex[:6]}.modelops.dev"
    name = f"widgets.{group}"
    schema = {
        "type": "object",
        "properties": {"spec": {
            "type": "object", "required": ["replicas"],
            "properties": {"replicas": {"type": "integer", "minimum": 0},
                           "engine": {"type": "string", "enum": ["vllm", "ollama"]}}}},
    }
    ext.create_custom_resource_definition({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": schema}}]}})

    def established() -> bool:
        crd = ext.read_custom_resource_definition(name)
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    wait_for(established, timeout=30, what=f"CRD {name} to be Established")
    yield group
    ext.delete_custom_resource_definition(name)


def test_crd_schema_refuses_invalid_object_naming_the_field(api, namespace, widget_crd) -> None:
    custom = client.CustomObjectsApi(api)

    def create(spec):
        return custom.create_namespaced_custom_object(widget_crd, "v1", namespace, "widgets", {
            "apiVersion": f"{widget_crd}/v1", "kind": "Widget",
            "metadata": {"name": f"w-{uuid.uuid4().hex[:5]}"}, "spec": spec})

    # Discovery of a brand-new group can lag its Established condition by a moment.
    wait_for(lambda: create({"replicas": 1}), timeout=30, what="a valid Widget to be accepted")
    with pytest.raises(ApiException) as err:
        create({"replicas": -1, "engine": "tgi"})
    assert err.value.status == 422
    body = json.loads(err.value.body)
    fields = {c["field"] for c in body["details"]["causes"]}
    assert {"spec.replicas", "spec.engine"} <= fields
    assert "spec.replicas" in body["message"]


def test_service_account_without_rbac_is_denied(api, cluster, namespace) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="nobody")))
    token = core.create_namespaced_service_account_token("nobody", namespace, client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))).status.token
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["sub"] == f"system:serviceaccount:{namespace}:nobody"

    cfg = client.Configuration()
    cfg.host = api.configuration.host
    cfg.ssl_ca_cert = api.configuration.ssl_ca_cert
    cfg.verify_ssl = api.configuration.verify_ssl
    cfg.api_key = {"authorization": f"Bearer {token}"}
    with client.ApiClient(cfg) as as_sa:
        with pytest.raises(ApiException) as err:
            client.CoreV1Api(as_sa).list_namespaced_pod(namespace)
        assert err.value.status == 403
        assert f"system:serviceaccount:{namespace}:nobody" in err.value.body
        # authenticated, so it may ask who it is; it is not anonymous.
        review = client.AuthenticationV1Api(as_sa).create_self_subject_review(
            client.V1SelfSubjectReview())
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:nobody"

    answer = cluster.kubectl("auth", "can-i", "list", "pods", "-n", namespace,
                             f"--as=system:serviceaccount:{namespace}:nobody", check=False)
    assert answer.stdout.strip() == "no"
