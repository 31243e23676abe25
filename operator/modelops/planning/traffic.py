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
- Mirror steps (shadow traffic, either router): users stay on the stable revision; the same
  ConfigMap tells its gateway to copy a share of requests to the new revision's Service and
  discard the answers (``{"stable": …, "mirror": {"revision": …, "url": …, "percent": 20}}``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from modelops.domain.spec import ModelDeploymentSpec

from .engines.common import LABEL_REVISION, SPLIT_FILE, common_labels, selector_labels, split_config_map
from .contract import ANNOTATION_APPLIED
from .resources import finish

PREVIEW_SUFFIX = "-preview"
ANNOTATION_SPLIT = "modelops.dev/split-applied"  # on the main Service: the split ConfigMap's applied hash
SPLIT_WRITING = "writing"  # ... while a new split is being written
HTTP_PORT = 80


@dataclass(frozen=True)
class Traffic:
    """Where users' traffic should go (the decision; ``route`` applies pod readiness to it)."""

    stable: str | None  # the revision the main Service serves (None: nothing may serve yet)
    canary: str | None = None  # the revision being rolled out (it gets a Service of its own)
    weight: int = 0  # percent of traffic to the canary
    preview: str | None = None  # blue-green: the preview Service's revision
    matches: tuple[dict[str, str], ...] = ()  # A/B header matches that go to the canary
    ab: "ABSplit | None" = None  # an A/B test: users assigned by the stable revision's gateway
    fallback: tuple[str, ...] = ()  # may serve as a last resort while the wanted revisions have no ready pod
    canary_service: bool = False  # the canary needs its own Service (golden prompts, A/B forwards)
    mirror: int = 0  # a mirror step: percent of the stable's requests copied to the canary (users get none)


@dataclass(frozen=True)
class ABSplit:
    percent: int  # of users (0 while the challenger is not ready)
    header: str  # the sticky header; the OpenAI `user` field when it is absent


NOTHING = "none"  # a revision label no revision has: a Service that selects no pod yet


@dataclass(frozen=True)
class Routing:
    """What the router objects say, after readiness: no share goes to a revision without ready pods
    while another wanted (or fallback) revision has some."""

    shares: dict[str, int]  # revision -> weight (HTTPRoute backendRefs; the main Service's selection)
    split: bool = False  # service router: the main Service selects every revision (shares follow pods)
    preview: str | None = None
    matches: tuple[dict[str, str], ...] = ()
    challenger: str | None = None  # header matches and the A/B split go there
    ab: ABSplit | None = None
    services: tuple[str, ...] = ()  # per-revision Services
    mirror: int = 0  # percent of the stable gateway's requests copied to ``challenger`` (shadow traffic)

    @property
    def main(self) -> str:
        """The revision the main Service selects (the largest share; NOTHING before any may serve)."""
        live = [r for r, w in self.shares.items() if w > 0]
        return max(live, key=lambda r: self.shares[r]) if live else NOTHING


def route(t: Traffic, ready: dict[str, int], router: str, others_ready: bool) -> Routing:
    """Apply readiness to a decision.

    >>> route(Traffic(stable="a", canary="b", weight=10), {"a": 2, "b": 0}, "gateway-api", False).shares
    {'a': 90, 'b': 0}
    >>> route(Traffic(stable="a", canary="b", weight=10), {"a": 0, "b": 1}, "gateway-api", False).shares
    {'a': 0, 'b': 10}
    >>> route(Traffic(stable="a", fallback=("b",)), {"a": 0, "b": 1}, "service", False).main
    'b'
    """
    wanted: dict[str, int] = {}
    if t.stable:
        wanted[t.stable] = 100 - (t.weight if t.canary else 0)
    if t.canary and t.weight:
        wanted[t.canary] = t.weight
    live = {r: w for r, w in wanted.items() if w > 0 and ready.get(r, 0) > 0}
    if not live:
        last_resort = next((r for r in t.fallback if ready.get(r, 0) > 0), None)
        # nothing wanted is ready: a revision that served before, else as wanted (nothing to protect)
        live = {last_resort: 100} if last_resort else {r: w for r, w in wanted.items() if w > 0}
    shares = {r: live.get(r, 0) for r in dict.fromkeys(r for r in (*wanted, t.canary, *live) if r)}
    split = router != "gateway-api" and not t.ab and sum(1 for w in live.values() if w > 0) > 1 and not others_ready
    challenger = t.canary if t.canary and ready.get(t.canary, 0) > 0 and t.stable in live else None
    ab = t.ab if t.ab and challenger else None
    if router == "gateway-api":  # every backend is a per-revision Service
        services = tuple(dict.fromkeys(r for r in (*shares, *live) if r))
    else:
        services = (t.canary,) if t.canary and (t.canary_service or t.ab or t.mirror) else ()
    return Routing(shares=shares, split=split, preview=t.preview,
                   matches=t.matches if challenger else (), challenger=challenger, ab=ab, services=services,
                   mirror=t.mirror if challenger else 0)


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


def http_route(owner: dict[str, Any], spec: ModelDeploymentSpec, r: Routing) -> dict[str, Any]:
    gw = spec.traffic.gateway
    assert gw is not None  # the CRD requires it for the gateway-api router

    def ref(revision: str, weight: int) -> dict[str, Any]:
        return {"group": "", "kind": "Service", "name": revision, "port": HTTP_PORT, "weight": weight}

    rules: list[dict[str, Any]] = []
    if r.challenger and r.matches:
        rules.append({"matches": [{"headers": [{"type": "Exact", "name": k, "value": v} for k, v in sorted(m.items())]}
                                  for m in r.matches],
                      "backendRefs": [ref(r.challenger, 1)]})
    rules.append({"backendRefs": [ref(rev, w) for rev, w in r.shares.items()]})
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


def split_config(owner: dict[str, Any], r: Routing | None) -> dict[str, Any]:
    """The ConfigMap the stable revision's gateway reads (format: inference-image split.py);
    ``None``: an empty split, which ends a test."""
    doc: dict[str, Any] = {}
    if r is not None and r.ab is not None:
        assert r.challenger
        doc = {"stable": r.main, "challenger": r.challenger, "percent": r.ab.percent, "header": r.ab.header,
               "url": f"http://{r.challenger}.{owner['namespace']}.svc:{HTTP_PORT}",
               "match": [dict(m) for m in r.matches]}
    if r is not None and r.mirror and r.challenger:
        doc.update(stable=r.main, mirror={"revision": r.challenger, "percent": r.mirror,
                                          "url": f"http://{r.challenger}.{owner['namespace']}.svc:{HTTP_PORT}"})
    return finish({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": split_config_map(owner["name"]), "namespace": owner["namespace"],
                     "labels": common_labels(owner["name"])},
        "data": {SPLIT_FILE: json.dumps(doc, sort_keys=True)},
    }, owner)


