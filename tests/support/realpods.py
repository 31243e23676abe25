"""What the real-pod tier (and ``make run``) does around the product, on this machine only.

- The GCS emulator and Prometheus are the local cluster's own (``tests.cluster.services``):
  pods reach them by Service names, the host at the bridge address.
- The operator is installed with the Helm chart and runs in-cluster from its image.
- ``Traffic`` sends chat completions to a Service's ClusterIP all along a scenario and
  keeps every answer, so a test can show that no request failed.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client

from tests.cluster import realnode, services
from tests.components.servers import emulator_client
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
NS_OPERATOR = "modelops-system"
NS_MODELS = "modelops-pods"
GCS_IN_CLUSTER = services.GCS_IN_CLUSTER
PROMETHEUS_IN_CLUSTER = services.PROMETHEUS_IN_CLUSTER
OLLAMA_IMAGE = "localhost/modelops/ollama:v0.17.4"
VLLM_STANDIN_IMAGE = "localhost/modelops/vllm-standin:0.1.0"
RELEASE = "modelops"


def namespace_body(name: str, enforce: str) -> dict[str, Any]:
    """A namespace under Pod Security ``enforce`` (and warn/audit at restricted), pinned to the real node."""
    labels = {"pod-security.kubernetes.io/enforce": enforce, "pod-security.kubernetes.io/enforce-version": "latest",
              "pod-security.kubernetes.io/warn": "restricted", "pod-security.kubernetes.io/audit": "restricted"}
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels, "annotations": realnode.namespace_annotations()}}


@dataclass
class Infra:
    """The cluster's GCS emulator and Prometheus (``tests.cluster.services``), as the host reaches them."""

    gcs_url: str
    prometheus_url: str

    def gcs(self) -> Any:
        return emulator_client(self.gcs_url)

    def upload(self, bucket: str, name: str, path: Path | None = None, data: bytes | None = None) -> str:
        storage = self.gcs()
        b = storage.bucket(bucket)
        if not b.exists():
            storage.create_bucket(bucket)
        blob = b.blob(name)
        if path is not None:
            blob.upload_from_filename(str(path))
        else:
            blob.upload_from_string(data or b"")
        return f"gs://{bucket}/{name}"

    def query(self, promql: str) -> list[dict]:
        resp = httpx.get(f"{self.prometheus_url}/api/v1/query", params={"query": promql}, timeout=5)
        resp.raise_for_status()
        return resp.json()["data"]["result"]


def infra(base_port: int) -> Infra:
    return Infra(services.gcs_url(base_port), services.prometheus_url(base_port))


def operator_values(watch: list[str] | None = None) -> dict[str, Any]:
    """The chart's values for this machine: the locally built images, the GCS emulator, the watched namespaces."""
    return {
        "image": {"pullPolicy": "IfNotPresent"},
        "watchNamespaces": watch or [NS_MODELS],
        "operator": {
            "ollamaImage": OLLAMA_IMAGE, "vllmImage": VLLM_STANDIN_IMAGE,
            "modelCacheSize": "2Gi", "resyncSeconds": 5,
            "extraEnv": [{"name": "MODELOPS_STORAGE_EMULATOR_HOST", "value": GCS_IN_CLUSTER},
                         {"name": "MODELOPS_GOOGLE_CLOUD_PROJECT", "value": "test"},
                         {"name": "MODELOPS_METADATA_POLL_SECONDS", "value": "1"}],
        },
    }


