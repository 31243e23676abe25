"""Conditions are the truth; the phase is derived from them.

Reasons are one CamelCase word, all defined here.
"""

from __future__ import annotations

from modelops.domain.spec import Condition, ConditionStatus, Phase

AVAILABLE = "Available"
READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
TYPES = (READY, AVAILABLE, PROGRESSING, DEGRADED)


class Reason:
    # Available
    MINIMUM_REPLICAS_AVAILABLE = "MinimumReplicasAvailable"
    NO_REPLICAS_AVAILABLE = "NoReplicasAvailable"
    SCALED_TO_ZERO = "ScaledToZero"
    # Ready
    ALL_REPLICAS_READY = "AllReplicasReady"
    REPLICAS_NOT_READY = "ReplicasNotReady"
    ROLLOUT_IN_PROGRESS = "RolloutInProgress"
    # Progressing
    NEW_REVISION = "NewRevision"
    REVISION_PROGRESSING = "RevisionProgressing"
    REVISION_AVAILABLE = "RevisionAvailable"
    INSUFFICIENT_GPU = "InsufficientGPU"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    PAUSED = "Paused"
    # Degraded
    AS_EXPECTED = "AsExpected"
    INVALID_SPEC = "InvalidSpec"
    ROLLED_BACK = "RolledBack"
    # first visit
    RECONCILING = "Reconciling"
    # Events only (besides NewRevision, Paused, RolledBack, ProgressDeadlineExceeded above)
    PROMOTED = "Promoted"
    STEP_REACHED = "StepReached"
    DEGRADED_DURING_BAKE = "DegradedDuringBake"
    UNKNOWN_RECEIVER = "UnknownReceiver"
    # Autoscaling (status.autoscaling.reason; Events Scaled, InsufficientGPU, MetricUnavailable,
    # ReplicasIgnored; Progressing ScalingUp while the stable's new replicas come up)
    SCALED = "Scaled"
    SCALED_UP = "ScaledUp"
    SCALED_DOWN = "ScaledDown"
    SCALING_UP = "ScalingUp"
    AT_TARGET = "AtTarget"
    AT_MAXIMUM = "AtMaximum"
    AT_MINIMUM = "AtMinimum"
    SCALE_UP_STABILIZED = "ScaleUpStabilized"
    SCALE_DOWN_STABILIZED = "ScaleDownStabilized"
    UNSCHEDULABLE = "Unschedulable"
    METRIC_UNAVAILABLE = "MetricUnavailable"
    NO_DATA = "NoData"
    NO_READY_REPLICAS = "NoReadyReplicas"
    REPLICAS_IGNORED = "ReplicasIgnored"


def get(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: list[Condition], type_: str) -> bool:
    c = get(conditions, type_)
    return c is not None and c.status == ConditionStatus.true.value


def set_condition(conditions: list[Condition], new: Condition, now: str) -> list[Condition]:
    """Replace the condition of ``new.type``; lastTransitionTime changes only when status flips."""
    old = get(conditions, new.type)
    ltt = old.last_transition_time if old is not None and old.status == new.status else now
    updated = new.model_copy(update={"last_transition_time": ltt})
    out = [c for c in conditions if c.type != new.type] + [updated]
    return sorted(out, key=lambda c: TYPES.index(c.type) if c.type in TYPES else len(TYPES))


def derive_phase(conditions: list[Condition]) -> Phase:
    """The phase a person reads, computed from conditions only.

    Degraded wins (RolledBack, or Failed for any other reason); then a paused or
    running rollout; then Healthy when Ready; otherwise Pending.
    """
    degraded = get(conditions, DEGRADED)
    if degraded is not None and degraded.status == ConditionStatus.true.value:
        if degraded.reason == Reason.ROLLED_BACK:
            return Phase.rolled_back
        return Phase.failed
    progressing = get(conditions, PROGRESSING)
    if progressing is not None and progressing.reason == Reason.PAUSED:
        return Phase.paused
    rolling = progressing is not None and progressing.status == ConditionStatus.true.value \
        and progressing.reason != Reason.REVISION_AVAILABLE
    if rolling and is_true(conditions, AVAILABLE):
        return Phase.progressing
    if is_true(conditions, READY):
        return Phase.healthy
    if is_true(conditions, AVAILABLE) and not rolling:
        return Phase.degraded
    return Phase.pending
