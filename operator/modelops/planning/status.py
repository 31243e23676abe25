"""Status from a decision: the one place that computes conditions and the phase.

Like Argo Rollouts' ``syncRolloutStatusCanary``: the whole status is computed from the
decision and the observed revisions, the phase is derived from the conditions,
``observedGeneration`` is set last, and nothing is written when nothing changed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from modelops.domain import conditions as cond
from modelops.domain.analysis import MetricState
from modelops.domain.conditions import Reason
from modelops.domain.autoscaling import serving
from modelops.domain.observed import Observed, RevisionState
from modelops.domain.spec import Condition, ConditionStatus, ModelDeploymentStatus, RevisionRecord
from modelops.domain.timestamps import iso

from .decide import Decision, Situation

HISTORY = 10
T, F, U = ConditionStatus.true.value, ConditionStatus.false.value, ConditionStatus.unknown.value


class StatusBuilder:
    """The new status, from the old one, keeping transition times and record creation times."""

    def __init__(self, old: ModelDeploymentStatus, generation: int, now: dt.datetime) -> None:
        self.old = old
        self.new = old.model_copy(deep=True)
        self.generation = generation
        self.now = iso(now)

    def condition(self, type_: str, status: str, reason: str, message: str) -> None:
        self.new.conditions = cond.set_condition(self.new.conditions, Condition(
            type=type_, status=status, reason=reason, message=message,
            observed_generation=self.generation), self.now)

    def record(self, name: str, **updates: Any) -> None:
        """Update a revision's record in place (a new one goes last; the oldest drop off)."""
        records = list(self.new.revisions)
        at = next((i for i, r in enumerate(records) if r.name == name), None)
        if at is None:
            records.append(RevisionRecord(name=name, created=self.now).model_copy(update=updates))
        else:
            records[at] = records[at].model_copy(update=updates)
        self.new.revisions = records[-HISTORY:]

    def finish(self) -> dict[str, Any] | None:
        for type_ in cond.TYPES:  # every condition is present from the first visit
            if cond.get(self.new.conditions, type_) is None:
                self.condition(type_, U, Reason.RECONCILING, "the operator has not decided yet")
        self.new.phase = cond.derive_phase(self.new.conditions)
        self.new.observed_generation = self.generation
        new = self.new.model_dump(by_alias=True, exclude_none=True, mode="json")
        old = self.old.model_dump(by_alias=True, exclude_none=True, mode="json")
        return None if new == old else new


def apply_decision(st: StatusBuilder, d: Decision, stable_state: RevisionState, replicas: int,
                   target_fields: dict[str, Any], target: str, observed: Observed | None = None,
                   scaling: tuple[str, str] | None = None) -> None:
    """Write the decision into the status: revisions, rollout state, analysis, conditions.
    ``replicas``: the total (spec.replicas, or the autoscaled one); ``scaling``: the Progressing
    reason and message while the serving revision scales up on autoscaling's word."""
    new = st.new
    new.stable_revision = d.stable
    new.canary_revision = d.canary
    new.canary_weight = d.weight
    new.current_step = d.step
    new.rollout = d.rollout if d.rollout.revision else None
    new.analysis = {k: v.model_dump(by_alias=True, exclude_none=True, mode="json")
                    for k, v in d.analysis.items()} or None
    for name, updates in d.records.items():
        st.record(name, **(target_fields if name == target else {}), **updates)
    new.message = d.message
    # The scale subresource's current count: ready replicas of the revisions users' requests reach.
    revisions = observed.revisions if observed is not None else {}
    new.replicas = sum(revisions[r].ready for r in serving(d.stable, d.canary, d.weight) if r in revisions)
    new.ready_replicas = stable_state.ready if d.stable else 0
    new.ready = f"{min(new.ready_replicas, replicas)}/{replicas}"
    _conditions(st, d, stable_state if d.stable else None, replicas, scaling)


def _conditions(st: StatusBuilder, d: Decision, stable: RevisionState | None, want: int,
                scaling: tuple[str, str] | None = None) -> None:
    s = d.situation
    if s in (Situation.ROLLED_BACK, Situation.FAILED):
        st.condition(cond.PROGRESSING, F, d.reason, d.message)
        st.condition(cond.DEGRADED, T, d.reason, d.message)
    else:
        reason = {Situation.SERVING: Reason.REVISION_AVAILABLE, Situation.BAKING: "Baking"}.get(s, d.reason)
        if s == Situation.SERVING and scaling:  # scaling up, as a Deployment is progressing while it scales up
            st.condition(cond.PROGRESSING, T, *scaling)
        else:
            st.condition(cond.PROGRESSING, T, reason, d.message)
        st.condition(cond.DEGRADED, F, Reason.AS_EXPECTED, "")
    if stable is None:
        st.condition(cond.AVAILABLE, F, Reason.NO_REPLICAS_AVAILABLE, "no revision serves yet")
        st.condition(cond.READY, F, Reason.ROLLOUT_IN_PROGRESS if s == Situation.FIRST else Reason.NO_REPLICAS_AVAILABLE,
                     "no revision serves yet")
        return
    if want == 0:
        st.condition(cond.AVAILABLE, F, Reason.SCALED_TO_ZERO, "replicas is 0")
    elif stable.available > 0:
        st.condition(cond.AVAILABLE, T, Reason.MINIMUM_REPLICAS_AVAILABLE,
                     f"{min(stable.available, want)}/{want} replicas of {stable.name} available")
    else:
        st.condition(cond.AVAILABLE, F, Reason.NO_REPLICAS_AVAILABLE, f"no replica of {stable.name} is available")
    if s == Situation.ROLLING:
        st.condition(cond.READY, F, Reason.ROLLOUT_IN_PROGRESS, f"{stable.name} serves while the new revision rolls out")
    elif stable.ready >= want and stable.replicas == want:
        st.condition(cond.READY, T, Reason.ALL_REPLICAS_READY, f"{stable.name} serves: {want}/{want} ready")
    else:
        st.condition(cond.READY, F, Reason.REPLICAS_NOT_READY, f"{min(stable.ready, want)}/{want} replicas ready")


def metric_states(status: ModelDeploymentStatus) -> dict[str, MetricState]:
    return {k: MetricState.model_validate(v) for k, v in (status.analysis or {}).items()}
