"""Render a decision into the objects it needs: the target's Deployment, every revision's
replica count, the traffic objects, and what to delete. Pure.

Two rules keep traffic and capacity in the right order, whatever the decision:
- **traffic only to ready pods**: ``traffic.route`` gives no share to a revision without a
  ready pod while a wanted (or last-resort) revision has one;
- **traffic first, capacity after**: a revision with ready pods is scaled down only once the
  traffic objects the cluster shows are the ones rendered now (their applied hashes match), so
  no pod goes away while a Service or HTTPRoute may still send it requests; and a revision
  that serves as the last resort keeps its pods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelops.config import OperatorConfig
from modelops.domain.observed import Observed
from modelops.domain.spec import ModelDeploymentSpec

from . import resources, traffic
from .contract import ANNOTATION_APPLIED, observed_hashes
from .decide import Decision

SETTLE_REQUEUE = 1.0  # look again soon when a scale-down waits for traffic to move


@dataclass
class Rendered:
    apply: list[dict[str, Any]] = field(default_factory=list)
    replicas: dict[str, int] = field(default_factory=dict)
    delete: list[tuple[str, str]] = field(default_factory=list)
    requeue_after: float | None = None


def render(owner: dict[str, str], spec: ModelDeploymentSpec, config: OperatorConfig, target: str,
           metadata: tuple[str, int] | None, d: Decision, observed: Observed, keep: set[str]) -> Rendered:
    """``keep``: revisions the rollout still refers to (never pruned)."""
    out = Rendered()
    revisions = observed.revisions
    ready = {n: r.ready for n, r in revisions.items()}
    others_ready = any(r.ready > 0 for n, r in revisions.items() if n not in (d.traffic.stable, d.traffic.canary))
    routing = traffic.route(d.traffic, ready, spec.traffic.router, others_ready)
    objs = traffic.objects(owner, spec, routing, split_applied=observed.split_applied)

    replicas = dict(d.replicas)
    serving = {r for r, w in routing.shares.items() if w > 0} | ({routing.main} if not routing.split else set())
    stable_ready = revisions[d.traffic.stable].ready if d.traffic.stable in revisions else 0
    for name in serving & set(revisions):
        if replicas.get(name, 0) == 0:  # a last resort: it keeps the pods it has
            replicas[name] = revisions[name].replicas
        elif name != d.traffic.stable and stable_ready == 0:
            # it carries the stable's users too (the stable has no ready pod): not shrunk to its own
            # share meanwhile (a smaller autoscaled total, a step's size after a scale by hand)
            replicas[name] = max(replicas[name], revisions[name].replicas)
    current = observed_hashes(observed)
    settled = all(current.get((o["kind"], o["metadata"]["name"])) == o["metadata"]["annotations"][ANNOTATION_APPLIED]
                  for o in objs if o["kind"] != "ConfigMap")
    if not settled:
        for name, rev in revisions.items():
            if rev.ready > 0 and replicas.get(name, 0) < rev.replicas:
                replicas[name] = rev.replicas  # traffic first: scaled down next pass
                out.requeue_after = SETTLE_REQUEUE
    out.replicas = replicas

    if replicas.get(target, 0) > 0 or target in revisions:
        out.apply.append(resources.revision_deployment(owner, spec, config, target, replicas.get(target, 0),
                                                       metadata))
    out.apply.extend(objs)
    out.delete = _prune(owner["name"], spec, config, observed, replicas, keep | {target}, objs, settled)
    return out


def _prune(name: str, spec: ModelDeploymentSpec, config: OperatorConfig, observed: Observed,
           replicas: dict[str, int], keep: set[str], objs: list[dict[str, Any]], settled: bool) -> list[tuple[str, str]]:
    """Old revisions beyond the history limit (oldest first) once at zero; Services no object
    routes to any more (once traffic has moved); an HTTPRoute left by another router."""
    out: list[tuple[str, str]] = []
    old = sorted((r for n, r in observed.revisions.items() if n not in keep and r.replicas == 0
                  and replicas.get(n, 0) == 0), key=lambda r: r.created or "")
    for rev in old[: max(0, len(old) - config.revision_history)]:
        out.append(("Deployment", rev.name))
    if settled:
        wanted = {o["metadata"]["name"] for o in objs if o["kind"] == "Service"}
        out.extend(("Service", s) for s in observed.services if s not in wanted and s != name)
    if spec.traffic.router != "gateway-api" and name in observed.routes:
        out.append(("HTTPRoute", name))
    return out
