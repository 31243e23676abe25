"""The operator against a real control plane: examples become GPU Deployments that serve,
day-two changes roll out safely, and nothing is written when nothing changes."""

from __future__ import annotations

import threading
import time
from collections import Counter
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client, watch

from tests.support.audit import AuditReader
from tests.support.wait import wait_for

from .steps import (
    apply,
    condition,
    events,
    example,
    get,
    manifest,
    revisions,
    service_revision,
    wait_phase,
    wait_reason,
    with_changes,
)

OPERATOR_USER = "modelops-operator"
NODE_LABEL = {"nvidia-l4": ("nvidia.com/gpu.product", "NVIDIA-L4"),
              "nvidia-h100-80gb": ("nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3")}


@pytest.mark.parametrize("file", ["gemma-2-9b-vllm-l4.yaml", "gemma-3n-ollama.yaml", "llama-3-70b-vllm-2xh100.yaml"])
def test_example_becomes_a_healthy_gpu_deployment(file, api, cluster, namespace, operator) -> None:
    m = example(file)
    name, spec = m["metadata"]["name"], m["spec"]
    apply(cluster, namespace, m)
    obj = wait_phase(api, namespace, name, "Healthy")
    st = obj["status"]
    assert condition(obj, "Ready")["status"] == "True"
    assert condition(obj, "Available")["status"] == "True"
    assert condition(obj, "Degraded")["status"] == "False"

    deps = revisions(api, namespace, name)
    assert list(deps) == [st["stableRevision"]]
    dep = deps[st["stableRevision"]]
    engine = dep.spec.template.spec.containers[0]
    gpus = spec["resources"]["gpu"]["count"]
    assert engine.resources.limits["nvidia.com/gpu"] == str(gpus)
    assert service_revision(api, namespace, name) == st["stableRevision"]

    core = client.CoreV1Api(api)
    pods = core.list_namespaced_pod(namespace, label_selector=f"modelops.dev/revision={st['stableRevision']}").items
    assert len(pods) == spec["replicas"]
    key, value = NODE_LABEL[spec["resources"]["gpu"]["type"]]
    for pod in pods:
        assert pod.status.phase == "Running"
        assert core.read_node(pod.spec.node_name).metadata.labels.get(key) == value

    table = cluster.kubectl("get", "modeldeployment", name, "-n", namespace).stdout.splitlines()
    header, row = table[0].split(), table[1].split()
    assert header == ["NAME", "MODEL", "ENGINE", "PHASE", "STABLE", "CANARY", "WEIGHT", "READY", "AGE"]
    assert row[:5] == [name, spec["model"]["name"], spec["engine"]["type"], "Healthy", st["stableRevision"]]
    assert row[5] == f"{spec['replicas']}/{spec['replicas']}"  # CANARY and WEIGHT are empty when not rolling out
    reasons = [r for _, r, _ in events(api, namespace, name)]
    assert reasons == ["NewRevision", "Promoted"]


