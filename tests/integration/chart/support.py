"""The chart on the local cluster: a release, its ServiceAccount's token, and the operator run
out of cluster with exactly the chart's container args and env (kwok pods run no containers)."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml
from kubernetes import client, config

from tests.support.kube import ClusterHandle
from tests.support.operator import RESYNC_SECONDS, OperatorProcess
from tests.unit.chart.helm import CHART, helm, objects, values_file

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Release:
    """``helm install`` of charts/modelops into its own namespace; ``uninstall`` removes it."""

    cluster: ClusterHandle
    values: dict[str, Any]
    workdir: Path
    name: str = field(default_factory=lambda: f"mo-{uuid.uuid4().hex[:6]}")
    namespace: str = ""

    def __post_init__(self) -> None:
        self.namespace = self.namespace or f"modelops-system-{uuid.uuid4().hex[:5]}"

    @property
    def fullname(self) -> str:
        return f"{self.name}-modelops"

    def install(self, *extra: str) -> None:
        # The release namespace enforces Pod Security "restricted": the operator pod must pass it.
        self.cluster.kubectl("create", "namespace", self.namespace)
        self.cluster.kubectl("label", "namespace", self.namespace, "modelops.dev/test=true",
                             "pod-security.kubernetes.io/enforce=restricted",
                             "pod-security.kubernetes.io/warn=restricted")
        f = values_file(self.values, self.workdir)
        out = helm("install", self.name, str(CHART), "--namespace", self.namespace, "-f", str(f),
                   "--wait", "--timeout", "120s", *extra, kubeconfig=self.cluster.kubeconfig)
        self.install_output = out.stdout + out.stderr

    def upgrade(self, *extra: str) -> str:
        f = values_file(self.values, self.workdir)
        out = helm("upgrade", self.name, str(CHART), "--namespace", self.namespace, "-f", str(f),
                   "--wait", "--timeout", "120s", *extra, kubeconfig=self.cluster.kubeconfig)
        return out.stdout + out.stderr

    def uninstall(self) -> None:
        helm("uninstall", self.name, "--namespace", self.namespace, "--wait", "--timeout", "60s",
             kubeconfig=self.cluster.kubeconfig, check=False)
        self.cluster.kubectl("delete", "namespace", self.namespace, "--wait=false", check=False)

    def manifest(self) -> list[dict[str, Any]]:
        out = helm("get", "manifest", self.name, "--namespace", self.namespace, kubeconfig=self.cluster.kubeconfig)
        return objects(out.stdout)

    def container(self) -> dict[str, Any]:
        dep = next(o for o in self.manifest() if o["kind"] == "Deployment")
        return dep["spec"]["template"]["spec"]["containers"][0]

    def container_env(self) -> dict[str, str]:
        """The container's literal env values (the downward API's entries left out)."""
        return {e["name"]: e["value"] for e in self.container().get("env", []) if "value" in e}

    def service_account(self) -> str:
        return next(o for o in self.manifest() if o["kind"] == "ServiceAccount")["metadata"]["name"]

    def token_kubeconfig(self, path: Path, seconds: int = 3600) -> Path:
        """A kubeconfig that authenticates as the release's ServiceAccount (TokenRequest)."""
        with self.cluster.api_client() as api:
            req = client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds))
            token = client.CoreV1Api(api).create_namespaced_service_account_token(
                self.service_account(), self.namespace, req).status.token
        admin = yaml.safe_load(self.cluster.kubeconfig.read_text())
        ctx_name = admin.get("current-context")
        ctx = next(c for c in admin["contexts"] if c["name"] == ctx_name)["context"]
        cluster_entry = next(c for c in admin["clusters"] if c["name"] == ctx["cluster"])
        user = f"system:serviceaccount:{self.namespace}:{self.service_account()}"
        cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "operator",
               "clusters": [cluster_entry],
               "users": [{"name": user, "user": {"token": token}}],
               "contexts": [{"name": "operator", "context": {"cluster": cluster_entry["name"], "user": user}}]}
        path.write_text(yaml.safe_dump(cfg))
        path.chmod(0o600)
        return path

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account()}"


def api_from(kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeconfig))


# What the kubelet puts into the container's env from the downward API, by field; here (no pod)
# the ChartOperator's pod_id and namespace.
DOWNWARD_API = {"metadata.name": "pod_id", "metadata.namespace": "namespace"}


