"""One reconcile: plan from what the cache observed, execute. Synchronous (so is the API client, lightkube's Client)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import functools
import logging
import time
from dataclasses import dataclass

from modelops import metrics
from modelops.config import OperatorConfig
from modelops.domain.spec import ModelDeploymentSpec, ModelDeploymentStatus
from modelops.planning import reconcile
from modelops.planning.analysis import golden_due, measurement_due
from modelops.planning.autoscaling import load_request

from .apiclient import ApiFailure, status_of
from .cache import Cache, Expectation, Snapshot
from .golden import Golden
from .kube import ExecutionResult, Kube
from .notify import Notifier
from .prometheus import LoadSampler, Prometheus
from .registry import Registry

log = logging.getLogger("modelops.reconcile")


@dataclass
class Outcome:
    requeue_after: float | None  # None: the object is gone
    phase: str | None = None
    result: ExecutionResult | None = None


class CachedReconciler:
    """One reconcile of one ModelDeployment, from the cache: wait until the watch shows our last
    writes (else read from the API), plan and write in a thread of ``executor``, remember what
    the writes returned. Called by the workers, at most one at a time per object."""

    def __init__(self, cache: Cache, kube: Kube, config: OperatorConfig, executor: concurrent.futures.Executor,
                 prometheus: Prometheus | None = None, registry: Registry | None = None,
                 golden: Golden | None = None, notifier: Notifier | None = None) -> None:
        self.cache, self.kube, self.config, self.executor = cache, kube, config, executor
        self.prometheus, self.registry, self.golden = prometheus, registry, golden
        self.notifier = notifier
        self.sampler = LoadSampler(prometheus) if prometheus else None
        self._failed: set[tuple[str, str]] = set()  # objects whose last reconcile raised
        self._lagging: dict[tuple[str, str], list[Expectation]] = {}  # settle's verdict, for the call

    async def settle(self, namespace: str, name: str) -> None:
        """Wait until the cache shows this object's last writes (or the timeout passed). The workers
        await this before they take a reconcile slot: waiting for a watch holds no slot."""
        key = (namespace, name)
        self._lagging[key] = await self.cache.wait_settled(key, self.config.cache_sync_timeout_seconds)

    async def __call__(self, namespace: str, name: str) -> Outcome:
        loop = asyncio.get_running_loop()
        key = (namespace, name)
        # Never plan from a cache older than our own last writes: a step would be repeated.
        timeout = self.config.cache_sync_timeout_seconds
        missing = self._lagging.pop(key, None)
        if missing is None:  # not settled beforehand
            missing = await self.cache.wait_settled(key, timeout)
        if missing or key in self._failed:
            # The watch lags behind our own writes, or the last try failed (the cache may be what is
            # wrong, e.g. the object is gone with its namespace): read the truth instead.
            if missing:
                log.warning("%s/%s: the watch has not shown %s after %.0fs; reading from the API", namespace,
                            name, ", ".join(map(str, missing)), timeout)
            metrics.CACHE_FALLBACK_READS.inc()
            self.cache.forget_expectations(key)
            snapshot = await loop.run_in_executor(self.executor, self.kube.read_fresh, namespace, name)
            if snapshot is None:  # gone: drop what the cache still holds of it
                self.cache.drop(key)
        else:
            snapshot = self.cache.snapshot(key)
        expect: list[Expectation] = []
        try:
            outcome = await loop.run_in_executor(self.executor, functools.partial(
                reconcile_once, self.kube, self.config, snapshot, self.prometheus, self.registry, self.golden,
                expect, self.notifier, self.sampler))
        except Exception:
            self._failed.add(key)
            raise
        finally:
            self.cache.expect(key, expect)
        self._failed.discard(key)
        return outcome


def reconcile_once(kube: Kube, config: OperatorConfig, snapshot: Snapshot | None,
                   prometheus: Prometheus | None = None, registry: Registry | None = None,
                   golden: Golden | None = None, expect: list[Expectation] | None = None,
                   notifier: Notifier | None = None, sampler: LoadSampler | None = None) -> Outcome:
    """Plan from ``snapshot`` (the watch-fed cache's copy, or a fresh read; None: the object is
    gone) and execute the plan. Reads nothing from the Kubernetes API. The writes' expectations
    are appended to ``expect``, also when the reconcile fails half-way."""
    started = time.monotonic()
    if snapshot is None:
        return Outcome(requeue_after=None)
    body, observed = snapshot.body, snapshot.observed
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return Outcome(requeue_after=None)  # garbage collection removes what we own
    namespace, name = meta["namespace"], meta["name"]
    owner = reconcile.Owner(name=name, namespace=namespace, uid=meta["uid"], generation=meta.get("generation", 1),
                            spec=body.get("spec") or {}, status=body.get("status") or {},
                            annotations=meta.get("annotations") or {})
    try:
        now = dt.datetime.now(dt.timezone.utc)
        measurements = _measure(owner, prometheus, now) if prometheus else None
        answers = _ask_golden(owner, observed, now, golden or Golden())
        metadata = _resolve_metadata(owner, registry) if registry else None
        if sampler is None and prometheus is not None:
            sampler = LoadSampler(prometheus)
        load = _sample_load(owner, sampler) if sampler else None
        plan = reconcile.plan(owner, observed, config, now, measurements, answers, metadata, load)
        result = kube.execute(owner, plan, observed, expect)
    except ApiFailure as exc:
        metrics.API_ERRORS.labels(str(status_of(exc))).inc()
        metrics.RECONCILES.labels("error").inc()
        raise
    finally:
        metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
    for kind, n in (("apply", len(result.applied)), ("scale", len(result.scaled)),
                    ("delete", len(result.deleted)), ("status", int(result.status_written))):
        if n:
            metrics.WRITES.labels(kind).inc(n)
    metrics.RECONCILES.labels("ok").inc()
    for event in plan.events:
        if event.reason == "RolledBack":
            metrics.ROLLBACKS.labels(namespace, name).inc()
    if notifier is not None:  # only after the writes succeeded, so only the leader; enqueues only
        notifier.notify(owner, plan)
    phase = (plan.status or owner.status).get("phase")
    if result.writes:
        done = [*plan.details,
                *([f"applied {', '.join(result.applied)}"] if result.applied else []),
                *([f"scaled {', '.join(result.scaled)}"] if result.scaled else []),
                *([f"deleted {', '.join(result.deleted)}"] if result.deleted else []),
                *([f"status: {phase}: {plan.status.get('message', '')}"] if plan.status else [])]
        log.info("%s/%s: %s", namespace, name, "; ".join(done))
    return Outcome(requeue_after=plan.requeue_after, phase=phase, result=result)


def _measure(owner: reconcile.Owner, prometheus: Prometheus, now: dt.datetime):  # type: ignore[no-untyped-def]
    """Query the provider when the analysis is due (invalid specs are left to the planner)."""
    try:
        spec = ModelDeploymentSpec.model_validate(owner.spec)
        status = ModelDeploymentStatus.model_validate(owner.status)
    except ValueError:
        return None
    request = measurement_due(owner.namespace, owner.name, spec, status, now)
    if request is None:
        return None
    started = time.monotonic()
    out = prometheus.measure(request)
    metrics.ANALYSIS_SECONDS.observe(time.monotonic() - started)
    return out


def _sample_load(owner: reconcile.Owner, sampler: LoadSampler):  # type: ignore[no-untyped-def]
    """spec.autoscaling's load, measured at most once per interval (invalid specs are left to the planner)."""
    if not owner.spec.get("autoscaling"):
        return None
    try:
        spec = ModelDeploymentSpec.model_validate(owner.spec)
        status = ModelDeploymentStatus.model_validate(owner.status)
    except ValueError:
        return None
    request = load_request(owner.namespace, spec, status)
    if request is None:
        return None
    return sampler.sample((owner.namespace, owner.name), request)


def _ask_golden(owner: reconcile.Owner, observed, now: dt.datetime, golden: Golden):  # type: ignore[no-untyped-def]
    """Send the golden prompts when the gate is due (once per rollout)."""
    try:
        spec = ModelDeploymentSpec.model_validate(owner.spec)
        status = ModelDeploymentStatus.model_validate(owner.status)
    except ValueError:
        return None
    revision = status.rollout.revision if status.rollout else None  # the revision the gate is for
    ready = observed.revisions[revision].ready if revision in observed.revisions else 0
    request = golden_due(owner.namespace, owner.name, spec, status, ready, now)
    return golden.ask(request) if request else None


def _resolve_metadata(owner: reconcile.Owner, registry: Registry):  # type: ignore[no-untyped-def]
    source = (owner.spec.get("model") or {}).get("metadata")
    if not source or not source.endswith("/"):
        return None
    return registry.newest(source)
