"""One reconcile: observe the cluster, plan, execute. Synchronous (the kubernetes client is)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

from kubernetes.client.rest import ApiException

from modelops import metrics
from modelops.config import OperatorConfig
from modelops.domain.spec import GROUP, PLURAL, VERSION
from modelops.planning import reconcile

from .kube import ExecutionResult, Kube

log = logging.getLogger("modelops.reconcile")


@dataclass
class Outcome:
    requeue_after: float | None  # None: the object is gone
    phase: str | None = None
    result: ExecutionResult | None = None


def reconcile_once(kube: Kube, config: OperatorConfig, namespace: str, name: str) -> Outcome:
    started = time.monotonic()
    try:
        body = kube.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            return Outcome(requeue_after=None)
        metrics.API_ERRORS.labels(str(exc.status)).inc()
        raise
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return Outcome(requeue_after=None)  # garbage collection removes what we own
    owner = reconcile.Owner(name=name, namespace=namespace, uid=meta["uid"], generation=meta.get("generation", 1),
                            spec=body.get("spec") or {}, status=body.get("status") or {})
    try:
        observed = kube.observe(namespace, name)
        plan = reconcile.plan(owner, observed, config, dt.datetime.now(dt.timezone.utc))
        result = kube.execute(owner, plan, observed)
    except ApiException as exc:
        metrics.API_ERRORS.labels(str(exc.status)).inc()
        metrics.RECONCILES.labels("error").inc()
        raise
    finally:
        metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
    for kind, n in (("apply", len(result.applied)), ("scale", len(result.scaled)),
                    ("delete", len(result.deleted)), ("status", int(result.status_written))):
        if n:
            metrics.WRITES.labels(kind).inc(n)
    metrics.RECONCILES.labels("ok").inc()
    phase = (plan.status or owner.status).get("phase")
    if result.writes:
        done = [*plan.details,
                *([f"applied {', '.join(result.applied)}"] if result.applied else []),
                *([f"scaled {', '.join(result.scaled)}"] if result.scaled else []),
                *([f"deleted {', '.join(result.deleted)}"] if result.deleted else []),
                *([f"status: {phase}: {plan.status.get('message', '')}"] if plan.status else [])]
        log.info("%s/%s: %s", namespace, name, "; ".join(done))
    return Outcome(requeue_after=plan.requeue_after, phase=phase, result=result)
