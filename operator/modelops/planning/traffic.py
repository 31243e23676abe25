"""Traffic objects for a routing decision: Services and, with Gateway API, an HTTPRoute.

Pure: a ``Traffic`` decision in, manifests out.

- ``service`` router: the Service ``<name>`` selects the stable revision; while a canary
  shares traffic it selects every revision of the ModelDeployment and the split follows
  the ready pods (approximate, said in status). Blue-green flips the selector.
- ``gateway-api`` router: a Service per serving revision (named as the revision) and an
  HTTPRoute ``<name>`` with weighted backendRefs (and header matches for A/B tests).
  The Service ``<name>`` keeps selecting the stable revision for in-cluster clients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelops.domain.spec import ModelDeploymentSpec

from .engines.common import LABEL_REVISION, common_labels, selector_labels
from .resources import finish

PREVIEW_SUFFIX = "-preview"
HTTP_PORT = 80


@dataclass(frozen=True)
class Traffic:
    stable: str | None  # the revision the main Service serves
    canary: str | None = None  # the revision being rolled out
    weight: int = 0  # percent of traffic to the canary
    split: bool = False  # service router: the main Service selects every revision (replica-ratio weights)
    preview: str | None = None  # blue-green: the preview Service's revision
    matches: tuple[dict[str, str], ...] = ()  # A/B header matches that go to the canary


def service(owner: dict[str, Any], name: str, revision: str | None) -> dict[str, Any]:
    selector = dict(selector_labels(owner["name"]))
    if revision:
        selector[LABEL_REVISION] = revision
    return finish({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": owner["namespace"], "labels": common_labels(owner["name"])},
        "spec": {"type": "ClusterIP", "selector": selector,
                 "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"}]},
    }, owner)


def http_route(owner: dict[str, Any], spec: ModelDeploymentSpec, t: Traffic) -> dict[str, Any]:
    gw = spec.traffic.gateway
    assert gw is not None  # the CRD requires it for the gateway-api router

    def ref(revision: str, weight: int) -> dict[str, Any]:
        return {"group": "", "kind": "Service", "name": revision, "port": HTTP_PORT, "weight": weight}

    rules: list[dict[str, Any]] = []
    if t.canary and t.matches:
        rules.append({"matches": [{"headers": [{"type": "Exact", "name": k, "value": v} for k, v in sorted(m.items())]}
                                  for m in t.matches],
                      "backendRefs": [ref(t.canary, 1)]})
    backends = []
    if t.stable:
        backends.append(ref(t.stable, 100 - t.weight if t.canary else 100))
    if t.canary:
        backends.append(ref(t.canary, t.weight if t.stable else 100))
    rules.append({"backendRefs": backends})
    route_spec: dict[str, Any] = {
        "parentRefs": [p.model_dump(by_alias=True, exclude_none=True) for p in gw.parent_refs],
        "rules": rules,
    }
    if gw.hostnames:
        route_spec["hostnames"] = list(gw.hostnames)
    return finish({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": owner["name"], "namespace": owner["namespace"], "labels": common_labels(owner["name"])},
        "spec": route_spec,
    }, owner)


def objects(owner: dict[str, Any], spec: ModelDeploymentSpec, t: Traffic) -> list[dict[str, Any]]:
    name = owner["name"]
    out = [service(owner, name, None if t.split else t.stable or t.canary)]
    if t.preview:
        out.append(service(owner, name + PREVIEW_SUFFIX, t.preview))
    if spec.traffic.router == "gateway-api":
        for revision in dict.fromkeys(r for r in (t.stable, t.canary) if r):
            out.append(service(owner, revision, revision))
        out.append(http_route(owner, spec, t))
    return out
