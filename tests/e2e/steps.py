"""Readable steps for end-to-end scenarios: given a manifest, when applied, then a status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from tests.support.kube import ClusterHandle
from tests.support.manifests import with_changes  # noqa: F401 - the scenarios import it from here
from tests.support.wait import WaitTimeout, wait_for

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "modelops.dev", "v1alpha1", "modeldeployments"


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "examples" / name).read_text())


def manifest(name: str, replicas: int = 1, gpus: int = 1, gpu_type: str | None = "nvidia-l4",
             source: str = "gs://models/gemma-2-9b-it/", **spec: Any) -> dict[str, Any]:
    gpu: dict[str, Any] = {"count": gpus}
    if gpu_type:
        gpu["type"] = gpu_type
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": name},
            "spec": {"model": {"name": "gemma-2-9b-it", "source": source}, "engine": {"type": "vllm"},
                     "resources": {"gpu": gpu}, "replicas": replicas, **spec}}


def apply(cluster: ClusterHandle, namespace: str, m: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(m))


def get(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), None)


def wait_phase(api: client.ApiClient, namespace: str, name: str, phase: str, timeout: float = 60,
               generation: bool = True) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def reached() -> dict[str, Any] | None:
        obj = get(api, namespace, name)
        st = obj.get("status", {})
        seen.update(phase=st.get("phase"), message=st.get("message"), ready=st.get("ready"),
                    observedGeneration=st.get("observedGeneration"), generation=obj["metadata"]["generation"])
        if st.get("phase") != phase:
            return None
        if generation and st.get("observedGeneration") != obj["metadata"]["generation"]:
            return None
        return obj

    try:
        return wait_for(reached, timeout=timeout, what=f"{namespace}/{name} to be {phase}")
    except WaitTimeout as exc:
        raise WaitTimeout(f"{exc}; status: {seen}") from None


def wait_reason(api: client.ApiClient, namespace: str, name: str, type_: str, reason: str,
                timeout: float = 60) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        obj = get(api, namespace, name)
        c = condition(obj, type_)
        return obj if c and c["reason"] == reason else None

    return wait_for(reached, timeout=timeout, what=f"{namespace}/{name} condition {type_} reason {reason}")


def revisions(api: client.ApiClient, namespace: str, name: str) -> dict[str, client.V1Deployment]:
    deps = client.AppsV1Api(api).list_namespaced_deployment(
        namespace, label_selector=f"modelops.dev/deployment={name}").items
    return {d.metadata.name: d for d in deps}


def service_revision(api: client.ApiClient, namespace: str, name: str) -> str | None:
    svc = client.CoreV1Api(api).read_namespaced_service(name, namespace)
    return svc.spec.selector.get("modelops.dev/revision")


def events(api: client.ApiClient, namespace: str, name: str) -> list[tuple[str, str, str]]:
    evs = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=ModelDeployment").items
    return [(e.type, e.reason, e.message) for e in sorted(evs, key=lambda e: int(e.metadata.resource_version))]


def replicas(api: client.ApiClient, namespace: str, revision: str) -> tuple[int, int]:
    """A revision Deployment's (desired, available) replicas."""
    d = client.AppsV1Api(api).read_namespaced_deployment(revision, namespace)
    return d.spec.replicas or 0, d.status.available_replicas or 0


def wait_replicas(api: client.ApiClient, namespace: str, revision: str, n: int, timeout: float = 60) -> None:
    """Wait until the revision's Deployment wants ``n`` replicas and has exactly ``n`` available."""
    wait_for(lambda: replicas(api, namespace, revision) == (n, n), timeout=timeout,
             what=f"{revision} at {n} replicas, {n} available")