class DeploymentRecorder:
    """Every change to the namespace's Deployments, in the apiserver's order (a watch)."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.seen: list[tuple[str, int, int]] = []  # (name, spec.replicas, status.availableReplicas)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(api, namespace), daemon=True)
        self._thread.start()

    def _run(self, api: client.ApiClient, namespace: str) -> None:
        apps = client.AppsV1Api(api)
        while not self._stop.is_set():
            for ev in watch.Watch().stream(apps.list_namespaced_deployment, namespace, timeout_seconds=2):
                d = ev["object"]
                self.seen.append((d.metadata.name, d.spec.replicas, d.status.available_replicas or 0))

    def stop(self) -> list[tuple[str, int, int]]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.seen


def test_model_change_rolls_out_a_new_revision_that_is_available_before_the_old_scales_down(
        api, cluster, namespace, operator) -> None:
    m = manifest("chat", replicas=2)
    apply(cluster, namespace, m)
    old = wait_phase(api, namespace, "chat", "Healthy")["status"]["stableRevision"]

    recorder = DeploymentRecorder(api, namespace)
    apply(cluster, namespace, with_changes(m, "spec.model.source", "gs://models/gemma-2-9b-it-v2/"))
    obj = wait_phase(api, namespace, "chat", "Healthy")
    new = obj["status"]["stableRevision"]
    wait_for(lambda: revisions(api, namespace, "chat")[old].spec.replicas == 0, timeout=30,
             what="the old revision to be scaled to zero")
    seen = recorder.stop()

    assert new != old
    assert service_revision(api, namespace, "chat") == new
    first_down = next(i for i, (n, replicas, _) in enumerate(seen) if n == old and replicas == 0)
    new_before = [available for n, _, available in seen[:first_down] if n == new]
    assert new_before and new_before[-1] == 2, f"old scaled down before the new revision was available: {seen}"
    outcomes = {r["name"]: r["outcome"] for r in obj["status"]["revisions"]}
    assert outcomes == {old: "Superseded", new: "Serving"}


def test_replicas_change_scales_in_place_without_a_new_revision(api, cluster, namespace, operator) -> None:
    m = manifest("chat", replicas=1)
    apply(cluster, namespace, m)
    rev = wait_phase(api, namespace, "chat", "Healthy")["status"]["stableRevision"]
    apply(cluster, namespace, with_changes(m, "spec.replicas", 3))
    obj = wait_phase(api, namespace, "chat", "Healthy")
    assert obj["status"]["stableRevision"] == rev
    assert obj["status"]["ready"] == "3/3"
    deps = revisions(api, namespace, "chat")
    assert list(deps) == [rev] and deps[rev].spec.replicas == 3


def test_delete_garbage_collects_everything(api, cluster, namespace, operator) -> None:
    apply(cluster, namespace, manifest("chat"))
    wait_phase(api, namespace, "chat", "Healthy")
    cluster.kubectl("delete", "modeldeployment", "chat", "-n", namespace, "--wait=true", "--timeout=30s")

    def gone() -> bool:
        pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector="modelops.dev/deployment=chat")
        svcs = client.CoreV1Api(api).list_namespaced_service(namespace).items
        return not revisions(api, namespace, "chat") and not pods.items and not svcs

    wait_for(gone, timeout=60, what="Deployments, pods and Service to be garbage-collected")


def test_a_model_needing_16_gpus_waits_with_insufficient_gpu_while_stable_serves(
        api, cluster, namespace, operator) -> None:
    m = manifest("chat", replicas=1, gpus=1, gpu_type="nvidia-h100-80gb")
    apply(cluster, namespace, m)
    stable = wait_phase(api, namespace, "chat", "Healthy")["status"]["stableRevision"]

    apply(cluster, namespace, with_changes(m, "spec.resources.gpu.count", 16))
    obj = wait_reason(api, namespace, "chat", "Progressing", "InsufficientGPU")
    st = obj["status"]
    assert st["phase"] == "Progressing"
    assert st["stableRevision"] == stable and st["canaryRevision"] != stable
    assert "Insufficient nvidia.com/gpu" in condition(obj, "Progressing")["message"]
    assert condition(obj, "Available")["status"] == "True"
    deps = revisions(api, namespace, "chat")
    assert deps[stable].spec.replicas == 1 and deps[stable].status.available_replicas == 1
    assert service_revision(api, namespace, "chat") == stable
    assert ("Warning", "InsufficientGPU") in [(t, r) for t, r, _ in events(api, namespace, "chat")]


def test_invalid_gpu_type_is_reported_in_status_and_stable_keeps_serving(api, cluster, namespace, operator) -> None:
    m = manifest("chat")
    apply(cluster, namespace, m)
    stable = wait_phase(api, namespace, "chat", "Healthy")["status"]["stableRevision"]
    apply(cluster, namespace, with_changes(m, "spec.resources.gpu.type", "nvidia-b300"))
    obj = wait_reason(api, namespace, "chat", "Degraded", "InvalidSpec")
    assert "spec.resources.gpu.type" in condition(obj, "Degraded")["message"]
    assert "nvidia-b300" in obj["status"]["message"]
    assert obj["status"]["stableRevision"] == stable
    assert list(revisions(api, namespace, "chat")) == [stable]
    assert service_revision(api, namespace, "chat") == stable


def test_operator_killed_mid_reconcile_resumes_without_duplicates_or_flapping(
        api, cluster, namespace, operator) -> None:
    apply(cluster, namespace, manifest("chat", replicas=2))
    wait_for(lambda: revisions(api, namespace, "chat"), timeout=30, what="the first revision Deployment")
    operator.kill()  # mid-rollout: the revision exists, its pods are coming up, status says Pending
    operator.start()
    obj = wait_phase(api, namespace, "chat", "Healthy")
    deps = revisions(api, namespace, "chat")
    assert list(deps) == [obj["status"]["stableRevision"]]
    assert len(client.CoreV1Api(api).list_namespaced_service(namespace).items) == 1

    # A restart of a settled operator changes nothing: no status write, no transition.
    before = get(api, namespace, "chat")
    operator.kill()
    operator.start()  # a new process: its counters start at zero
    wait_for(lambda: operator.metric('modelops_reconciles_total{result="ok"}') >= 3, timeout=30,
             what="three reconciles after the restart")
    after = get(api, namespace, "chat")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["status"]["conditions"] == before["status"]["conditions"]


def test_an_idle_minute_of_resyncs_makes_no_write_and_no_read_requests(api, cluster, namespace, operator) -> None:
    """Resyncs plan from the watch-fed cache: in steady state the audit log shows the operator's
    open watches and nothing else, no GET, no LIST, no write."""
    for file in ("gemma-2-9b-vllm-l4.yaml", "gemma-3n-ollama.yaml"):
        apply(cluster, namespace, example(file))
    for name in ("gemma-2-9b", "gemma-3n"):
        wait_phase(api, namespace, name, "Healthy")
    # Earlier tests' namespaces are being deleted in the background; their ModelDeployments
    # legitimately change. Let them finish so the operator's own counters measure idleness.
    core = client.CoreV1Api(api)
    wait_for(lambda: [n.metadata.name for n in core.list_namespace(label_selector="modelops.dev/test=true").items]
             == [namespace], timeout=120, what="earlier test namespaces to be deleted")

    audit = AuditReader(cluster.audit_log).mark() if cluster.audit_log else None
    writes = operator.metrics()
    start = operator.metric('modelops_reconciles_total{result="ok"}')
    deadline = time.monotonic() + 60
    wait_for(lambda: time.monotonic() >= deadline, timeout=70, interval=1, what="an idle minute")

    resyncs = operator.metric('modelops_reconciles_total{result="ok"}') - start
    assert resyncs >= 2 * 60 / 2 * 0.8, f"only {resyncs} reconciles in a minute: the resync did not run"
    after = operator.metrics()
    changed = {k: after[k] - writes.get(k, 0) for k in after
               if k.startswith("modelops_api_writes_total") and after[k] != writes.get(k, 0)}
    assert changed == {}, f"the operator counted writes while idle: {changed}"
    if audit:
        assert audit.writes(OPERATOR_USER, namespace) == []
        # This test's objects, in steady state. (A ModelDeployment of a namespace deleted just before
        # may still cost one GET: its namespace's watches can stop before its deletion is delivered,
        # and the operator finds out by reading — clean-up, listed in the README's limitations.)
        reads = Counter(" ".join(r.split()[:2]) for r in audit.requests(OPERATOR_USER, namespace)
                        if r.split()[0] in ("get", "list"))
        assert reads == Counter(), f"{resyncs:.0f} resyncs sent reads: {dict(reads)}"


def test_the_operator_lists_and_watches_only_the_objects_it_owns(cluster, operator) -> None:
    """kopf's handler filters act on the client: the watches themselves must be filtered by the
    apiserver, or every Deployment, Service and Pod of the cluster streams into the operator (and
    its memory). Pods are watched only while unbound: the scheduler's verdict is all it reads."""
    if not cluster.audit_log:
        pytest.fail("needs the local cluster's audit log")  # pragma: no cover - the local cluster always has one
    audit = AuditReader(cluster.audit_log).mark()
    operator.stop()
    operator.start()  # its lists and watches start again, in this test's part of the audit log
    owned = {"deployments", "services", "pods"}

    def kopf_requests() -> list[tuple[str, str, dict[str, list[str]]]]:
        out = []
        for e in audit.entries(OPERATOR_USER):
            resource = e.get("objectRef", {}).get("resource")
            if e["verb"] in ("list", "watch") and resource in owned and e.get("userAgent", "").startswith("kopf"):
                out.append((e["verb"], resource, parse_qs(urlsplit(e["requestURI"]).query)))
        return out

    wait_for(lambda: {(verb, resource) for verb, resource, _ in kopf_requests()}
             >= {(v, r) for v in ("list", "watch") for r in owned}, timeout=60,
             what="the restarted operator to list and watch Deployments, Services and Pods")
    for verb, resource, query in kopf_requests():
        assert query.get("labelSelector") == ["app.kubernetes.io/managed-by=modelops,modelops.dev/deployment"], \
            (verb, resource, query)
        assert query.get("fieldSelector") == (["spec.nodeName="] if resource == "pods" else None), \
            (verb, resource, query)


def test_status_is_not_written_by_anyone_but_the_operator_and_spec_never(api, cluster, namespace, operator) -> None:
    if not cluster.audit_log:
        pytest.fail("needs the local cluster's audit log")  # pragma: no cover - the local cluster always has one
    audit = AuditReader(cluster.audit_log).mark()
    m = manifest("chat")
    apply(cluster, namespace, m)
    wait_phase(api, namespace, "chat", "Healthy")
    ops = audit.writes(OPERATOR_USER, namespace)
    md_writes = [w for w in ops if w.split()[1].startswith("modeldeployments")]
    assert md_writes and all(w.split()[1].startswith("modeldeployments/status/") for w in md_writes), md_writes