class ChartOperator(OperatorProcess):
    """``python -m modelops`` with the container's args and env from the release's Deployment.

    Only what cannot be the same out of cluster changes: the listening ports (free
    local ports instead of 8080/8081 on every interface), the downward API's values (no pod:
    POD_NAME is ``pod_id``, POD_NAMESPACE the release ``namespace``, where the Lease lives),
    the resync interval (shorter, so tests are quick) and KUBECONFIG (the ServiceAccount's token).
    """

    def __init__(self, container: dict[str, Any], kubeconfig: Path, log: Path, pod_id: str = "", *,
                 namespace: str) -> None:
        super().__init__(kubeconfig, log)
        self.pod_id = pod_id or f"chart-operator-{uuid.uuid4().hex[:5]}"
        self.namespace = namespace
        assert container["command"] == ["python", "-m", "modelops"], container["command"]
        self.args = [f"--liveness=http://127.0.0.1:{self.liveness_port}/healthz" if a.startswith("--liveness=") else a
                     for a in container["args"]]
        env = {}
        for e in container.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
            else:  # only the downward API's pod name and namespace; anything else would be a new case
                field_path = e["valueFrom"]["fieldRef"]["fieldPath"]
                env[e["name"]] = getattr(self, DOWNWARD_API[field_path])
        assert {"POD_NAME", "POD_NAMESPACE"} <= set(env), "the chart no longer sets the downward API's env"
        env.update(KUBECONFIG=str(kubeconfig), MODELOPS_METRICS_PORT=str(self.metrics_port),
                   MODELOPS_RESYNC_SECONDS=str(RESYNC_SECONDS))
        self.chart_env = dict(env)
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("MODELOPS_")}, **env}

    @property
    def lease(self) -> tuple[str, str] | None:
        """(namespace, name) of the Lease this operator elects its leader with; None: no election."""
        if self.chart_env.get("MODELOPS_LEADER_ELECTION") != "true":
            return None
        return self.namespace, self.chart_env["MODELOPS_LEADER_ELECTION_ID"]

    def leading(self) -> bool:
        return self.metric("modelops_leader") == 1

    def reconciles(self) -> float:
        """Reconciles this process has run, whatever their result."""
        return sum(v for k, v in self.metrics().items() if k.startswith("modelops_reconciles_total{"))

    def command(self) -> list[str]:
        return self.args

    def environment(self) -> dict[str, str]:
        return self.env


def running(release: Release, tmp: Path) -> Iterator[ChartOperator]:
    """Generator for fixtures: the release's operator, as its ServiceAccount, stopped afterwards."""
    kubeconfig = release.token_kubeconfig(tmp / "sa.kubeconfig")
    op = ChartOperator(release.container(), kubeconfig, tmp / "operator.log", namespace=release.namespace).start()
    try:
        yield op
    finally:
        op.stop()


# --------------------------------------------------------------------------- RBAC
def rule_allows(rule: dict[str, Any], verb: str, group: str, resource: str, name: str | None = None) -> bool:
    """One PolicyRule against one request; ``resource`` may carry a subresource ("deployments/scale").
    A rule with resourceNames allows only requests for those names (``name`` None: a request
    without a name, such as create or list, which such a rule never allows)."""
    names = rule.get("resourceNames")
    return (group in rule.get("apiGroups", []) or "*" in rule.get("apiGroups", [])) and \
        (resource in rule.get("resources", []) or "*" in rule.get("resources", [])) and \
        (verb in rule.get("verbs", []) or "*" in rule.get("verbs", [])) and \
        (not names or name in names)


def allows(rules: list[dict[str, Any]], verb: str, group: str, resource: str, name: str | None = None) -> bool:
    return any(rule_allows(r, verb, group, resource, name) for r in rules)


def expand(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """Rules as a set of (verb, group, resource) triples."""
    return {(v, g, r) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


@dataclass
class AuditRequests:
    """Every request of one user in the local apiserver's audit log, from a mark on.

    The local cluster audits every request (reads too) of the ``modelops-operator``
    identity; other users' reads are not audited.
    """

    path: Path
    offset: int = 0

    def mark(self) -> "AuditRequests":
        self.offset = self.path.stat().st_size if self.path.exists() else 0
        return self

    def requests(self, user: str) -> list[dict[str, Any]]:
        import json

        out = []
        with self.path.open() as f:
            f.seek(self.offset)
            for line in f:
                e = json.loads(line)
                if e.get("user", {}).get("username") == user and e.get("objectRef"):
                    out.append(e)
        return out

    def refs(self, user: str) -> list[tuple[str, str, str, str | None, str | None]]:
        """(verb, group, resource[/subresource], namespace, name) of each of the user's resource requests."""
        out = []
        for e in self.requests(user):
            ref = e["objectRef"]
            resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            out.append((e["verb"], ref.get("apiGroup", ""), resource, ref.get("namespace"), ref.get("name")))
        return out

    def triples(self, user: str) -> set[tuple[str, str, str]]:
        """(verb, group, resource[/subresource]) of the user's resource requests."""
        out = set()
        for e in self.requests(user):
            ref = e["objectRef"]
            resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            out.add((e["verb"], ref.get("apiGroup", ""), resource))
        return out
