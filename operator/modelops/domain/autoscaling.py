"""Autoscaling: how many replicas the load asks for, stabilized as the HPA does (pure).

``decide(current, ready, sample, spec, history, now)`` gives the **total** replicas of a
ModelDeployment (a rollout then splits it between revisions, planning/decide.py) and a reason:

1. **Recommend.** Each target's measured sum over the revisions that serve users (in-flight
   requests, output tokens/s) divided by the target per replica is the replicas that load needs;
   within 10 % of the current total (the HPA's tolerance) the current total is recommended. With
   two targets the larger recommendation wins; a target with no data may not make the total
   smaller (the HPA's rule for metrics that fail). No sample, a provider error, NaN or no ready
   replica to measure recommends nothing: the total stays.
2. **Stabilize** (the HPA's ``stabilizeRecommendationWithBehaviors``): scale up only to the lowest
   recommendation of the scale-up window (default 0s), down only to the highest of the scale-down
   window (default 5m). Flapping load inside the windows therefore never flaps the total.
3. **Bounds**: ``minReplicas`` ≤ total ≤ ``maxReplicas``, at once when they change.
4. **Pods that cannot be placed** (``unschedulable``, the scheduler's verdict on the pods the total
   sizes, e.g. ``Insufficient nvidia.com/gpu``): the total does not grow until they are placed. The
   pending pods are the request for GPUs that a cluster autoscaler acts on; asking for more before
   they land would only measure the queue of the replicas that are short of capacity. It may shrink.

The history of recommendations is kept as changes only: ``(replicas, until)``, ``until`` None for
the recommendation in force now; an entry that can no longer decide (older than both windows, or
with a later entry at least as high and a later one at least as low) is dropped, so the history
stays short and is written only when the recommendation changes.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Callable

from modelops.domain.conditions import Reason
from modelops.domain.durations import seconds
from modelops.domain.spec import AutoscalingSpec

TOLERANCE = 0.1  # the HPA's --horizontal-pod-autoscaler-tolerance
IN_FLIGHT = "inFlightPerReplica"
OUTPUT_TOKENS = "outputTokensPerSecondPerReplica"
WORDS = {IN_FLIGHT: "requests in flight", OUTPUT_TOKENS: "output tokens/s"}


@dataclass(frozen=True)
class LoadSample:
    """What the provider measured over the revisions that serve users: the sum of each target's
    signal (None: no data), or why it could not be measured."""

    totals: dict[str, float | None] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class Recommendation:
    replicas: int
    until: dt.datetime | None = None  # None: the recommendation in force now


@dataclass(frozen=True)
class Scale:
    desired: int
    reason: str
    message: str
    recommendation: int | None  # this pass's, within the bounds (None: none)
    values: dict[str, float | None]  # per ready replica
    history: tuple[Recommendation, ...]


def targets(spec: AutoscalingSpec) -> dict[str, float]:
    t = spec.target
    out = {IN_FLIGHT: t.in_flight_per_replica, OUTPUT_TOKENS: t.output_tokens_per_second_per_replica}
    return {k: v for k, v in out.items() if v}


def serving(stable: str | None, canary: str | None, weight: int | None) -> list[str]:
    """The revisions users' requests reach: the stable, and the revision rolled out once it has a
    share (a canary's weight, an A/B challenger's users); not a blue-green preview, nor a shadow
    (mirrored copies are not users).

    >>> serving("a", "b", 25), serving("a", "b", 0), serving(None, "b", 0)
    (['a', 'b'], ['a'], [])
    """
    return [r for r in (stable, canary if weight else None) if r]


def recommend(current: int, ready: int, sample: LoadSample | None,
              spec: AutoscalingSpec) -> tuple[int | None, str, str, dict[str, float | None]]:
    """Replicas the load asks for (None: it says nothing), why, in a word and in words, and the
    values per ready replica.

    >>> spec = AutoscalingSpec.model_validate({"maxReplicas": 10, "target": {"inFlightPerReplica": 4}})
    >>> recommend(2, 2, LoadSample({IN_FLIGHT: 20.0}), spec)[:2]
    (5, 'ScaledUp')
    >>> recommend(5, 5, LoadSample({IN_FLIGHT: 21.0}), spec)[:2]  # 5.25 replicas: within 10 % of 5
    (5, 'AtTarget')
    >>> recommend(2, 2, LoadSample({IN_FLIGHT: float("nan")}), spec)[:2]
    (None, 'NoData')
    """
    wanted = targets(spec)
    values: dict[str, float | None] = {name: None for name in wanted}
    if sample is None:
        return None, Reason.NO_DATA, "the load has not been measured yet", values
    if sample.error:
        return None, Reason.METRIC_UNAVAILABLE, f"the load could not be measured: {sample.error}", values
    if ready <= 0:
        return None, Reason.NO_READY_REPLICAS, "no ready replica serves users: there is no load to measure", values
    proposals: list[tuple[int, float, str]] = []
    missing: list[str] = []
    for name, target in wanted.items():
        total = sample.totals.get(name)
        if total is None or not math.isfinite(total):
            missing.append(name)
            continue
        total = max(0.0, total)
        values[name] = total / ready
        need = total / target  # replicas that carry this load at the target
        within = current > 0 and abs(need / current - 1) <= TOLERANCE
        proposals.append((current if within else max(0, math.ceil(need - 1e-9)), need, name))
    if not proposals:
        return None, Reason.NO_DATA, "no data for " + ", ".join(missing), values
    raw, need, name = max(proposals)
    text = f"{_load(values, wanted, ready)}: the load needs {need:.2f} replicas"
    if missing and raw < current:
        return current, Reason.NO_DATA, text + f"; no data for {', '.join(missing)}, so not fewer than {current}", \
            values
    if raw == current:
        return raw, Reason.AT_TARGET, text + f" (within {TOLERANCE:.0%} of {current})", values
    return raw, Reason.SCALED_UP if raw > current else Reason.SCALED_DOWN, text, values


def _load(values: dict[str, float | None], wanted: dict[str, float], ready: int) -> str:
    parts = [f"{values[n]:.2f} {WORDS[n]} per ready replica (target {wanted[n]:g})"
             for n in wanted if values.get(n) is not None]
    return ", ".join(parts) + f" over {ready} ready"


def stabilize(current: int, raw: int, history: tuple[Recommendation, ...], now: dt.datetime,
              up_window: float, down_window: float) -> int:
    """The HPA's stabilization: up to the lowest recommendation of the scale-up window, down to the
    highest of the scale-down window, else stay.

    >>> t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    >>> past = (Recommendation(6, t - dt.timedelta(seconds=60)), Recommendation(3))
    >>> stabilize(6, 2, past, t, 0, 300), stabilize(6, 2, past, t, 0, 30), stabilize(2, 8, past, t, 120, 300)
    (6, 3, 3)
    """
    up = down = raw
    for rec in history:
        at = rec.until or now
        if at > now - dt.timedelta(seconds=up_window):
            up = min(up, rec.replicas)
        if at > now - dt.timedelta(seconds=down_window):
            down = max(down, rec.replicas)
    return min(max(current, up), down)


def remember(history: tuple[Recommendation, ...], raw: int | None, now: dt.datetime,
             up_window: float, down_window: float) -> tuple[Recommendation, ...]:
    """The history after this pass: a changed recommendation closes the one in force (``raw`` None,
    no recommendation, closes it too). An entry is kept only while it can still decide: inside the
    scale-up window with no later entry as low, or inside the scale-down window with no later one
    as high (windows only move on, and later entries stay inside longer).

    >>> t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    >>> h = remember((), 4, t, 0, 300)
    >>> h == remember(h, 4, t + dt.timedelta(seconds=30), 0, 300)  # unchanged: nothing to write
    True
    >>> [r.replicas for r in remember(remember(h, 2, t, 0, 300), 3, t, 0, 300)]  # 2 can no longer decide
    [4, 3]
    >>> [r.replicas for r in remember(remember(h, 2, t, 60, 300), 3, t, 60, 300)]  # the lowest of the up window
    [4, 2, 3]
    """
    out = list(history)
    if out and out[-1].until is None and out[-1].replicas != raw:
        out[-1] = Recommendation(out[-1].replicas, now)
    if raw is not None and not (out and out[-1].until is None):
        out.append(Recommendation(raw))
    kept: list[Recommendation] = []
    for i, rec in enumerate(out):
        if rec.until is None:
            kept.append(rec)
            continue
        later = out[i + 1:]
        for_up = rec.until > now - dt.timedelta(seconds=up_window) and \
            not any(r.replicas <= rec.replicas for r in later)
        for_down = rec.until > now - dt.timedelta(seconds=down_window) and \
            not any(r.replicas >= rec.replicas for r in later)
        if for_up or for_down:
            kept.append(rec)
    return tuple(kept)


def decide(current: int, ready: int, sample: LoadSample | None, spec: AutoscalingSpec,
           history: tuple[Recommendation, ...], now: dt.datetime, unschedulable: str | None = None,
           gpu_resource: str = "nvidia.com/gpu") -> Scale:
    """The total replicas and why. ``current``: the total decided last; ``ready``: ready replicas of
    the revisions that serve users; ``unschedulable``: the scheduler's verdict on pods the total
    sizes that cannot be placed (None: every pod is placed)."""
    lo, hi = spec.min_replicas, spec.max_replicas
    bounded = min(max(current, lo), hi)
    up, down = seconds(spec.scale_up.stabilization_window), seconds(spec.scale_down.stabilization_window)
    raw, reason, text, values = recommend(bounded, ready, sample, spec)
    if raw is None:
        history = remember(history, None, now, up, down)
        if bounded != current:
            return Scale(bounded, _bounds_reason(current, bounded), _bounds_text(current, bounded, lo, hi) +
                         f"; {text}", None, values, history)
        return Scale(bounded, reason, f"{bounded} replicas kept: {text}", None, values, history)
    within = min(max(raw, lo), hi)
    desired = stabilize(bounded, within, history, now, up, down)
    history = remember(history, within, now, up, down)
    if unschedulable and desired > bounded:
        gpus = "Insufficient" in unschedulable and gpu_resource in unschedulable
        return Scale(bounded, Reason.INSUFFICIENT_GPU if gpus else Reason.UNSCHEDULABLE,
                     f"the load asks for {desired} replicas; held at {bounded} until the pending pods are placed "
                     f"(the scheduler: {unschedulable}); {text}", within, values, history)
    if desired != current:
        why = Reason.SCALED_UP if desired > current else Reason.SCALED_DOWN
        if desired == bounded:  # the bounds moved it, not the load
            return Scale(desired, why, _bounds_text(current, desired, lo, hi) + f"; {text}", within, values, history)
        return Scale(desired, why, f"{current} → {desired} replicas: {text}", within, values, history)
    if raw > hi and desired == hi:
        return Scale(desired, Reason.AT_MAXIMUM, f"the load asks for {raw} replicas; maxReplicas is {hi}; {text}",
                     within, values, history)
    if raw < lo and desired == lo:
        return Scale(desired, Reason.AT_MINIMUM, f"{lo} replicas (minReplicas); {text}", within, values, history)
    if within > desired:
        return Scale(desired, Reason.SCALE_UP_STABILIZED,
                     f"the load asks for {within} replicas; {desired} held: the scaleUp window "
                     f"({spec.scale_up.stabilization_window}) saw {_seen(history, desired, now, up, min)}; {text}",
                     within, values, history)
    if within < desired:
        return Scale(desired, Reason.SCALE_DOWN_STABILIZED,
                     f"the load asks for {within} replicas; {desired} held: the scaleDown window "
                     f"({spec.scale_down.stabilization_window}) saw {_seen(history, desired, now, down, max)}; "
                     f"{text}", within, values, history)
    return Scale(desired, reason if reason == Reason.NO_DATA else Reason.AT_TARGET, f"{desired} replicas: {text}",
                 within, values, history)


def _seen(history: tuple[Recommendation, ...], desired: int, now: dt.datetime, window: float,
          pick: Callable[[list[int]], int]) -> str:
    inside = [r.replicas for r in history if (r.until or now) > now - dt.timedelta(seconds=window)]
    return f"a recommendation of {pick(inside) if inside else desired}"


def _bounds_reason(current: int, bounded: int) -> str:
    return Reason.SCALED_UP if bounded > current else Reason.SCALED_DOWN


def _bounds_text(current: int, bounded: int, lo: int, hi: int) -> str:
    bound = f"minReplicas is {lo}" if bounded == lo and current < lo else f"maxReplicas is {hi}"
    return f"{current} → {bounded} replicas: {bound}"
