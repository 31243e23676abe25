"""Kubernetes I/O: observe a ModelDeployment's objects and execute plans.

Writes are server-side apply with our field manager, skipped when the object already
carries the applied hash of what we would send, so an idle resync writes nothing.
NotFound on delete and AlreadyExists are success: plans are safe to re-run.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from lightkube import Client
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap, Pod, Service
from lightkube.resources.core_v1 import Event as CoreEvent
from lightkube.types import CascadeType, PatchType

from modelops.domain.observed import Observed
from modelops.domain.spec import GROUP, PLURAL, VERSION
from modelops.planning.contract import Event, Owner, Plan, writes
from modelops.planning.engines.common import LABEL_DEPLOYMENT, MANAGED_BY

from . import cache
from .apiclient import ApiFailure, status_of
from .cache import Expectation, Snapshot

log = logging.getLogger(__name__)

# The custom resources as lightkube's generic resources: their objects are the JSON as the
# apiserver sent it (dicts, as kopf's watches give them to the cache), with no model classes.
ModelDeployment = create_namespaced_resource(GROUP, VERSION, "ModelDeployment", PLURAL)
HTTPRoute = create_namespaced_resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")
_APPLIED = {  # what the planner applies, by (apiVersion, kind)
    ("apps/v1", "Deployment"): Deployment,
    ("v1", "Service"): Service,
    ("v1", "ConfigMap"): ConfigMap,
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): HTTPRoute,
}


@dataclass
class ExecutionResult:
    applied: list[str]
    scaled: list[str]
    deleted: list[str]
    status_written: bool
    annotations_cleared: int = 0
    expectations: list[Expectation] = field(default_factory=list)  # what the watch must show next

    @property
    def writes(self) -> int:
        return (len(self.applied) + len(self.scaled) + len(self.deleted) + int(self.status_written)
                + int(self.annotations_cleared > 0))


class Kube:
    """A thin wrapper over one lightkube Client (kept in kopf's memo, never a global; see
    apiclient.connect). ``may_write`` is asked before every write (leader election: only the
    Lease's holder writes)."""

    def __init__(self, api: Client, field_manager: str = "modelops",
                 may_write: Callable[[], None] | None = None) -> None:
        self.api = api
        self.field_manager = field_manager
        self.may_write = may_write or (lambda: None)
        # How a plan's Events are handed over: posted here and now, unless the operator gives them
        # to its background EventRecorder (adapters/events.py).
        self.record: Callable[[Owner, Event], None] = self.event

    # ------------------------------------------------------------------ reading (the fallback)
    def read_fresh(self, namespace: str, name: str) -> Snapshot | None:
        """The ModelDeployment and its objects read from the API (a GET and LISTs), for the rare
        reconcile whose own writes the watch has not shown in time; normally the cache answers."""
        try:
            md = dict(self.api.get(ModelDeployment, name, namespace=namespace))
        except ApiFailure as exc:
            if status_of(exc) == 404:
                return None
            raise
        selector = {LABEL_DEPLOYMENT: name, "app.kubernetes.io/managed-by": MANAGED_BY}
        owned: dict[str, list[dict[str, Any]]] = {}
        for kind, res in (("Deployment", Deployment), ("Service", Service), ("Pod", Pod), ("HTTPRoute", HTTPRoute)):
            try:
                # The built-in kinds come as lightkube's models: to_dict() is their JSON again.
                owned[kind] = [obj.to_dict() for obj in self.api.list(res, namespace=namespace, labels=selector)]
            except ApiFailure as exc:
                if kind == "HTTPRoute" and status_of(exc) == 404:  # Gateway API not installed
                    continue
                raise
        return cache.fresh(md, owned)

    # ------------------------------------------------------------------ execute
    def execute(self, owner: Owner, plan: Plan, observed: Observed,
                expect: list[Expectation] | None = None) -> ExecutionResult:
        """Perform the plan's writes (planning.contract.writes decides which, and their order, for
        crash safety); NotFound on scale or delete is success: plans are safe to re-run. Each write
        is preceded by ``may_write`` and appends to ``expect`` what the watch must show next (also
        when a later write fails: the caller keeps the list)."""
        applied, scaled, deleted = [], [], []
        expect = [] if expect is None else expect
        ns = owner.namespace
        for w in writes(plan, observed):
            self.may_write()
            if w.kind == "annotations":
                body = self.api.patch(ModelDeployment, owner.name,
                                      {"metadata": {"annotations": {k: None for k in plan.clear_annotations}}},
                                      namespace=ns, patch_type=PatchType.MERGE)
                expect.append(Expectation("ModelDeployment", ns, owner.name, body["metadata"]["resourceVersion"]))
            elif w.kind == "status":
                assert plan.status is not None
                version = self.patch_status(owner, plan.status)
                expect.append(Expectation("ModelDeployment", ns, owner.name, version))
            elif w.kind == "apply":
                assert w.obj is not None
                version = self.apply(w.obj)
                applied.append(f"{w.obj['kind']}/{w.name}")
                expect.append(Expectation(w.obj["kind"], ns, w.name, version))
            elif w.kind == "scale":
                scale = self._tolerate_missing(lambda: self.api.patch(
                    Deployment.Scale, w.name, {"spec": {"replicas": w.replicas}}, namespace=ns,
                    patch_type=PatchType.MERGE))
                if scale is not None:
                    scaled.append(f"{w.name}={w.replicas}")
                    expect.append(Expectation("Deployment", ns, w.name, scale.metadata.resourceVersion))
            elif w.kind == "delete":
                kind = w.object_kind
                if self._tolerate_missing(lambda: self._delete(ns, kind, w.name)) is not None:
                    deleted.append(f"{kind}/{w.name}")
                expect.append(Expectation(kind, ns, w.name, None))
        for event in plan.events:
            self.record(owner, event)
        return ExecutionResult(applied, scaled, deleted, plan.status is not None, len(plan.clear_annotations),
                               expect)

    @staticmethod
    def _tolerate_missing(call: Any) -> Any:
        """The call's result; None when the object was already gone."""
        try:
            return call() or True
        except ApiFailure as exc:
            if status_of(exc) != 404:
                raise
            return None

    def _delete(self, namespace: str, kind: str, name: str) -> None:
        if kind == "Deployment":
            self.api.delete(Deployment, name, namespace=namespace, cascade=CascadeType.BACKGROUND)
        elif kind == "Service":
            self.api.delete(Service, name, namespace=namespace)
        elif kind == "HTTPRoute":
            self.api.delete(HTTPRoute, name, namespace=namespace)

    def apply(self, obj: dict[str, Any]) -> str | None:
        """Server-side apply; returns the object's resourceVersion after it."""
        self.may_write()
        meta = obj["metadata"]
        out = self.api.patch(_APPLIED[(obj["apiVersion"], obj["kind"])], meta["name"], obj,
                             namespace=meta["namespace"], patch_type=PatchType.APPLY,
                             field_manager=self.field_manager, force=True)
        return out.metadata.resourceVersion if out.metadata else None

    def patch_status(self, owner: Owner, status: dict[str, Any]) -> str:
        """Replace our status fields (merge patch; lists are replaced whole); returns the new resourceVersion."""
        self.may_write()
        body = {"status": merge_patch(owner.status or {}, status)}
        out = self.api.patch(ModelDeployment.Status, owner.name, body, namespace=owner.namespace,
                             patch_type=PatchType.MERGE)
        return out["metadata"]["resourceVersion"]

    def event(self, owner: Owner, event: Event) -> None:
        """Post one Event (best effort: an API error is logged, not raised)."""
        self.may_write()
        now = dt.datetime.now(dt.timezone.utc)
        body = CoreEvent(
            metadata=ObjectMeta(name=f"{owner.name}.{uuid.uuid4().hex[:12]}", namespace=owner.namespace),
            involvedObject=ObjectReference(
                apiVersion=f"{GROUP}/{VERSION}", kind="ModelDeployment", name=owner.name,
                namespace=owner.namespace, uid=owner.uid),
            reason=event.reason, message=event.message[:1024], type=event.type,
            firstTimestamp=now, lastTimestamp=now, count=1,
            source=EventSource(component="modelops-operator"),
            reportingComponent="modelops.dev/operator", reportingInstance="modelops-operator")
        try:
            self.api.create(body, namespace=owner.namespace)
        except ApiFailure as exc:  # events are best effort; never fail a reconcile over one
            log.warning("could not post event %s: %s", event.reason, exc.response.reason_phrase)


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) turning ``old`` into ``new``: removed keys become null,
    nested objects are diffed, lists are replaced whole.

    >>> merge_patch({"a": 1, "b": {"c": 1, "d": 2}}, {"b": {"c": 1}})
    {'a': None, 'b': {'d': None}}
    """
    out: dict[str, Any] = {k: None for k in old if k not in new}
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(old.get(k), dict):
            sub = merge_patch(old[k], v)
            if sub:
                out[k] = sub
        elif old.get(k) != v:
            out[k] = v
    return out
