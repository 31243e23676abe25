"""kopf handlers: thin. Watch events feed the cache and poke the per-object worker; the worker reconciles."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import os
import socket
import time
from typing import Any

import kopf
from lightkube import Client
from prometheus_client import start_http_server

from modelops import __version__, metrics
from modelops.adapters import apiclient
from modelops.adapters.cache import KINDS, Cache, owner_key
from modelops.adapters.controller import CachedReconciler
from modelops.adapters.events import EventRecorder
from modelops.adapters.golden import Golden
from modelops.adapters.kube import Kube
from modelops.adapters.leader import LeaderElector, request_timeout
from modelops.adapters.notify import Notifier
from modelops.adapters.prometheus import Prometheus
from modelops.adapters.registry import Registry
from modelops.config import OperatorConfig
from modelops.domain.spec import GROUP, PLURAL, VERSION
from modelops.planning.engines.common import LABEL_DEPLOYMENT, MANAGED_BY

from .workers import Workers


def _api_client(cfg: OperatorConfig, timeout: float | None = None) -> Client:
    """A client for the requests the operator sends (kopf's watches have their own connections):
    in-cluster, else the kubeconfig; a timeout on each request (default ``api_timeout_seconds``), and
    this replica's identity in its user agent (the audit log tells replicas apart). Its pool keeps 20
    idle connections: one for each reconcile thread and the Events' up to 19 reconciles at once (8 by
    default); the Lease has a client of its own, with its own timeout."""
    return apiclient.connect(timeout=timeout or cfg.api_timeout_seconds,
                             user_agent=f"modelops-operator/{__version__} ({cfg.identity})")


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's credentials, chosen as our client's are (adapters/apiclient.py): the pod's
    ServiceAccount, else the kubeconfig. Registering a login handler replaces kopf's defaults,
    which would log in through the kubernetes client library when it is installed (and import it:
    46 MiB); kopf's own minimal logins read the same files."""
    in_cluster = apiclient.in_cluster_config()
    if in_cluster is None:
        return kopf.login_with_kubeconfig(**kwargs)
    info = kopf.login_with_service_account(**kwargs)
    # kopf would name the apiserver kubernetes.default.svc (a DNS lookup); the kubernetes client
    # and lightkube take its address from the environment the kubelet sets: the watches too.
    return dataclasses.replace(info, server=in_cluster.get().cluster.server) if info else None


# ---------------------------------------------------------------------- the watch-fed cache
# kopf's indexing handlers run on every listed or changed object before any other handler, and
# kopf holds the other handlers until every indexed kind has been listed once: the cache is
# complete before the first reconcile. They return None: the value lives in our cache, not kopf's.
OWNED = {"app.kubernetes.io/managed-by": MANAGED_BY, LABEL_DEPLOYMENT: kopf.PRESENT}


# kind -> (group, version, plural, label filter, server-side field selector): what the planner reads.
WATCHED: dict[str, tuple[str, str, str, dict[str, Any] | None, str | None]] = {
    "ModelDeployment": (GROUP, VERSION, PLURAL, None, None),
    "Deployment": ("apps", "v1", "deployments", OWNED, None),
    "Service": ("", "v1", "services", OWNED, None),
    "HTTPRoute": ("gateway.networking.k8s.io", "v1", "httproutes", OWNED, None),
    # Only the scheduler's verdict is kept, and only a pod not yet bound to a node can have one: the
    # apiserver sends a bound pod's watch a DELETED and nothing more of it (no status updates).
    "Pod": ("", "v1", "pods", OWNED, "spec.nodeName="),
}
# kopf's ``labels=`` filters on the client: without a server-side selector every Deployment,
# Service and Pod of the watched namespaces would be sent to us (and remembered by kopf).
OWNED_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY},{LABEL_DEPLOYMENT}"


def watch_selectors(settings: kopf.OperatorSettings) -> None:
    """Filter the watches of what we own on the server: our labels, and for Pods, unbound only."""
    for group, version, plural, labels, fields in WATCHED.values():
        if labels is not None:
            settings.watching.label_selectors[group, version, plural] = OWNED_SELECTOR
        if fields is not None:
            settings.watching.field_selectors[group, version, plural] = fields


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf builds a "diff base" of every event's body (a deep copy, managedFields and all) for its
    change handlers (on.create/update/field). We have none, only event and index handlers, so there
    is nothing to diff: without this, that copy was about a tenth of the operator's CPU at scale."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


def _feeder(kind: str) -> Any:
    def feed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        memo.cache.put(kind, body)
    return feed


