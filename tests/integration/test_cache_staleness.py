"""A lagging watch never makes the operator repeat a rollout step.

The operator's own pieces run in this process against the real apiserver (kube-controller-
manager and kwok move the Deployments): ``Kube`` writes, ``Cache`` is fed by real watches,
``CachedReconciler`` plans with the real planner. Only the delivery of watch events is the
test's: they queue up and reach the cache when the test releases them, so the test can hold
the cache behind the operator's own writes for as long as it likes — what a slow or broken
watch does in production. The control at the end shows the harness can see the fault: planned
from the stale copy directly, the same reconcile restarts the step it already took.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
from typing import Any, Callable

import pytest
from kubernetes import client, watch
from lightkube import KubeConfig

from modelops.adapters.apiclient import connect
from modelops.adapters.cache import Cache
from modelops.adapters.controller import CachedReconciler, reconcile_once
from modelops.adapters.kube import Kube
from modelops.config import OperatorConfig
from tests.e2e.steps import GROUP, PLURAL, VERSION

pytestmark = pytest.mark.integration

SPEC = {"model": {"name": "smollm2", "source": "gs://models/smollm2/"}, "engine": {"type": "vllm"},
        "resources": {"gpu": {"count": 0}, "cpu": "10m", "memory": "64Mi"}, "replicas": 2,
        "traffic": {"router": "service"},
        "rollout": {"strategy": "Canary", "canary": {"steps": [
            {"setWeight": 50}, {"pause": {"duration": "2s"}}, {"setWeight": 100}, {"pause": {"duration": "1h"}}]}}}


class HeldWatch:
    """Real watches of one namespace; their events wait in a queue until ``release``."""

    def __init__(self, api: client.ApiClient, namespace: str, cache: Cache) -> None:
        self.cache, self.events = cache, queue.Queue()  # type: queue.Queue[tuple[str, str, dict[str, Any]]]
        self.stop = threading.Event()
        custom, apps, core = client.CustomObjectsApi(api), client.AppsV1Api(api), client.CoreV1Api(api)
        sources: dict[str, Callable[..., Any]] = {
            "ModelDeployment": lambda **kw: custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                                                 **kw),
            "Deployment": lambda **kw: apps.list_namespaced_deployment(namespace, **kw),
            "Service": lambda **kw: core.list_namespaced_service(namespace, **kw),
            "Pod": lambda **kw: core.list_namespaced_pod(namespace, **kw)}
        self.threads = [threading.Thread(target=self._watch, args=(kind, fn), daemon=True)
                        for kind, fn in sources.items()]
        for t in self.threads:
            t.start()

    def _watch(self, kind: str, list_fn: Callable[..., Any]) -> None:
        while not self.stop.is_set():
            for ev in watch.Watch().stream(list_fn, timeout_seconds=2):
                self.events.put((kind, ev["type"], ev["raw_object"]))

    def release(self) -> int:
        """Deliver everything the watches have sent so far, in order per kind."""
        n = 0
        while True:
            try:
                kind, type_, body = self.events.get_nowait()
            except queue.Empty:
                return n
            (self.cache.delete if type_ == "DELETED" else self.cache.put)(kind, body)
            n += 1


def status(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                                     "chat").get("status") or {}


def step(s: dict[str, Any]) -> tuple[int | None, str | None]:
    rollout = s.get("rollout") or {}
    return s.get("currentStep"), rollout.get("stepStartedAt")


def test_a_reconcile_waits_for_the_watch_to_show_its_own_writes(api, crd, cluster, unwatched_namespace) -> None:
    ns = unwatched_namespace
    cfg = OperatorConfig(cache_sync_timeout_seconds=60)
    cache = Cache()
    executor = concurrent.futures.ThreadPoolExecutor(2)
    kube = Kube(connect(KubeConfig.from_file(cluster.kubeconfig), timeout=30), field_manager="modelops-staleness-test")
    reconciler = CachedReconciler(cache, kube, cfg, executor)
    held = HeldWatch(api, ns, cache)
    custom = client.CustomObjectsApi(api)

    async def until(what: str, done: Callable[[dict[str, Any]], bool], timeout: float = 90) -> dict[str, Any]:
        """Reconcile with every event delivered (a healthy watch) until ``done(status)``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(0.3)
            held.release()
            await reconciler(ns, "chat")
            s = status(api, ns)
            if done(s):
                return s
        raise AssertionError(f"timed out waiting for {what}; status: {status(api, ns)}")

    async def scenario() -> None:
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": "chat"},
            "spec": SPEC})
        await until("v1 Healthy", lambda s: s.get("phase") == "Healthy")
        custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "chat",
                                              {"spec": {"model": {"source": "gs://models/smollm2-v2/"}}})
        await until("the timed pause", lambda s: s.get("currentStep") == 1 and step(s)[1] is not None)
        await asyncio.sleep(2.5)  # the pause is over
        held.release()
        stale = cache.snapshot((ns, "chat"))  # what a lagging cache would still show after the next write

        # R1: the pause is over, the rollout moves on. Its writes are not delivered to the cache.
        await reconciler(ns, "chat")
        after_r1 = step(status(api, ns))
        assert after_r1[0] is not None and after_r1[0] > 1, f"the rollout did not move on: {status(api, ns)}"
        assert cache.unmet((ns, "chat")), "R1 wrote and expects to see its writes"

        # R2 while the watch lags: it waits rather than plan from the old copy.
        await asyncio.sleep(1.1)  # a restarted step would now carry a later stepStartedAt
        r2 = asyncio.ensure_future(reconciler(ns, "chat"))
        await asyncio.sleep(1.0)
        assert not r2.done(), "R2 planned from a cache older than R1's writes"
        held.release()
        await asyncio.wait_for(r2, timeout=30)
        after_r2 = step(status(api, ns))
        assert after_r2 == after_r1 or (after_r2[0] or 0) > (after_r1[0] or 0), \
            f"R2 went back or restarted a step: {after_r1} -> {after_r2}"

        # Control: the same reconcile planned from the stale copy restarts the step R1 took.
        assert stale is not None
        await asyncio.get_running_loop().run_in_executor(executor, reconcile_once, kube, cfg, stale)
        control = step(status(api, ns))
        assert control != after_r2 and (control[0] or 0) <= (after_r2[0] or 0), \
            f"a stale plan should have repeated the step: {after_r2} -> {control}"

    try:
        asyncio.run(scenario())
    finally:
        held.stop.set()
        executor.shutdown(wait=False)
        kube.api.close()