def objects(owner: dict[str, Any], spec: ModelDeploymentSpec, r: Routing,
            split_applied: str | None = None) -> list[dict[str, Any]]:
    """The traffic objects, in the order to apply them. ``split_applied``: the applied hash of the
    split ConfigMap as recorded on the main Service (the operator cannot read ConfigMaps)."""
    name = owner["name"]
    out: list[dict[str, Any]] = []
    testing = bool(r.ab and (r.ab.percent or r.matches)) or bool(r.mirror)
    # While a test runs: its split; otherwise an empty split (the gateways see no split).
    split_map = split_config(owner, r if testing else None)
    split_hash = split_map["metadata"]["annotations"][ANNOTATION_APPLIED]
    main = None if r.split else r.main
    changing = split_hash != split_applied
    if changing and split_applied is not None:
        # The main Service records which split the ConfigMap holds. Mark it "being written" first:
        # killed between the ConfigMap and the Service, the next pass must not believe an older record
        # (a test's split left behind would keep sending users to a revision that is gone). With no
        # record yet there is nothing to believe: the split is written until one exists.
        out.append(service(owner, name, main, SPLIT_WRITING))
    if testing or changing:
        # While a test runs it is applied on every pass (a no-op for the API server when unchanged):
        # the operator cannot read ConfigMaps, so this is how a split deleted or edited by hand comes back.
        out.append(split_map)
    out.append(service(owner, name, main, split_hash))
    if r.preview:
        out.append(service(owner, name + PREVIEW_SUFFIX, r.preview))
    for revision in r.services:
        out.append(service(owner, revision, revision))
    if spec.traffic.router == "gateway-api":
        out.append(http_route(owner, spec, r))
    return out