def helm(cluster: Any, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    from tests.cluster import build

    proc = subprocess.run([str(build.binary("helm")), f"--kubeconfig={cluster.kubeconfig}", *args],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def install_operator(cluster: Any, values_file: Path, values: dict[str, Any]) -> None:
    values_file.write_text(json.dumps(values))
    helm(cluster, "upgrade", "--install", RELEASE, str(ROOT / "charts" / "modelops"), "-n", NS_OPERATOR,
         "-f", str(values_file), "--wait", "--timeout", "5m")


def operator_pods(api: client.ApiClient) -> list[client.V1Pod]:
    """The chart's operator pods (the default is two replicas, one leading), not being deleted."""
    pods = client.CoreV1Api(api).list_namespaced_pod(
        NS_OPERATOR, label_selector="app.kubernetes.io/name=modelops").items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def operator_pod(api: client.ApiClient) -> client.V1Pod | None:
    live = operator_pods(api)
    return live[0] if live else None


def leader_pod(api: client.ApiClient) -> client.V1Pod | None:
    """The operator pod that holds the Lease in the operator's namespace (its holder is the pod's name)."""
    holders = {lease.spec.holder_identity for lease in
               client.CoordinationV1Api(api).list_namespaced_lease(NS_OPERATOR).items if lease.spec.holder_identity}
    return next((p for p in operator_pods(api) if p.metadata.name in holders), None)


# -- traffic ----------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    at: float
    user: str
    status: int  # 0: no HTTP answer (connection refused, reset, timeout)
    revision: str
    detail: str = ""


@dataclass
class Traffic:
    """Chat completions sent one after another to ``url`` (a Service's ClusterIP), as users would."""

    url: str
    users: int = 20
    max_tokens: int | None = 4  # None: leave it to the serving config
    model: str = "smollm2"
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> "Traffic":
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=60)

    def _run(self) -> None:
        n = 0
        # A connection per request, as many users have: kube-proxy balances connections, not
        # requests, so one keep-alive connection would stay on one pod whatever the split.
        with httpx.Client(timeout=httpx.Timeout(60, connect=5),
                          limits=httpx.Limits(max_keepalive_connections=0)) as http:
            while not self._stop.is_set():
                user = f"user-{n % self.users}"
                n += 1
                self.answers.append(self.one(http, user))

    def one(self, http: httpx.Client, user: str) -> Answer:
        body: dict[str, Any] = {"model": self.model, "messages": [{"role": "user", "content": "Say hello."}]}
        if self.max_tokens is not None:
            body |= {"max_tokens": self.max_tokens, "temperature": 0}
        try:
            resp = http.post(f"{self.url}/v1/chat/completions", json=body, headers={"x-user-id": user})
        except httpx.HTTPError as exc:
            return Answer(time.monotonic(), user, 0, "", f"{type(exc).__name__}: {exc}")
        detail = ""
        if resp.status_code == 200:
            choices = resp.json().get("choices") or [{}]
            if not (choices[0].get("message") or {}).get("content"):
                return Answer(time.monotonic(), user, 200, resp.headers.get("x-modelops-revision", ""), "no tokens")
        else:
            detail = resp.text[:300]
        return Answer(time.monotonic(), user, resp.status_code, resp.headers.get("x-modelops-revision", ""), detail)

    def served(self) -> int:
        return sum(1 for a in list(self.answers) if a.status == 200 and not a.detail)

    def failed(self) -> list[Answer]:
        return [a for a in list(self.answers) if a.status != 200 or a.detail]

    def by_revision(self) -> Counter[str]:
        return Counter(a.revision for a in list(self.answers) if a.status == 200)

    def wait_served(self, n: int, timeout: float = 120) -> None:
        start = self.served()
        try:
            wait_for(lambda: self.served() >= start + n, timeout=timeout, what=f"{n} more answered requests")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {len(self.failed())} failed, first: {self.failed()[:3]}") from None

    def assert_no_failure(self) -> None:
        failed = self.failed()
        assert not failed, (f"{len(failed)} of {len(self.answers)} requests failed; first: "
                            + "; ".join(f"{a.status} {a.revision or '-'} {a.detail}" for a in failed[:5]))


def diagnose(cluster: Any, namespace: str) -> str:
    """What a user would look at when a pod does not come up: pods, events, container logs."""
    parts = []
    for args in (("get", "pods", "-o", "wide"), ("get", "events", "--sort-by=.lastTimestamp")):
        out = cluster.kubectl(*args, "-n", namespace, check=False)
        parts.append(f"$ kubectl {' '.join(args)}\n{out.stdout[-3000:]}{out.stderr[-500:]}")
    out = cluster.kubectl("get", "pods", "-n", namespace, "-o", "jsonpath={.items[*].metadata.name}", check=False)
    for pod in out.stdout.split()[:4]:
        logs = cluster.kubectl("logs", "-n", namespace, pod, "--all-containers", "--tail=15", "--prefix",
                               check=False)
        parts.append(f"$ kubectl logs {pod}\n{logs.stdout[-2500:]}{logs.stderr[-300:]}")
    return "\n".join(parts)


def service_url(api: client.ApiClient, namespace: str, name: str) -> str:
    svc = client.CoreV1Api(api).read_namespaced_service(name, namespace)
    return f"http://{svc.spec.cluster_ip}:{svc.spec.ports[0].port}"
