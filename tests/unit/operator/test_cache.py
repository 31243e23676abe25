"""The watch-fed cache: what it keeps from real object shapes, what ``observe`` builds from it, and
the expectations that keep a reconcile from planning on a cache older than its own writes."""

from __future__ import annotations

import asyncio

import pytest

from modelops.adapters.cache import Cache, Expectation, fresh, owner_key, revision_state

pytestmark = pytest.mark.unit

LABELS = {"app.kubernetes.io/managed-by": "modelops", "modelops.dev/deployment": "chat"}


def md(rv: str = "1", status: dict | None = None) -> dict:
    return {"apiVersion": "modelops.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "chat", "namespace": "ml", "uid": "u-1", "generation": 2, "resourceVersion": rv,
                         "annotations": {"modelops.dev/promote": ""}, "managedFields": [{"big": "x" * 100}]},
            "spec": {"replicas": 2}, "status": status or {"phase": "Healthy"}}


def deployment(rev: str = "chat-aaaa", replicas: int = 2, ready: int = 2, rv: str = "10") -> dict:
    """The shape the apiserver sends (camelCase, status written by the Deployment controller)."""
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": rev, "namespace": "ml", "resourceVersion": rv,
                         "creationTimestamp": "2026-12-01T10:00:00Z",
                         "labels": {**LABELS, "modelops.dev/revision": rev},
                         "annotations": {"modelops.dev/applied-hash": "h1", "modelops.dev/model": "gemma",
                                         "modelops.dev/source": "gs://m/g/"}},
            "spec": {"replicas": replicas, "template": {
                "metadata": {"labels": {"modelops.dev/engine": "vllm"}},
                "spec": {"containers": [{"name": "gateway", "image": "gw:1"}, {"name": "engine", "image": "vllm:1"}]}}},
            "status": {"replicas": replicas, "readyReplicas": ready, "availableReplicas": ready,
                       "updatedReplicas": replicas,
                       "conditions": [{"type": "Available", "status": "True" if ready >= replicas else "False"}]}}


def service(name: str = "chat", rev: str = "chat-aaaa", split: str | None = None, rv: str = "20") -> dict:
    ann = {"modelops.dev/applied-hash": "s1", **({"modelops.dev/split-applied": split} if split else {})}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "ml", "resourceVersion": rv, "labels": LABELS, "annotations": ann},
            "spec": {"selector": {"modelops.dev/deployment": "chat", "modelops.dev/revision": rev}}}


def pod(name: str, rev: str, unschedulable: str | None = None) -> dict:
    conditions = ([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable}]
                  if unschedulable else [{"type": "PodScheduled", "status": "True"}])
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ml", "resourceVersion": "30",
                         "labels": {**LABELS, "modelops.dev/revision": rev}},
            "status": {"conditions": conditions}}


def test_a_deployment_is_read_as_the_planner_sees_a_revision() -> None:
    state = revision_state(deployment(ready=1))
    assert state is not None
    assert (state.name, state.replicas, state.ready, state.available, state.updated) == ("chat-aaaa", 2, 1, 1, 2)
    assert (state.available_condition, state.created, state.applied_hash) == (False, "2026-12-01T10:00:00Z", "h1")
    assert (state.model, state.source, state.engine, state.image) == ("gemma", "gs://m/g/", "vllm", "vllm:1")
    assert revision_state({"metadata": {"labels": LABELS}}) is None  # not a revision's Deployment


def test_the_split_ConfigMap_is_never_read_the_main_Service_records_its_hash() -> None:
    # The annotation name is the planner's own constant; the Service carries it.
    from modelops.planning.traffic import ANNOTATION_SPLIT

    cache = Cache()
    cache.put("ModelDeployment", md())
    body = service()
    body["metadata"]["annotations"][ANNOTATION_SPLIT] = "split-hash"
    cache.put("Service", body)
    cache.put("Service", service(name="chat-aaaa"))
    observed = cache.observed(("ml", "chat"))
    assert observed.split_applied == "split-hash"
    assert {n: s.revision for n, s in observed.services.items()} == {"chat": "chat-aaaa", "chat-aaaa": "chat-aaaa"}


def test_unschedulable_pods_mark_only_revisions_that_are_short_of_ready_pods() -> None:
    cache = Cache()
    cache.put("ModelDeployment", md())
    cache.put("Deployment", deployment("chat-aaaa", replicas=2, ready=2))
    cache.put("Deployment", deployment("chat-bbbb", replicas=2, ready=1, rv="11"))
    msg = "0/5 nodes are available: 3 Insufficient nvidia.com/gpu."
    cache.put("Pod", pod("chat-bbbb-x", "chat-bbbb", msg))
    cache.put("Pod", pod("chat-aaaa-y", "chat-aaaa", "stale verdict on a full revision"))
    observed = cache.observed(("ml", "chat"))
    assert observed.revisions["chat-bbbb"].unschedulable == msg
    assert observed.revisions["chat-aaaa"].unschedulable is None
    cache.put("Pod", pod("chat-bbbb-x", "chat-bbbb"))  # scheduled after all: the verdict goes
    assert cache.observed(("ml", "chat")).revisions["chat-bbbb"].unschedulable is None
    assert cache.sizes()["Pod"] == 1  # only pods that cannot be placed are kept