for _kind, (_group, _version, _plural, _labels, _) in WATCHED.items():
    # Explicit ids: kopf names handlers after the function, and these are made in a loop.
    kopf.index(_group, _version, _plural, labels=_labels, id=f"cache-{_plural}")(_feeder(_kind))


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    """Settings and clients into the memo. ``python -m modelops`` puts the config (and, in tests, where
    revisions answer) into the memo it starts kopf with; under ``kopf run`` the config is read here."""
    cfg: OperatorConfig = memo.get("config") or OperatorConfig()
    if not cfg.identity:
        cfg = cfg.model_copy(update={"identity": f"{socket.gethostname()}-{os.getpid()}"})
    settings.posting.enabled = False  # we post our own Events, on transitions only
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    watch_selectors(settings)
    settings.persistence.diffbase_storage = NoDiffBase()
    memo.config = cfg
    memo.cache = Cache()
    api = _api_client(cfg)
    memo.elector = None
    if cfg.leader_election:
        lease_api = _api_client(cfg, timeout=request_timeout(cfg.renew_deadline_seconds, cfg.retry_period_seconds))
        memo.elector = LeaderElector(lease_api, name=cfg.leader_election_id, namespace=cfg.lease_namespace,
                                     identity=cfg.identity, lease_duration=cfg.lease_duration_seconds,
                                     renew_deadline=cfg.renew_deadline_seconds,
                                     retry_period=cfg.retry_period_seconds, on_change=lambda on: _lead(memo, on))
    memo.kube = Kube(api, field_manager=cfg.field_manager,
                     may_write=memo.elector.check if memo.elector else None)
    memo.events = EventRecorder(memo.kube.event)  # a reconcile never waits for an Event to be posted
    memo.kube.record = memo.events.record
    token = cfg.prometheus_token.get_secret_value() if cfg.prometheus_token else None
    memo.prometheus = Prometheus(bearer_token=token)
    memo.registry = Registry(poll_seconds=cfg.metadata_poll_seconds, emulator_host=cfg.storage_emulator_host,
                             project=cfg.google_cloud_project)
    memo.golden = Golden(revision_url=memo.get("revision_url"))
    # The reconciles' own threads: as many as may run at once, so a hung call never starves the others.
    memo.executor = concurrent.futures.ThreadPoolExecutor(cfg.max_concurrent_reconciles,
                                                          thread_name_prefix="reconcile")
    memo.notifier = Notifier.from_config(cfg)  # receivers' threads; a reconcile only enqueues
    reconciler = CachedReconciler(memo.cache, memo.kube, cfg, memo.executor, memo.prometheus, memo.registry,
                                  memo.golden, notifier=memo.notifier)
    memo.workers = Workers(reconciler, concurrency=cfg.max_concurrent_reconciles, settle=reconciler.settle)
    memo.leadership = None
    if memo.elector:
        memo.workers.set_active(False)
        metrics.LEADER.set(0)
        memo.leadership = asyncio.create_task(memo.elector.run())
    else:
        metrics.LEADER.set(1)
    for kind in KINDS:
        metrics.CACHE_OBJECTS.labels(kind).set_function(lambda k=kind: memo.cache.sizes()[k])
        metrics.CACHE_AGE.labels(kind).set_function(
            lambda k=kind, t0=time.monotonic(): time.monotonic() - memo.cache.updated_at.get(k, t0))
    if cfg.metrics_port:
        start_http_server(cfg.metrics_port, registry=metrics.REGISTRY)
    logger.info("modelops operator %s started (metrics on :%s, resync every %ss, %s)", cfg.identity,
                cfg.metrics_port, cfg.resync_seconds,
                f"leader election through Lease {cfg.lease_namespace}/{cfg.leader_election_id}"
                if cfg.leader_election else "no leader election")


def _lead(memo: kopf.Memo, leading: bool) -> None:
    """The elector's verdict: the workers reconcile only while this replica leads."""
    metrics.LEADER.set(int(leading))
    memo.workers.set_active(leading)
    if leading:  # a new leader looks at everything once: the old one may have died mid-step
        for key in memo.cache.keys():
            memo.workers.poke(*key)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if memo.leadership is not None:
        memo.leadership.cancel()
    await memo.workers.stop()
    await asyncio.to_thread(memo.events.close)  # while this replica may still write them
    if memo.elector is not None:
        memo.elector.release()  # bounded by the Lease requests' timeout
        memo.elector.api.close()
    memo.executor.shutdown(wait=False, cancel_futures=True)
    memo.kube.api.close()
    memo.prometheus.close()
    await asyncio.to_thread(memo.notifier.close)  # what is queued gets one last try, for a few seconds


# ---------------------------------------------------------------------- triggers
@kopf.on.event(GROUP, VERSION, PLURAL)
async def modeldeployment_event(type: str | None, name: str, namespace: str, body: kopf.Body, memo: kopf.Memo,
                                **_: Any) -> None:
    if type == "DELETED":
        memo.cache.delete("ModelDeployment", body)
        memo.workers.forget(namespace, name)
    else:
        memo.workers.poke(namespace, name)


def _owned_event(kind: str) -> Any:
    async def on_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        # The indexing handler has put it already; deletions reach only this handler. A pod's
        # status change that leaves its scheduling verdict as it was wakes no one.
        key = memo.cache.delete(kind, body) if type == "DELETED" else owner_key(kind, body)
        if key is not None and memo.cache.take_changed(key) and memo.cache.has(key):
            memo.workers.poke(*key)
    return on_event


for _kind, (_group, _version, _plural, _labels, _) in WATCHED.items():
    if _kind != "ModelDeployment":
        kopf.on.event(_group, _version, _plural, labels=_labels, id=f"{_plural}-event")(_owned_event(_kind))
