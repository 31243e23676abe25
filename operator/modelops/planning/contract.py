"""The plan contract: what the planner is given about the object (``Owner``), what it asks for
(``Plan``), and the exact writes that turn a plan into cluster state (``writes``).

``writes`` is the one place that decides which writes a plan needs against what was observed,
and in which order. The executor (adapters/kube.py) performs them one by one; the unit model
of the cluster (tests/unit/operator/sim.py) performs the same list, so it can crash after any
single write exactly where the operator could.

Order, for crash safety (each prefix of the list leaves a state the next pass can continue from):
0. a Service or HTTPRoute that now sends users to a revision with no ready pod, and that the plan
   points only at ready pods (e.g. the stable was scaled to zero by hand mid-rollout): first, since
   it can only end an outage, and the next pass derives the same traffic again;
1. clear the command annotations (a crash then loses a command rather than doing it twice);
2. the status (the rollout's state: everything below is re-derived from it);
3. applies: the target's Deployment, then traffic objects (split ConfigMap, Services, HTTPRoute);
4. replica counts through the scale subresource, for every revision whose Deployment
   does not already have them (whatever wrote them last: us, ``kubectl scale``, a crash);
5. deletes.
Events are posted last and best effort. (A new ModelDeployment's first plan holds its Deployment
only: see planning/reconcile.py.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from modelops.domain.observed import Observed

ANNOTATION_PREFIX = "modelops.dev/"
COMMANDS = ("promote", "abort", "pause", "resume")
ANNOTATION_APPLIED = "modelops.dev/applied-hash"
LABEL_REVISION = "modelops.dev/revision"  # a revision's pods; a Service selects one by it, or all


@dataclass(frozen=True)
class Owner:
    name: str
    namespace: str
    uid: str
    generation: int
    spec: dict[str, Any]
    status: dict[str, Any]
    annotations: dict[str, str] = field(default_factory=dict)

    def ref(self) -> dict[str, str]:
        return {"name": self.name, "namespace": self.namespace, "uid": self.uid}

    def commands(self) -> dict[str, str]:
        """Manual control annotations present on the object (acted on once, then removed)."""
        return {c: self.annotations[ANNOTATION_PREFIX + c] for c in COMMANDS
                if ANNOTATION_PREFIX + c in self.annotations}


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str
    revision: str = ""  # the revision it is about, where there is one (a notification's subject)


@dataclass
class Plan:
    apply: list[dict[str, Any]] = field(default_factory=list)  # Deployments first, then traffic objects
    replicas: dict[str, int] = field(default_factory=dict)  # desired replicas of every revision Deployment
    delete: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)
    status: dict[str, Any] | None = None  # the whole new status, or None when unchanged
    events: list[Event] = field(default_factory=list)
    clear_annotations: list[str] = field(default_factory=list)
    requeue_after: float | None = None
    details: list[str] = field(default_factory=list)

    def wake_within(self, seconds: float) -> None:
        self.requeue_after = seconds if self.requeue_after is None else min(self.requeue_after, seconds)


@dataclass(frozen=True)
class Write:
    kind: Literal["annotations", "status", "apply", "scale", "delete"]
    name: str = ""
    obj: dict[str, Any] | None = None
    replicas: int = 0
    object_kind: str = ""  # for deletes


def _ends_an_outage(obj: dict[str, Any], observed: Observed) -> bool:
    """A Service or HTTPRoute that now sends users to a revision with no ready pod, planned to send
    them only where there are ready pods."""
    kind, name = obj["kind"], obj["metadata"]["name"]

    def ready(revision: str | None) -> int:
        if revision is None:  # the selector spans every revision
            return sum(r.ready for r in observed.revisions.values())
        state = observed.revisions.get(revision)
        return state.ready if state else 0

    def backend(service: str) -> int:  # ready pods behind a route's backend Service
        selected = observed.services.get(service)
        return ready(selected.revision) if selected else 0

    if kind == "Service" and name in observed.services:
        planned = (obj["spec"].get("selector") or {}).get(LABEL_REVISION)
        return ready(observed.services[name].revision) == 0 and ready(planned) > 0
    if kind == "HTTPRoute" and name in observed.route_weights:
        now = observed.route_weights[name]
        rules = obj["spec"].get("rules") or [{}]
        planned = {ref["name"]: ref.get("weight", 1) for ref in rules[-1].get("backendRefs") or []}
        starving = any(w > 0 and backend(svc) == 0 for svc, w in now.items())
        return starving and bool(planned) and all(backend(svc) > 0 for svc, w in planned.items() if w > 0)
    return False


def observed_hashes(observed: Observed) -> dict[tuple[str, str], str | None]:
    """The applied hash of every object we own, as observed (the split ConfigMap is not read:
    the planner decides when to write it)."""
    return {**{("Deployment", r.name): r.applied_hash for r in observed.revisions.values()},
            **{("Service", s.name): s.applied_hash for s in observed.services.values()},
            **{("HTTPRoute", n): h for n, h in observed.routes.items()}}


def writes(plan: Plan, observed: Observed) -> list[Write]:
    """The writes a plan needs, in the order they must happen (see the module docstring).

    An apply is skipped when the object already carries the applied hash of what we would send.
    A Deployment's hash does not cover ``spec.replicas``: replicas are converged separately,
    against the observed count, so a scale by anyone is corrected and a skipped apply never
    leaves a revision at the wrong size.
    """
    out: list[Write] = []
    current = observed_hashes(observed)
    rescues = [obj for obj in plan.apply if _ends_an_outage(obj, observed)
               and current.get((obj["kind"], obj["metadata"]["name"])) != obj["metadata"]["annotations"][
                   ANNOTATION_APPLIED]]
    rescues.sort(key=lambda obj: obj["kind"] != "HTTPRoute")  # the users' path first, where there is one
    out.extend(Write("apply", obj["metadata"]["name"], obj=obj) for obj in rescues)
    if plan.clear_annotations:
        out.append(Write("annotations"))
    if plan.status is not None:
        out.append(Write("status"))
    replicas = {name: r.replicas for name, r in observed.revisions.items()}
    for obj in plan.apply:
        key = (obj["kind"], obj["metadata"]["name"])
        if obj in rescues:
            continue
        if current.get(key) != obj["metadata"]["annotations"][ANNOTATION_APPLIED]:
            out.append(Write("apply", key[1], obj=obj))
            if key[0] == "Deployment":
                replicas[key[1]] = obj["spec"]["replicas"]
    for name, want in plan.replicas.items():
        if name in replicas and replicas[name] != want:
            out.append(Write("scale", name, replicas=want))
    for kind, name in plan.delete:
        out.append(Write("delete", name, object_kind=kind))
    return out
