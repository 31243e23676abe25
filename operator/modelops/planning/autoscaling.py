"""Autoscaling in the planner (pure): what to measure, and the total replicas a decision splits.

- ``load_request``: the queries the adapter sends to Prometheus for ``spec.autoscaling`` — the
  gateways' in-flight requests (averaged over ``window``) and output tokens (a rate over it),
  summed over the revisions that serve users (the stable, and a canary or A/B challenger with a
  share; a blue-green preview and a shadow take no users' requests);
- ``autoscale``: the total for this pass (domain/autoscaling.py decides it), its status, Events and
  warnings. decide.py then splits that total exactly as it splits ``spec.replicas`` without
  autoscaling: the stable keeps all of it, the new revision gets its step's share beside it.

Without ``spec.autoscaling`` the total is ``spec.replicas``: whatever sets it (a person, Argo CD,
``kubectl scale``, an HPA or KEDA through the scale subresource). With it, the operator owns the
total and ``spec.replicas`` is ignored; a change of ``spec.replicas`` after autoscaling took over
means a second autoscaler, and status.warnings says so (``ReplicasIgnored``) until it is back.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from modelops.config import OperatorConfig
from modelops.domain import autoscaling as scaling
from modelops.domain.autoscaling import IN_FLIGHT, LoadSample, Recommendation, serving, targets
from modelops.domain.conditions import Reason
from modelops.domain.durations import seconds
from modelops.domain.observed import Observed
from modelops.domain.spec import (
    AutoscalingMetricStatus,
    AutoscalingStatus,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    RecommendationRecord,
)
from modelops.domain.timestamps import iso, parse

from .contract import Event

INFLIGHT = "modelops_gateway_inflight_requests"
OUTPUT_TOKENS = "modelops_gateway_output_tokens_total"


@dataclass(frozen=True)
class LoadRequest:
    address: str
    queries: dict[str, str]  # target name -> PromQL giving the sum over the serving revisions
    revisions: tuple[str, ...]
    interval: float  # seconds: measure at most this often


def load_request(namespace: str, spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> LoadRequest | None:
    """What to measure for ``spec.autoscaling`` now (None: autoscaling is off, or nothing serves users yet).

    >>> spec = ModelDeploymentSpec.model_validate({"model": {"name": "m", "source": "hf://o/m"}, "autoscaling": {
    ...     "maxReplicas": 4, "target": {"inFlightPerReplica": 4},
    ...     "provider": {"prometheus": {"address": "http://prom:9090"}}}})
    >>> status = ModelDeploymentStatus(stable_revision="chat-1", canary_revision="chat-2", canary_weight=25)
    >>> load_request("ml", spec, status).queries[IN_FLIGHT]
    'sum(avg_over_time(modelops_gateway_inflight_requests{namespace="ml",revision=~"chat-1|chat-2"}[1m]))'
    """
    a = spec.autoscaling
    if a is None:
        return None
    revisions = serving(status.stable_revision, status.canary_revision, status.canary_weight)
    provider = a.provider or (spec.rollout.analysis.provider if spec.rollout.analysis else None)
    if not revisions or provider is None:
        return None
    sel = f'namespace="{namespace}",revision=~"{"|".join(revisions)}"'
    queries = {}
    for name in targets(a):
        if name == IN_FLIGHT:
            queries[name] = f"sum(avg_over_time({INFLIGHT}{{{sel}}}[{a.window}]))"
        else:  # a revision's token series appear with its first tokens: none yet is 0 where gateways report
            queries[name] = f"sum(rate({OUTPUT_TOKENS}{{{sel}}}[{a.window}])) or (sum({INFLIGHT}{{{sel}}}) * 0)"
    return LoadRequest(provider.prometheus.address, queries, tuple(revisions), seconds(a.interval))


@dataclass(frozen=True)
class Autoscaled:
    total: int  # what decide.py splits between revisions
    status: AutoscalingStatus | None = None
    events: tuple[Event, ...] = ()
    warnings: tuple[str, ...] = ()
    # (reason, message) of the Progressing condition while the serving revision scales up
    progress: tuple[str, str] | None = None
    requeue_after: float | None = None


def autoscale(spec: ModelDeploymentSpec, old: ModelDeploymentStatus, observed: Observed, load: LoadSample | None,
              now: dt.datetime, target: str, config: OperatorConfig) -> Autoscaled:
    """The total replicas of this pass. ``old``: the status as read (the revisions that serve users
    are those the load was measured over); ``load``: the adapter's latest sample (None: none)."""
    a = spec.autoscaling
    if a is None:
        return Autoscaled(spec.replicas)
    prev = old.autoscaling
    current = prev.desired if prev else spec.replicas
    revisions = observed.revisions
    stable = old.stable_revision if old.stable_revision in revisions else None
    users = serving(stable, old.canary_revision, old.canary_weight)
    ready = sum(revisions[r].ready for r in users if r in revisions)
    # The pods the total sizes at full: the serving revision (the first one, before anything serves)
    # and the previous revision kept warm after a promotion. A rollout's new revision waits for its
    # GPUs on its own (InsufficientGPU in Progressing); it may need another GPU type than the stable.
    ro = old.rollout
    sized = [stable or target, ro.previous_revision if ro and ro.promoted_at else None]
    verdict = next((revisions[r].unschedulable for r in sized if r in revisions and revisions[r].unschedulable), None)
    history = tuple(Recommendation(r.replicas, parse(r.until)) for r in prev.recommendations) if prev else ()
    scale = scaling.decide(current, ready, load, a, history, now, verdict, config.gpu_resource)

    events: list[Event] = []
    if scale.desired != current:
        events.append(Event("Normal", Reason.SCALED, scale.message))
    if scale.reason in (Reason.INSUFFICIENT_GPU, Reason.UNSCHEDULABLE, Reason.METRIC_UNAVAILABLE) and \
            (prev is None or prev.reason != scale.reason):
        events.append(Event("Warning", scale.reason, scale.message))
    baseline = prev.spec_replicas if prev and prev.spec_replicas is not None else spec.replicas
    warnings = ()
    if spec.replicas != baseline:
        warnings = (f"spec.replicas: {spec.replicas} is ignored: spec.autoscaling decides the total; something else "
                    f"scales this ModelDeployment (kubectl scale, an HPA, KEDA) and two autoscalers fight: keep one "
                    f"(set spec.replicas back to {baseline} to clear this)",)
    status = AutoscalingStatus(
        desired=scale.desired, current=ready, recommendation=scale.recommendation,
        metrics=[AutoscalingMetricStatus(name=n, value=None if scale.values.get(n) is None else
                                         round(scale.values[n] or 0.0, 2), target=t)
                 for n, t in targets(a).items()],
        last_scale_time=iso(now) if scale.desired != current else (prev.last_scale_time if prev else None),
        reason=scale.reason, message=scale.message, spec_replicas=baseline,
        recommendations=[RecommendationRecord(replicas=r.replicas, until=iso(r.until) if r.until else None)
                         for r in scale.history])
    return Autoscaled(scale.desired, status, tuple(events), warnings,
                      _progress(spec, stable, observed, scale.desired, status, now, config.gpu_resource),
                      seconds(a.interval))


def _progress(spec: ModelDeploymentSpec, stable: str | None, observed: Observed, desired: int,
              status: AutoscalingStatus, now: dt.datetime, gpu_resource: str) -> tuple[str, str] | None:
    """While the serving revision's new replicas come up after a scale-up, it is progressing (as a
    Deployment scaling up is), not degraded: until progressDeadline after the scale, and for as long
    as its pods wait for GPUs (which may come from a cluster autoscaler)."""
    if stable is None or stable not in observed.revisions:
        return None
    state = observed.revisions[stable]
    if state.ready >= desired:
        return None
    text = f"scaling {stable} up to {desired} replicas: {state.ready}/{desired} ready"
    if state.unschedulable:
        gpus = "Insufficient" in state.unschedulable and gpu_resource in state.unschedulable
        return (Reason.INSUFFICIENT_GPU if gpus else Reason.UNSCHEDULABLE,
                f"{text}; waiting for the scheduler: {state.unschedulable}")
    scaled = parse(status.last_scale_time)
    if scaled and (now - scaled).total_seconds() <= seconds(spec.rollout.progress_deadline):
        return Reason.SCALING_UP, text
    return None
