"""kopf handlers: thin. Watch events poke the per-object worker; the worker reconciles."""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any

import kopf
from kubernetes import client, config as kubeconfig
from prometheus_client import start_http_server

from modelops import metrics
from modelops.adapters.controller import Outcome, reconcile_once
from modelops.adapters.kube import Kube
from modelops.adapters import peering
from modelops.adapters.golden import Golden
from modelops.adapters.prometheus import Prometheus
from modelops.adapters.registry import Registry
from modelops.config import OperatorConfig
from modelops.domain.spec import GROUP, PLURAL, VERSION
from modelops.planning.engines.common import LABEL_DEPLOYMENT, MANAGED_BY

from .workers import Workers


def _api_client() -> client.ApiClient:
    try:
        kubeconfig.load_incluster_config()
        return client.ApiClient()
    except kubeconfig.ConfigException:
        return kubeconfig.new_client_from_config()


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    """Settings and clients into the memo. ``python -m modelops`` puts the config (and, in tests, where
    revisions answer) into the memo it starts kopf with; under ``kopf run`` the config is read here."""
    cfg: OperatorConfig = memo.get("config") or OperatorConfig()
    settings.posting.enabled = False  # we post our own Events, on transitions only
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    memo.config = cfg
    memo.kube = Kube(_api_client(), field_manager=cfg.field_manager)
    token = cfg.prometheus_token.get_secret_value() if cfg.prometheus_token else None
    memo.prometheus = Prometheus(bearer_token=token)
    memo.registry = Registry(poll_seconds=cfg.metadata_poll_seconds, emulator_host=cfg.storage_emulator_host,
                             project=cfg.google_cloud_project)
    memo.golden = Golden(revision_url=memo.get("revision_url"))

    async def run(namespace: str, name: str) -> Outcome:
        return await asyncio.to_thread(reconcile_once, memo.kube, cfg, namespace, name, memo.prometheus,
                                       memo.registry, memo.golden)

    memo.workers = Workers(run)
    memo.leadership = None
    if cfg.peering:
        memo.workers.set_active(False)
        memo.leadership = asyncio.create_task(_follow_peering(memo, cfg, logger))
    if cfg.metrics_port:
        start_http_server(cfg.metrics_port, registry=metrics.REGISTRY)
    logger.info("modelops operator started (metrics on :%s, resync every %ss)", cfg.metrics_port, cfg.resync_seconds)


PEERING_POLL = 2.0  # seconds between two reads of the peering object
# A replica starts working only once it has been the top live peer this long: longer than two
# polls, so a replica that was alone until a higher-priority peer registered has seen that peer
# (and stood by) before the newcomer starts. Standing by is immediate.
PEERING_SETTLE = 2 * PEERING_POLL + 1.0


async def _follow_peering(memo: kopf.Memo, cfg: OperatorConfig, logger: logging.Logger) -> None:
    """Work only while kopf peering makes this replica the active one (highest live priority).

    ``cfg`` carries the same peering name, identity and priority that kopf was started with."""
    assert cfg.peering
    name, ns = cfg.peering, cfg.peering_namespace
    me, priority = cfg.peer_id, cfg.peer_priority or 0
    active = False
    top_since: float | None = None
    loop = asyncio.get_running_loop()
    while True:
        try:
            status = await asyncio.to_thread(peering.peers, memo.kube.api, name, ns)
        except Exception as exc:  # noqa: BLE001 - the apiserver unreachable: keep the last decision, retry
            logger.warning("peering %s: cannot read the peers: %s", name, exc)
            await asyncio.sleep(PEERING_POLL)
            continue
        top = peering.is_active(status, me, priority, datetime.datetime.now(datetime.timezone.utc))
        now_active, top_since = peering.settle(top, top_since, loop.time(), PEERING_SETTLE)
        if now_active != active:
            logger.info("peering %s: this replica is %s", name, "active" if now_active else "standing by")
            active = now_active
            memo.workers.set_active(active)
        await asyncio.sleep(PEERING_POLL if top == active else 1.0)  # settling: look again sooner


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if memo.leadership is not None:
        memo.leadership.cancel()
    await memo.workers.stop()
    memo.kube.api.close()
    memo.prometheus.close()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def modeldeployment_event(type: str | None, name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED":
        memo.workers.forget(namespace, name)
    else:
        memo.workers.poke(namespace, name)


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
async def revision_event(labels: dict[str, str], namespace: str, memo: kopf.Memo, **_: Any) -> None:
    owner = labels.get(LABEL_DEPLOYMENT)
    if owner:
        memo.workers.poke(namespace, owner)
