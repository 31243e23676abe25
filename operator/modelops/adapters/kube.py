"""Kubernetes I/O: observe a ModelDeployment's objects and execute plans.

Writes are server-side apply with our field manager, skipped when the object already
carries the applied hash of what we would send, so an idle resync writes nothing.
NotFound on delete and AlreadyExists are success: plans are safe to re-run.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass, replace
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from modelops.domain.observed import Observed, RevisionState, ServiceState
from modelops.domain.spec import GROUP, PLURAL, VERSION
from modelops.domain.timestamps import iso
from modelops.planning.engines.common import LABEL_DEPLOYMENT, LABEL_ENGINE, LABEL_REVISION, MANAGED_BY
from modelops.planning.contract import ANNOTATION_APPLIED, Event, Owner, Plan, writes
from modelops.planning.resources import ANNOTATION_MODEL, ANNOTATION_SOURCE
from modelops.planning.traffic import ANNOTATION_SPLIT

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
_PATHS = {
    ("apps/v1", "Deployment"): "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
    ("v1", "Service"): "/api/v1/namespaces/{ns}/services/{name}",
    ("v1", "ConfigMap"): "/api/v1/namespaces/{ns}/configmaps/{name}",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/httproutes/{name}",
}


@dataclass
class ExecutionResult:
    applied: list[str]
    scaled: list[str]
    deleted: list[str]
    status_written: bool
    annotations_cleared: int = 0

    @property
    def writes(self) -> int:
        return (len(self.applied) + len(self.scaled) + len(self.deleted) + int(self.status_written)
                + int(self.annotations_cleared > 0))


class Kube:
    """A thin wrapper over one ApiClient (kept in kopf's memo, never a global)."""

    def __init__(self, api: client.ApiClient, field_manager: str = "modelops") -> None:
        self.api = api
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.field_manager = field_manager
        self.routes_supported: bool | None = None

    # ------------------------------------------------------------------ observe
    def observe(self, namespace: str, name: str) -> Observed:
        selector = f"{LABEL_DEPLOYMENT}={name},app.kubernetes.io/managed-by={MANAGED_BY}"
        deployments = self.apps.list_namespaced_deployment(namespace, label_selector=selector).items
        revisions: dict[str, RevisionState] = {}
        pending: set[str] = set()
        for d in deployments:
            rev = (d.metadata.labels or {}).get(LABEL_REVISION)
            if not rev:
                continue
            ann = d.metadata.annotations or {}
            containers = d.spec.template.spec.containers or []
            engine = next((c for c in containers if c.name == "engine"), None)
            st = d.status
            available = any(c.type == "Available" and c.status == "True" for c in (st.conditions or []))
            revisions[rev] = RevisionState(
                name=rev, replicas=d.spec.replicas or 0, ready=st.ready_replicas or 0,
                available=st.available_replicas or 0, updated=st.updated_replicas or 0,
                available_condition=available,
                created=iso(d.metadata.creation_timestamp)
                if d.metadata.creation_timestamp else None,
                applied_hash=ann.get(ANNOTATION_APPLIED), model=ann.get(ANNOTATION_MODEL, ""),
                source=ann.get(ANNOTATION_SOURCE, ""),
                engine=(d.spec.template.metadata.labels or {}).get(LABEL_ENGINE, ""),
                image=engine.image if engine else "")
            if (st.ready_replicas or 0) < (d.spec.replicas or 0):
                pending.add(rev)
        if pending:
            revisions = self._with_unschedulable(namespace, name, revisions, pending)
        services = {}
        split_applied = None
        for s in self.core.list_namespaced_service(namespace, label_selector=selector).items:
            ann = s.metadata.annotations or {}
            services[s.metadata.name] = ServiceState(
                name=s.metadata.name, revision=(s.spec.selector or {}).get(LABEL_REVISION),
                applied_hash=ann.get(ANNOTATION_APPLIED))
            if s.metadata.name == name and ANNOTATION_SPLIT in ann:
                # The A/B split ConfigMap is never read (the operator may write ConfigMaps, not read
                # them): the main Service records the applied hash of the split applied before it.
                split_applied = ann[ANNOTATION_SPLIT]
        return Observed(revisions=revisions, services=services, routes=self._routes(namespace, selector),
                        split_applied=split_applied)

    def _routes(self, namespace: str, selector: str) -> dict[str, str | None]:
        if self.routes_supported is False:
            return {}
        try:
            items = self.custom.list_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", namespace, "httproutes", label_selector=selector)["items"]
        except ApiException as exc:
            if exc.status == 404:  # Gateway API not installed: the service router still works
                self.routes_supported = False
                return {}
            raise
        self.routes_supported = True
        return {r["metadata"]["name"]: (r["metadata"].get("annotations") or {}).get(ANNOTATION_APPLIED)
                for r in items}

    def _with_unschedulable(self, namespace: str, name: str, revisions: dict[str, RevisionState],
                            pending: set[str]) -> dict[str, RevisionState]:
        """Read the scheduler's verdict on pods of revisions that are not fully ready."""
        pods = self.core.list_namespaced_pod(namespace, label_selector=f"{LABEL_DEPLOYMENT}={name}").items
        out = dict(revisions)
        for pod in pods:
            rev = (pod.metadata.labels or {}).get(LABEL_REVISION)
            if rev not in pending or rev not in out or out[rev].unschedulable:
                continue
            for c in pod.status.conditions or []:
                if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable":
                    out[rev] = replace(out[rev], unschedulable=c.message or "Unschedulable")
        return out

    # ------------------------------------------------------------------ execute
    def execute(self, owner: Owner, plan: Plan, observed: Observed) -> ExecutionResult:
        """Perform the plan's writes (planning.contract.writes decides which, and their order, for
        crash safety); NotFound on scale or delete is success: plans are safe to re-run."""
        applied, scaled, deleted = [], [], []
        for w in writes(plan, observed):
            if w.kind == "annotations":
                self.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, owner.namespace, PLURAL, owner.name,
                    {"metadata": {"annotations": {k: None for k in plan.clear_annotations}}},
                    _content_type=MERGE_PATCH)
            elif w.kind == "status":
                assert plan.status is not None
                self.patch_status(owner, plan.status)
            elif w.kind == "apply":
                assert w.obj is not None
                self.apply(w.obj)
                applied.append(f"{w.obj['kind']}/{w.name}")
            elif w.kind == "scale":
                if self._tolerate_missing(lambda: self.apps.patch_namespaced_deployment_scale(
                        w.name, owner.namespace, {"spec": {"replicas": w.replicas}}, _content_type=MERGE_PATCH)):
                    scaled.append(f"{w.name}={w.replicas}")
            elif w.kind == "delete" and self._tolerate_missing(lambda: self._delete(owner.namespace, w.object_kind,
                                                                                    w.name)):
                deleted.append(f"{w.object_kind}/{w.name}")
        for event in plan.events:
            self.event(owner, event)
        return ExecutionResult(applied, scaled, deleted, plan.status is not None, len(plan.clear_annotations))

    @staticmethod
    def _tolerate_missing(call: Any) -> bool:
        try:
            call()
            return True
        except ApiException as exc:
            if exc.status != 404:
                raise
            return False

    def _delete(self, namespace: str, kind: str, name: str) -> None:
        if kind == "Deployment":
            self.apps.delete_namespaced_deployment(name, namespace, propagation_policy="Background")
        elif kind == "Service":
            self.core.delete_namespaced_service(name, namespace)
        elif kind == "HTTPRoute":
            self.custom.delete_namespaced_custom_object("gateway.networking.k8s.io", "v1", namespace, "httproutes", name)

    def apply(self, obj: dict[str, Any]) -> None:
        path = _PATHS[(obj["apiVersion"], obj["kind"])].format(ns=obj["metadata"]["namespace"],
                                                                 name=obj["metadata"]["name"])
        method, url, headers, body, post = self.api.param_serialize(
            method="PATCH", resource_path=path, body=obj,
            query_params=[("fieldManager", self.field_manager), ("force", "true")],
            header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
            auth_settings=["BearerToken"])
        resp = self.api.call_api(method, url, header_params=headers, body=body, post_params=post)
        resp.read()
        if resp.status >= 400:
            raise ApiException(status=resp.status, reason=resp.reason, body=resp.data.decode(errors="replace"))

    def patch_status(self, owner: Owner, status: dict[str, Any]) -> None:
        """Replace our status fields (merge patch; lists are replaced whole)."""
        body = {"status": merge_patch(owner.status or {}, status)}
        self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, owner.namespace, PLURAL, owner.name, body,
                                                          _content_type=MERGE_PATCH)

    def event(self, owner: Owner, event: Event) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(name=f"{owner.name}.{uuid.uuid4().hex[:12]}", namespace=owner.namespace),
            involved_object=client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}", kind="ModelDeployment", name=owner.name,
                namespace=owner.namespace, uid=owner.uid),
            reason=event.reason, message=event.message[:1024], type=event.type,
            first_timestamp=now, last_timestamp=now, count=1,
            source=client.V1EventSource(component="modelops-operator"),
            reporting_component="modelops.dev/operator", reporting_instance="modelops-operator")
        try:
            self.core.create_namespaced_event(owner.namespace, body)
        except ApiException as exc:  # events are best effort; never fail a reconcile over one
            log.warning("could not post event %s: %s", event.reason, exc.reason)


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
