"""Kubernetes I/O: observe a ModelDeployment's objects and execute plans.

Writes are server-side apply with our field manager, skipped when the object already
carries the applied hash of what we would send, so an idle resync writes nothing.
NotFound on delete and AlreadyExists are success: plans are safe to re-run.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from kubernetes import client
from kubernetes.client.rest import ApiException

from modelops.domain.observed import Observed
from modelops.domain.spec import GROUP, PLURAL, VERSION
from modelops.planning.contract import Event, Owner, Plan, writes
from modelops.planning.engines.common import LABEL_DEPLOYMENT, MANAGED_BY

from . import cache
from .cache import Expectation, Snapshot

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
    expectations: list[Expectation] = field(default_factory=list)  # what the watch must show next

    @property
    def writes(self) -> int:
        return (len(self.applied) + len(self.scaled) + len(self.deleted) + int(self.status_written)
                + int(self.annotations_cleared > 0))


class TimeoutApiClient(client.ApiClient):
    """An ApiClient whose every request has a timeout: the generated client has none by default,
    so one hung connection would hold a reconcile (and its worker slot) for ever."""

    def __init__(self, configuration: client.Configuration | None = None, *, timeout: float = 30.0,
                 user_agent: str | None = None) -> None:
        super().__init__(configuration)
        self.timeout = timeout
        if user_agent:
            self.user_agent = user_agent

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("_request_timeout") is None:
            kwargs["_request_timeout"] = self.timeout
        return super().call_api(*args, **kwargs)


class Kube:
    """A thin wrapper over one ApiClient (kept in kopf's memo, never a global). ``may_write`` is
    asked before every write (leader election: only the Lease's holder writes)."""

    def __init__(self, api: client.ApiClient, field_manager: str = "modelops",
                 may_write: Callable[[], None] | None = None) -> None:
        self.api = api
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
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
            md = self._json(self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                                     _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        selector = f"{LABEL_DEPLOYMENT}={name},app.kubernetes.io/managed-by={MANAGED_BY}"
        lists = {
            "Deployment": lambda: self.apps.list_namespaced_deployment(namespace, label_selector=selector,
                                                                       _preload_content=False),
            "Service": lambda: self.core.list_namespaced_service(namespace, label_selector=selector,
                                                                 _preload_content=False),
            "Pod": lambda: self.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False),
            "HTTPRoute": lambda: self.custom.list_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", namespace, "httproutes", label_selector=selector,
                _preload_content=False),
        }
        owned: dict[str, list[dict[str, Any]]] = {}
        for kind, call in lists.items():
            try:
                owned[kind] = self._json(call())["items"]
            except ApiException as exc:
                if kind == "HTTPRoute" and exc.status == 404:  # Gateway API not installed
                    continue
                raise
        return cache.fresh(md, owned)

    @staticmethod
    def _json(resp: Any) -> dict[str, Any]:
        return json.loads(resp.data)

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
                body = self.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, ns, PLURAL, owner.name,
                    {"metadata": {"annotations": {k: None for k in plan.clear_annotations}}},
                    _content_type=MERGE_PATCH)
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
                scale = self._tolerate_missing(lambda: self.apps.patch_namespaced_deployment_scale(
                    w.name, ns, {"spec": {"replicas": w.replicas}}, _content_type=MERGE_PATCH))
                if scale is not None:
                    scaled.append(f"{w.name}={w.replicas}")
                    expect.append(Expectation("Deployment", ns, w.name, scale.metadata.resource_version))
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
        except ApiException as exc:
            if exc.status != 404:
                raise
            return None

    def _delete(self, namespace: str, kind: str, name: str) -> None:
        if kind == "Deployment":
            self.apps.delete_namespaced_deployment(name, namespace, propagation_policy="Background")
        elif kind == "Service":
            self.core.delete_namespaced_service(name, namespace)
        elif kind == "HTTPRoute":
            self.custom.delete_namespaced_custom_object("gateway.networking.k8s.io", "v1", namespace, "httproutes", name)

    def apply(self, obj: dict[str, Any]) -> str | None:
        """Server-side apply; returns the object's resourceVersion after it."""
        self.may_write()
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
        return (json.loads(resp.data).get("metadata") or {}).get("resourceVersion")

    def patch_status(self, owner: Owner, status: dict[str, Any]) -> str:
        """Replace our status fields (merge patch; lists are replaced whole); returns the new resourceVersion."""
        self.may_write()
        body = {"status": merge_patch(owner.status or {}, status)}
        out = self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, owner.namespace, PLURAL, owner.name,
                                                                body, _content_type=MERGE_PATCH)
        return out["metadata"]["resourceVersion"]

    def event(self, owner: Owner, event: Event) -> None:
        """Post one Event (best effort: an API error is logged, not raised)."""
        self.may_write()
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
            # Raw answer, read and dropped: deserializing it into a model would cost more than the request.
            self.core.create_namespaced_event(owner.namespace, body, _preload_content=False).data
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