def test_only_what_the_planner_reads_is_kept_and_snapshots_are_copies() -> None:
    cache = Cache()
    cache.put("ModelDeployment", md())
    snap = cache.snapshot(("ml", "chat"))
    assert snap is not None and "managedFields" not in snap.body["metadata"]
    snap.body["status"]["phase"] = "changed by a planner"
    assert cache.snapshot(("ml", "chat")).body["status"]["phase"] == "Healthy"


def test_objects_without_our_label_are_not_ours_and_deletes_remove() -> None:
    cache = Cache()
    assert cache.put("Deployment", {"metadata": {"name": "x", "namespace": "ml", "labels": {}}}) is None
    cache.put("ModelDeployment", md())
    cache.put("Deployment", deployment())
    assert owner_key("Deployment", deployment()) == ("ml", "chat")
    cache.delete("Deployment", deployment())
    assert cache.observed(("ml", "chat")).revisions == {}
    cache.delete("ModelDeployment", md())
    assert cache.snapshot(("ml", "chat")) is None and cache.sizes()["Deployment"] == 0


def test_an_expectation_is_met_by_the_exact_version_the_write_returned() -> None:
    cache = Cache()
    key = ("ml", "chat")
    cache.put("ModelDeployment", md(rv="5"))
    cache.expect(key, [Expectation("ModelDeployment", "ml", "chat", "7"),
                       Expectation("Deployment", "ml", "chat-aaaa", None),
                       Expectation("ConfigMap", "ml", "chat-split", "9")])  # not watched: nothing to wait for
    cache.put("Deployment", deployment())
    assert {e.kind for e in cache.unmet(key)} == {"ModelDeployment", "Deployment"}
    cache.put("ModelDeployment", md(rv="6"))  # an older event, delivered late: still not ours
    assert {e.kind for e in cache.unmet(key)} == {"ModelDeployment", "Deployment"}
    cache.put("ModelDeployment", md(rv="7"))
    cache.put("ModelDeployment", md(rv="8"))  # someone else's change after ours: ours was seen
    cache.delete("Deployment", deployment())
    assert cache.unmet(key) == []


def test_a_newer_version_meets_an_expectation_kopf_batched_ours_away() -> None:
    """kopf merges an object's rapid events: after two quick status writes (7, then 9 by someone
    else) only 9 may be delivered."""
    cache = Cache()
    key = ("ml", "chat")
    cache.put("ModelDeployment", md(rv="5"))
    cache.expect(key, [Expectation("ModelDeployment", "ml", "chat", "7")])
    assert cache.unmet(key)
    cache.put("ModelDeployment", md(rv="9"))
    assert cache.unmet(key) == []


def test_drop_forgets_an_object_whose_namespace_went_away_unseen() -> None:
    cache = Cache()
    key = ("ml", "chat")
    cache.put("ModelDeployment", md())
    cache.put("Deployment", deployment())
    cache.drop(key)
    assert cache.snapshot(key) is None and not cache.has(key) and cache.sizes()["Deployment"] == 0


def test_wait_settled_returns_when_the_watch_delivers_and_reports_what_never_came() -> None:
    async def scenario() -> tuple[list, list]:
        cache = Cache()
        key = ("ml", "chat")
        cache.put("ModelDeployment", md(rv="5"))
        cache.expect(key, [Expectation("ModelDeployment", "ml", "chat", "6")])
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, cache.put, "ModelDeployment", md(rv="6"))
        delivered = await cache.wait_settled(key, timeout=5)
        cache.expect(key, [Expectation("Deployment", "ml", "chat-aaaa", "99")])
        never = await cache.wait_settled(key, timeout=0.05)
        return delivered, never

    delivered, never = asyncio.run(scenario())
    assert delivered == []
    assert [str(e) for e in never] == ["Deployment ml/chat-aaaa@99"]


def test_a_fresh_read_builds_the_same_snapshot_as_the_cache() -> None:
    cache = Cache()
    cache.put("ModelDeployment", md())
    cache.put("Deployment", deployment())
    cache.put("Service", service())
    snap = fresh(md(), {"Deployment": [deployment()], "Service": [service()], "Pod": []})
    assert snap is not None and snap.observed == cache.observed(("ml", "chat"))


def test_only_changes_the_planner_reads_wake_the_worker() -> None:
    cache = Cache()
    key = ("ml", "chat")
    cache.put("ModelDeployment", md())
    cache.put("Pod", pod("chat-aaaa-x", "chat-aaaa"))  # scheduled: nothing kept, nothing changed
    assert not cache.take_changed(key)
    cache.put("Deployment", deployment(ready=1))
    assert cache.take_changed(key) and not cache.take_changed(key)
    cache.put("Deployment", deployment(ready=1, rv="12"))  # a new version, the same revision state
    assert not cache.take_changed(key)
    cache.put("Deployment", deployment(ready=2, rv="13"))  # a pod became ready
    assert cache.take_changed(key)
    cache.put("Pod", pod("chat-aaaa-y", "chat-aaaa", "0/5 nodes are available"))
    assert cache.take_changed(key)
    cache.delete("Pod", pod("chat-aaaa-y", "chat-aaaa"))
    assert cache.take_changed(key)
