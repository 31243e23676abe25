"""Traffic objects for a routing decision: Services and, with Gateway API, an HTTPRoute.

Pure: a ``Traffic`` decision in, manifests out.

- ``service`` router: the Service ``<name>`` selects the stable revision; while a canary
  shares traffic it selects every revision of the ModelDeployment and the split follows
  the ready pods (approximate, said in status). Blue-green flips the selector.
- ``gateway-api`` router: a Service per serving revision (named as the revision) and an
  HTTPRoute ``<name>`` with weighted backendRefs (and header matches for A/B tests).
  The Service ``<name>`` keeps selecting the stable revision for in-cluster clients.
- A/B tests (either router): users are assigned by the stable revision's gateway, because
  neither a Service nor Gateway API can hash a user id (or read the OpenAI ``user`` field in
  the body). The main Service and the HTTPRoute's default rule send everything to the stable
  revision; the ConfigMap ``<name>-split`` (mounted in every revision pod) tells the stable
  gateway which share of users, by a hash of the sticky header or ``user``, to forward to the
  challenger's per-revision Service. Header matches go to the challenger directly in the
  HTTPRoute, and through the stable gateway with the service router.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from modelops.domain.spec import ModelDeploymentSpec

from .engines.common import LABEL_REVISION, SPLIT_FILE, common_labels, selector_labels, split_config_map
from .resources import ANNOTATION_APPLIED, finish

PREVIEW_SUFFIX = "-preview"
ANNOTATION_SPLIT = "modelops.dev/split-applied"  # on the main Service: the split ConfigMap's applied hash
HTTP_PORT = 80


@dataclass(frozen=True)
class Traffic:
    stable: str | None  # the revision the main Service serves
    canary: str | None = None  # the revision being rolled out
    weight: int = 0  # percent of traffic to the canary
    split: bool = False  # service router: the main Service selects every revision (replica-ratio weights)
    preview: str | None = None  # blue-green: the preview Service's revision
    matches: tuple[dict[str, str], ...] = ()  # A/B header matches that go to the canary
    ab: "ABSplit | None" = None  # an A/B test: users assigned by the stable revision's gateway


@dataclass(frozen=True)
class ABSplit:
    percent: int  # of users (0 while the challenger is not ready)
    header: str  # the sticky header; the OpenAI `user` field when it is absent


def service(owner: dict[str, Any], name: str, revision: str | None, split_hash: str | None = None) -> dict[str, Any]:
    selector = dict(selector_labels(owner["name"]))
    if revision:
        selector[LABEL_REVISION] = revision
    meta: dict[str, Any] = {"name": name, "namespace": owner["namespace"], "labels": common_labels(owner["name"])}
    if split_hash:
        meta["annotations"] = {ANNOTATION_SPLIT: split_hash}
    return finish({
        "apiVersion": "v1", "kind": "Service",
        "metadata": meta,
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


def split_config(owner: dict[str, Any], t: Traffic | None) -> dict[str, Any]:
    """The ConfigMap the stable revision's gateway reads (format: inference-image split.py);
    ``None``: an empty split, which ends a test."""
    doc: dict[str, Any] = {}
    if t is not None:
        assert t.ab is not None and t.stable and t.canary
        doc = {"stable": t.stable, "challenger": t.canary, "percent": t.ab.percent, "header": t.ab.header,
               "url": f"http://{t.canary}.{owner['namespace']}.svc:{HTTP_PORT}",
               "match": [dict(m) for m in t.matches]}
    return finish({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": split_config_map(owner["name"]), "namespace": owner["namespace"],
                     "labels": common_labels(owner["name"])},
        "data": {SPLIT_FILE: json.dumps(doc, sort_keys=True)},
    }, owner)


def objects(owner: dict[str, Any], spec: ModelDeploymentSpec, t: Traffic,
            split_applied: str | None = None) -> list[dict[str, Any]]:
    """The traffic objects, in the order to apply them. ``split_applied``: the applied hash of the
    split ConfigMap as recorded on the main Service (the operator cannot read ConfigMaps)."""
    name = owner["name"]
    out: list[dict[str, Any]] = []
    testing = bool(t.ab and t.stable and t.canary and (t.ab.percent or t.matches))
    # While a test runs: its split; after one: an empty split (the gateways see no split).
    split_map = split_config(owner, t if testing else None) if testing or split_applied is not None else None
    split_hash = split_map["metadata"]["annotations"][ANNOTATION_APPLIED] if split_map else None
    if split_map is not None and (testing or split_hash != split_applied):
        # Before the main Service, which records that it was applied. While a test runs it is
        # applied on every pass (a no-op for the API server when unchanged): the operator cannot
        # read ConfigMaps, so this is how a split deleted or edited by hand comes back.
        out.append(split_map)
    out.append(service(owner, name, None if t.split else t.stable or t.canary, split_hash))
    if t.preview:
        out.append(service(owner, name + PREVIEW_SUFFIX, t.preview))
    if spec.traffic.router == "gateway-api" or t.ab:
        for revision in dict.fromkeys(r for r in (t.stable, t.canary) if r):
            out.append(service(owner, revision, revision))
    if spec.traffic.router == "gateway-api":
        out.append(http_route(owner, spec, t))
    return out
