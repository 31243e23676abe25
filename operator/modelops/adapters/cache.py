"""Watch-fed state: what ``observe`` needs, kept current by kopf's watches, read with no request.

kopf lists and watches ModelDeployments and the objects we label (Deployments, Services,
HTTPRoutes, and Pods only for the scheduler's verdict), once per resource kind and watched
namespace; its indexing handlers feed this cache on every event (handlers/modeldeployment.py).
kopf holds every other handler until each indexed kind has been listed once, so the first
reconcile never sees a half-filled cache. Why kopf's watches and not a second informer: they
already reconnect from the last resourceVersion, re-list after a 410, back off on errors and
follow the namespace patterns the operator was given; a second set of watches would double
the connections and the memory.

Only what the planner reads is kept (a few fields per object, pods only while one cannot be
scheduled), so memory grows with the objects, not with their manifests.

Reads after our own writes: a reconcile records what each of its writes returned (the
object's new resourceVersion, or that it is gone) as *expectations*; the next reconcile of
that ModelDeployment waits until the watch has delivered them (``wait_settled``). A watch
delivers every change in order, and kopf may merge an object's rapid events into the newest, so
the test is "the version we wrote, or a newer one, was seen" (resourceVersions compare as
integers, KEP-5504); if none arrives in time (a broken watch), the caller reads the objects
from the API instead.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from modelops.domain.observed import Observed, RevisionState, ServiceState
from modelops.domain.timestamps import iso, parse
from modelops.planning.contract import ANNOTATION_APPLIED
from modelops.planning.engines.common import LABEL_DEPLOYMENT, LABEL_ENGINE, LABEL_REVISION
from modelops.planning.resources import ANNOTATION_MODEL, ANNOTATION_SOURCE
from modelops.planning.traffic import ANNOTATION_SPLIT

Key = tuple[str, str]  # (namespace, ModelDeployment name)
KINDS = ("ModelDeployment", "Deployment", "Service", "HTTPRoute", "Pod")
SEEN_VERSIONS = 16  # resourceVersions remembered per object: enough for a reconcile's writes to be found


@dataclass(frozen=True)
class Expectation:
    """One of our writes, as the watch must show it before the owner is read again."""

    kind: str
    namespace: str
    name: str
    resource_version: str | None  # None: we deleted it

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}@{self.resource_version or 'deleted'}"


@dataclass
class Snapshot:
    """A ModelDeployment and its objects, as one reconcile sees them."""

    body: dict[str, Any]
    observed: Observed


@dataclass
class _Owned:
    deployments: dict[str, RevisionState] = field(default_factory=dict)
    services: dict[str, tuple[ServiceState, str | None]] = field(default_factory=dict)  # (state, split hash)
    routes: dict[str, tuple[str | None, dict[str, int]]] = field(default_factory=dict)  # (hash, weights)
    unschedulable: dict[str, tuple[str, str]] = field(default_factory=dict)  # pod -> (revision, message)

    def empty(self) -> bool:
        return not (self.deployments or self.services or self.routes or self.unschedulable)


class Cache:
    def __init__(self) -> None:
        self._mds: dict[Key, dict[str, Any]] = {}
        self._owned: dict[Key, _Owned] = {}
        self._versions: dict[tuple[str, str, str], deque[str]] = {}
        self._present: set[tuple[str, str, str]] = set()
        self._expected: dict[Key, list[Expectation]] = {}
        self._changed: dict[Key, asyncio.Event] = {}
        self._dirty: set[Key] = set()
        self.updated_at: dict[str, float] = {}  # kind -> monotonic time of its last event

    # ------------------------------------------------------------------ feeding (event loop)
    def put(self, kind: str, body: Mapping[str, Any]) -> Key | None:
        """An object was listed, added or modified: keep what the planner reads. Returns the
        ModelDeployment it belongs to (None: not ours)."""
        meta = body.get("metadata") or {}
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        key = owner_key(kind, body)
        if key is None:
            return None
        self._seen(kind, ns, name, meta.get("resourceVersion"))
        if kind == "ModelDeployment":
            self._mds[key] = _slim_md(body)  # its own events always wake its worker
        else:
            owned = self._owned.setdefault(key, _Owned())
            table: dict[str, Any] = {"Deployment": owned.deployments, "Service": owned.services,
                                     "HTTPRoute": owned.routes, "Pod": owned.unschedulable}[kind]
            before = table.get(name)
            if kind == "Deployment":
                value: Any = revision_state(body)
            elif kind == "Service":
                value = service_state(body)
            elif kind == "HTTPRoute":
                value = route_state(body)
            else:
                value = unschedulable(body)
            if value is None and kind in ("Deployment", "Pod"):
                table.pop(name, None)  # not a revision's Deployment; a pod the scheduler placed
            else:
                table[name] = value
            if table.get(name) != before:
                self._dirty.add(key)  # something the planner reads changed: worth a reconcile
        self._touch(kind, key)
        return key

    def take_changed(self, key: Key) -> bool:
        """Whether what the planner reads of ``key`` changed since the last call (then: reconcile)."""
        if key in self._dirty:
            self._dirty.discard(key)
            return True
        return False

    def delete(self, kind: str, body: Mapping[str, Any]) -> Key | None:
        meta = body.get("metadata") or {}
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        key = owner_key(kind, body)
        if key is None:
            return None
        self._present.discard((kind, ns, name))
        self._versions.pop((kind, ns, name), None)
        if kind == "ModelDeployment":
            self._mds.pop(key, None)
            self._dirty.discard(key)
            self._expected.pop(key, None)
        elif key in self._owned:
            owned = self._owned[key]
            {"Deployment": owned.deployments, "Service": owned.services, "HTTPRoute": owned.routes,
             "Pod": owned.unschedulable}[kind].pop(name, None)
            if owned.empty():
                del self._owned[key]
            self._dirty.add(key)
        self._touch(kind, key)
        return key

    def _seen(self, kind: str, ns: str, name: str, version: str | None) -> None:
        self._present.add((kind, ns, name))
        if version:
            self._versions.setdefault((kind, ns, name), deque(maxlen=SEEN_VERSIONS)).append(version)

    def _touch(self, kind: str, key: Key) -> None:
        self.updated_at[kind] = time.monotonic()
        event = self._changed.get(key)
        if event is not None:
            event.set()

    # ------------------------------------------------------------------ our own writes
    def expect(self, key: Key, expectations: list[Expectation]) -> None:
        if expectations:
            self._expected.setdefault(key, []).extend(expectations)

    def unmet(self, key: Key) -> list[Expectation]:
        """The expectations of ``key`` the watch has not shown yet (the met ones are dropped)."""
        left = [e for e in self._expected.get(key, []) if not self._met(e)]
        if left:
            self._expected[key] = left
        else:
            self._expected.pop(key, None)
        return left

    def _met(self, e: Expectation) -> bool:
        if e.kind not in KINDS:
            return True  # not watched (e.g. the split ConfigMap): nothing to wait for
        ident = (e.kind, e.namespace, e.name)
        if e.resource_version is None:
            return ident not in self._present
        seen = self._versions.get(ident, ())
        if e.resource_version in seen:
            return True
        # kopf batches an object's rapid events and hands over only the newest, so the exact
        # version we wrote may never be seen: a newer one is as good. resourceVersions come from
        # etcd's revision and grow across the cluster; Kubernetes allows comparing them as
        # integers since 1.35 (KEP-5504). A version that is not an integer is only matched exactly.
        return any(_newer_or_same(v, e.resource_version) for v in seen)

    async def wait_settled(self, key: Key, timeout: float) -> list[Expectation]:
        """Wait until the watch has shown every write of ``key``'s last reconcile; returns what is
        still missing after ``timeout`` (empty: the cache is at least as new as our writes)."""
        deadline = time.monotonic() + timeout
        event = self._changed.setdefault(key, asyncio.Event())
        try:
            while left := self.unmet(key):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return left
                event.clear()
                try:
                    await asyncio.wait_for(event.wait(), timeout=remaining)
                except asyncio.TimeoutError:
                    pass
            return []
        finally:
            self._changed.pop(key, None)

    def forget_expectations(self, key: Key) -> None:
        self._expected.pop(key, None)

    def drop(self, key: Key) -> None:
        """Forget a ModelDeployment and what it owns (it is gone, though no watch said so: e.g. its
        namespace was deleted and the namespace's watches stopped first)."""
        self._mds.pop(key, None)
        self._owned.pop(key, None)
        self._expected.pop(key, None)
        self._dirty.discard(key)

    # ------------------------------------------------------------------ reading
    def snapshot(self, key: Key) -> Snapshot | None:
        """The ModelDeployment and what it owns (None: it is not in the cache, i.e. gone). Copies:
        the reconcile runs in a thread while events keep arriving."""
        body = self._mds.get(key)
        if body is None:
            return None
        return Snapshot(body=copy.deepcopy(body), observed=self.observed(key))

    def observed(self, key: Key) -> Observed:
        owned = self._owned.get(key) or _Owned()
        revisions = {state.name: state for state in owned.deployments.values()}  # by revision label
        pending = {r for r, s in revisions.items() if s.ready < s.replicas}
        for pod in sorted(owned.unschedulable):
            rev, message = owned.unschedulable[pod]
            if rev in pending and not revisions[rev].unschedulable:
                revisions[rev] = replace(revisions[rev], unschedulable=message)
        services = {n: s for n, (s, _) in owned.services.items()}
        split = owned.services.get(key[1], (None, None))[1]
        return Observed(revisions=revisions, services=services,
                        routes={n: h for n, (h, _) in owned.routes.items()},
                        route_weights={n: w for n, (_, w) in owned.routes.items()}, split_applied=split)

    def keys(self) -> list[Key]:
        return list(self._mds)

    def has(self, key: Key) -> bool:
        return key in self._mds

    def sizes(self) -> dict[str, int]:
        owned = list(self._owned.values())
        return {"ModelDeployment": len(self._mds),
                "Deployment": sum(len(o.deployments) for o in owned),
                "Service": sum(len(o.services) for o in owned),
                "HTTPRoute": sum(len(o.routes) for o in owned),
                "Pod": sum(len(o.unschedulable) for o in owned)}


# ---------------------------------------------------------------------- parsing (pure)
def _newer_or_same(seen: str, wrote: str) -> bool:
    """
    >>> _newer_or_same("4690", "4687"), _newer_or_same("4686", "4687"), _newer_or_same("x", "4687")
    (True, False, False)
    """
    return seen.isdigit() and wrote.isdigit() and int(seen) >= int(wrote)


def owner_key(kind: str, body: Mapping[str, Any]) -> Key | None:
    """The ModelDeployment an object belongs to: itself, or the one its label names (None: not ours)."""
    meta = body.get("metadata") or {}
    namespace = meta.get("namespace", "")
    if kind == "ModelDeployment":
        return namespace, meta.get("name", "")
    owner = (meta.get("labels") or {}).get(LABEL_DEPLOYMENT)
    return (namespace, owner) if owner else None


def _slim_md(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    keep = ("name", "namespace", "uid", "generation", "resourceVersion", "annotations", "deletionTimestamp")
    return {"metadata": {k: meta[k] for k in keep if k in meta}, "spec": body.get("spec") or {},
            "status": body.get("status") or {}}


def revision_state(body: Mapping[str, Any]) -> RevisionState | None:
    """A revision's Deployment (None: not a revision's)."""
    meta = body.get("metadata") or {}
    rev = (meta.get("labels") or {}).get(LABEL_REVISION)
    if not rev:
        return None
    ann = meta.get("annotations") or {}
    spec, st = body.get("spec") or {}, body.get("status") or {}
    template = spec.get("template") or {}
    engine = next((c for c in (template.get("spec") or {}).get("containers") or [] if c.get("name") == "engine"), {})
    created = parse(meta.get("creationTimestamp")) if meta.get("creationTimestamp") else None
    return RevisionState(
        name=rev, replicas=spec.get("replicas") or 0, ready=st.get("readyReplicas") or 0,
        available=st.get("availableReplicas") or 0, updated=st.get("updatedReplicas") or 0,
        available_condition=any(c.get("type") == "Available" and c.get("status") == "True"
                                for c in st.get("conditions") or []),
        created=iso(created) if created else None,
        applied_hash=ann.get(ANNOTATION_APPLIED), model=ann.get(ANNOTATION_MODEL, ""),
        source=ann.get(ANNOTATION_SOURCE, ""), engine=((template.get("metadata") or {}).get("labels") or {}).get(
            LABEL_ENGINE, ""), image=engine.get("image", ""))


def service_state(body: Mapping[str, Any]) -> tuple[ServiceState, str | None]:
    """A Service we own, and the A/B split hash the main Service records (the split ConfigMap is
    never read: the operator may write ConfigMaps, not read them)."""
    meta = body.get("metadata") or {}
    ann = meta.get("annotations") or {}
    state = ServiceState(name=meta.get("name", ""), revision=((body.get("spec") or {}).get("selector") or {}).get(
        LABEL_REVISION), applied_hash=ann.get(ANNOTATION_APPLIED))
    return state, ann.get(ANNOTATION_SPLIT)


def route_state(body: Mapping[str, Any]) -> tuple[str | None, dict[str, int]]:
    """An HTTPRoute's applied hash, and the weights of its default (last) rule's backends."""
    rules = (body.get("spec") or {}).get("rules") or [{}]
    weights = {ref.get("name", ""): int(ref.get("weight", 1)) for ref in rules[-1].get("backendRefs") or []}
    return ((body.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_APPLIED), weights


def unschedulable(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(revision, the scheduler's message) for a pod that cannot be placed, else None."""
    rev = ((body.get("metadata") or {}).get("labels") or {}).get(LABEL_REVISION)
    if not rev:
        return None
    for c in (body.get("status") or {}).get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
            return rev, c.get("message") or "Unschedulable"
    return None


def fresh(md: Mapping[str, Any], owned: Mapping[str, list[Mapping[str, Any]]]) -> Snapshot | None:
    """A snapshot built from objects just read from the API (the fallback when the watch lags)."""
    cache = Cache()
    key = cache.put("ModelDeployment", md)
    for kind, items in owned.items():
        for item in items:
            cache.put(kind, item)
    return cache.snapshot(key) if key else None
