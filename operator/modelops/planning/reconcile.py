"""The reconcile planner: (ModelDeployment, observed cluster, config, now) -> Plan.

Pure and level-based: the same inputs give the same plan, and running a plan twice
changes nothing the second time. The executor applies the plan; nothing here does I/O.

Until the rollout strategies land, a new revision replaces the stable one only once it
is Available: the stable revision is never scaled down first.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from modelops.config import OperatorConfig
from modelops.domain import conditions as cond
from modelops.domain.conditions import Reason
from modelops.domain.durations import seconds
from modelops.domain.observed import Observed, RevisionState
from modelops.domain.spec import (
    Condition,
    ConditionStatus,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    RevisionRecord,
)

from . import resources
from .engines.common import PlanError

HISTORY = 10
PROGRESS_REQUEUE = 5.0

T, F, U = ConditionStatus.true.value, ConditionStatus.false.value, ConditionStatus.unknown.value


@dataclass(frozen=True)
class Owner:
    name: str
    namespace: str
    uid: str
    generation: int
    spec: dict[str, Any]
    status: dict[str, Any]

    def ref(self) -> dict[str, str]:
        return {"name": self.name, "namespace": self.namespace, "uid": self.uid}


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Plan:
    apply: list[dict[str, Any]] = field(default_factory=list)
    scale: dict[str, int] = field(default_factory=dict)
    delete: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)
    status: dict[str, Any] | None = None  # the whole new status, or None when unchanged
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    details: list[str] = field(default_factory=list)


def iso(now: dt.datetime) -> str:
    return now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


def _field_of(error: ValidationError) -> str:
    first = error.errors()[0]
    return "spec." + ".".join(str(p) for p in first["loc"])


class _StatusBuilder:
    """Accumulates the new status from the old one, keeping transition times stable."""

    def __init__(self, owner: Owner, now: dt.datetime) -> None:
        self.old = ModelDeploymentStatus.model_validate(owner.status or {})
        self.new = self.old.model_copy(deep=True)
        self.now = iso(now)
        self.owner = owner
        self.events: list[Event] = []

    def condition(self, type_: str, status: str, reason: str, message: str) -> None:
        self.new.conditions = cond.set_condition(self.new.conditions, Condition(
            type=type_, status=status, reason=reason, message=message,
            observed_generation=self.owner.generation), self.now)

    def event_on_change(self, type_: str, reason: str, event_type: str, message: str) -> None:
        """Emit an Event only when the condition's reason changes (transitions, not every resync)."""
        old = cond.get(self.old.conditions, type_)
        if old is None or old.reason != reason:
            self.events.append(Event(event_type, reason, message))

    def record(self, name: str, **updates: Any) -> RevisionRecord:
        records = {r.name: r for r in self.new.revisions}
        rec = records.get(name) or RevisionRecord(name=name, created=self.now)
        rec = rec.model_copy(update=updates)
        others = [r for r in self.new.revisions if r.name != name]
        self.new.revisions = (others + [rec])[-HISTORY:]
        return rec

    def finish(self) -> dict[str, Any] | None:
        for type_ in cond.TYPES:  # every condition is present from the first visit
            if cond.get(self.new.conditions, type_) is None:
                self.condition(type_, U, Reason.RECONCILING, "the operator has not decided yet")
        self.new.phase = cond.derive_phase(self.new.conditions)
        self.new.observed_generation = self.owner.generation
        new = self.new.model_dump(by_alias=True, exclude_none=True, mode="json")
        old = self.old.model_dump(by_alias=True, exclude_none=True, mode="json")
        return None if new == old else new


def plan(owner: Owner, observed: Observed, config: OperatorConfig, now: dt.datetime) -> Plan:
    st = _StatusBuilder(owner, now)
    out = Plan()
    try:
        spec = ModelDeploymentSpec.model_validate(owner.spec)
        target = resources.revision_for(owner.name, spec, config)
    except ValidationError as exc:
        return _invalid(st, out, _field_of(exc), exc.errors()[0]["msg"])
    except PlanError as exc:
        return _invalid(st, out, exc.field, exc.message)

    stable = st.old.stable_revision if st.old.stable_revision in observed.revisions else None
    target_state = observed.revisions.get(target)
    record = {r.name: r for r in st.old.revisions}.get(target)
    pinned = record is not None and record.outcome == "Failed" and record.generation == owner.generation

    if stable == target or (target_state is not None and target_state.is_available(spec.replicas) and not pinned):
        _serve(owner, spec, config, observed, st, out, target)
    elif pinned:
        _failed(spec, observed, st, out, target, stable, record)  # type: ignore[arg-type]
    else:
        _roll_out(owner, spec, config, observed, st, out, target, stable, record, now)

    _prune(observed, st, out, keep={target, st.new.stable_revision or ""}, limit=config.revision_history)
    out.status = st.finish()
    out.events = st.events
    if out.requeue_after is None:
        out.requeue_after = config.resync_seconds
    return out


def _invalid(st: _StatusBuilder, out: Plan, field_path: str, message: str) -> Plan:
    """Refuse the spec in status; whatever serves keeps serving, untouched."""
    text = f"{field_path}: {message}"
    st.event_on_change(cond.DEGRADED, Reason.INVALID_SPEC, "Warning", text)
    st.condition(cond.DEGRADED, T, Reason.INVALID_SPEC, text)
    st.condition(cond.PROGRESSING, F, Reason.INVALID_SPEC, "the spec cannot be rolled out: " + text)
    st.new.message = "invalid spec: " + text
    out.details.append(st.new.message)
    out.status = st.finish()
    out.events = st.events
    return out


def _serve(owner: Owner, spec: ModelDeploymentSpec, config: OperatorConfig, observed: Observed,
           st: _StatusBuilder, out: Plan, target: str) -> None:
    """The target is (or just became) the stable revision: keep it at spec size, serving."""
    promoted = st.old.stable_revision != target
    out.apply.append(resources.revision_deployment(owner.ref(), spec, config, target, spec.replicas))
    out.apply.append(resources.service(owner.ref(), target))
    for name, rev in observed.revisions.items():
        if name != target and rev.replicas > 0:
            out.scale[name] = 0
    state = observed.revisions.get(target, RevisionState(name=target, replicas=0))
    if promoted:
        if st.old.stable_revision:
            st.record(st.old.stable_revision, outcome="Superseded", reason="Replaced")
        st.events.append(Event("Normal", "Promoted", f"revision {target} now serves {spec.model.name}"))
    st.record(target, model=spec.model.name, source=spec.model.source, engine=spec.engine.type,
              image=spec.engine.image or _default_image(spec, config), outcome="Serving", reason="Available",
              generation=owner.generation)
    st.new.stable_revision = target
    st.new.canary_revision = None
    st.new.canary_weight = None
    st.new.current_step = None
    _replica_status(st, state, spec.replicas)
    ready_all = state.ready >= spec.replicas and state.replicas == spec.replicas
    st.condition(cond.PROGRESSING, T, Reason.REVISION_AVAILABLE, f"revision {target} is serving")
    st.condition(cond.DEGRADED, F, Reason.AS_EXPECTED, "")
    if ready_all:
        st.condition(cond.READY, T, Reason.ALL_REPLICAS_READY, f"{state.ready}/{spec.replicas} replicas ready")
        st.new.message = f"{target} serves {spec.model.name}: {state.ready}/{spec.replicas} ready"
    else:
        st.condition(cond.READY, F, Reason.REPLICAS_NOT_READY, _waiting(state, spec.replicas))
        st.new.message = f"{target}: " + _waiting(state, spec.replicas)
        out.requeue_after = PROGRESS_REQUEUE
    _available(st, state, spec.replicas)


def _roll_out(owner: Owner, spec: ModelDeploymentSpec, config: OperatorConfig, observed: Observed,
              st: _StatusBuilder, out: Plan, target: str, stable: str | None,
              record: RevisionRecord | None, now: dt.datetime) -> None:
    """A new revision is coming up beside the stable one (or is the first)."""
    state = observed.revisions.get(target, RevisionState(name=target, replicas=0))
    out.apply.append(resources.revision_deployment(owner.ref(), spec, config, target, spec.replicas))
    if stable is None:
        out.apply.append(resources.service(owner.ref(), target))  # nothing serves yet: point at the newcomer
    started = record.started if record and record.outcome == "Progressing" and record.generation == owner.generation \
        else None
    if started is None:
        st.events.append(Event("Normal", Reason.NEW_REVISION,
                               f"rolling out revision {target} ({spec.model.name} on {spec.engine.type})"))
        started = st.now
    st.record(target, model=spec.model.name, source=spec.model.source, engine=spec.engine.type,
              image=spec.engine.image or _default_image(spec, config), outcome="Progressing",
              reason=Reason.REVISION_PROGRESSING, generation=owner.generation, started=started)
    st.new.canary_revision = target if stable else None
    st.new.canary_weight = 0 if stable else None
    out.requeue_after = PROGRESS_REQUEUE

    elapsed = (now - (_parse_time(started) or now)).total_seconds()
    deadline = seconds(spec.rollout.progress_deadline)
    if state.unschedulable and "Insufficient" in state.unschedulable and config.gpu_resource in state.unschedulable:
        text = (f"waiting for GPUs: revision {target} needs {spec.resources.gpu.count} {config.gpu_resource} "
                f"per replica and the scheduler says: {state.unschedulable}")
        st.event_on_change(cond.PROGRESSING, Reason.INSUFFICIENT_GPU, "Warning", text)
        st.condition(cond.PROGRESSING, T, Reason.INSUFFICIENT_GPU, text)
        st.new.message = text
    elif elapsed > deadline:
        failed = st.record(target, outcome="Failed", reason=Reason.PROGRESS_DEADLINE_EXCEEDED)
        out.apply.pop(0)  # do not re-apply it at full size
        out.requeue_after = None
        _failed(spec, observed, st, out, target, stable, failed)
        out.scale[target] = 0
        return
    else:
        text = f"rolling out {target}: " + _waiting(state, spec.replicas)
        st.condition(cond.PROGRESSING, T, Reason.REVISION_PROGRESSING, text)
        st.condition(cond.DEGRADED, F, Reason.AS_EXPECTED, "")
        st.new.message = text
        out.requeue_after = min(PROGRESS_REQUEUE, max(1.0, deadline - elapsed))
    _stable_status(st, observed, stable, spec.replicas, rolling=True)


def _failed(spec: ModelDeploymentSpec, observed: Observed, st: _StatusBuilder, out: Plan, target: str,
            stable: str | None, record: RevisionRecord) -> None:
    """The spec asks for a revision that failed at this generation: leave it down, stable serving."""
    if observed.revisions.get(target) and observed.revisions[target].replicas > 0:
        out.scale[target] = 0
    why = {Reason.PROGRESS_DEADLINE_EXCEEDED: f"was not available within progressDeadline "
                                              f"{spec.rollout.progress_deadline}"}.get(record.reason, record.reason)
    text = f"revision {target} {why}; change the spec to try again"
    st.event_on_change(cond.DEGRADED, record.reason, "Warning", text)
    st.condition(cond.PROGRESSING, F, record.reason, text)
    st.condition(cond.DEGRADED, T, record.reason, text)
    st.new.message = text
    st.new.canary_revision = None
    st.new.canary_weight = None
    _stable_status(st, observed, stable, None, rolling=False)


def _stable_status(st: _StatusBuilder, observed: Observed, stable: str | None, want: int | None,
                   rolling: bool) -> None:
    if stable is None:
        st.new.stable_revision = None
        _replica_status(st, RevisionState(name="", replicas=0), want or 0)
        st.condition(cond.AVAILABLE, F, Reason.NO_REPLICAS_AVAILABLE, "no revision serves yet")
        st.condition(cond.READY, F, Reason.ROLLOUT_IN_PROGRESS if rolling else Reason.NO_REPLICAS_AVAILABLE,
                     "no revision serves yet")
        return
    state = observed.revisions[stable]
    _replica_status(st, state, state.replicas)
    _available(st, state, state.replicas)
    if rolling:
        st.condition(cond.READY, F, Reason.ROLLOUT_IN_PROGRESS, f"{stable} serves while the new revision rolls out")
    elif state.ready >= state.replicas:
        st.condition(cond.READY, T, Reason.ALL_REPLICAS_READY, f"{stable} serves: {state.ready}/{state.replicas} ready")
    else:
        st.condition(cond.READY, F, Reason.REPLICAS_NOT_READY, _waiting(state, state.replicas))


def _available(st: _StatusBuilder, state: RevisionState, want: int) -> None:
    if want == 0:
        st.condition(cond.AVAILABLE, F, Reason.SCALED_TO_ZERO, "replicas is 0")
    elif state.available > 0:
        st.condition(cond.AVAILABLE, T, Reason.MINIMUM_REPLICAS_AVAILABLE,
                     f"{state.available}/{want} replicas of {state.name} available")
    else:
        st.condition(cond.AVAILABLE, F, Reason.NO_REPLICAS_AVAILABLE, f"no replica of {state.name} is available")


def _replica_status(st: _StatusBuilder, state: RevisionState, want: int) -> None:
    st.new.replicas = want
    st.new.ready_replicas = state.ready
    st.new.ready = f"{state.ready}/{want}"


def _waiting(state: RevisionState, want: int) -> str:
    return f"{state.ready}/{want} replicas ready"


def _default_image(spec: ModelDeploymentSpec, config: OperatorConfig) -> str:
    return config.vllm_image if spec.engine.type == "vllm" else config.ollama_image


def _prune(observed: Observed, st: _StatusBuilder, out: Plan, keep: set[str], limit: int) -> None:
    """Delete old revisions beyond the history limit (oldest first); they are already at zero."""
    old = sorted((r for n, r in observed.revisions.items() if n not in keep and r.replicas == 0
                  and out.scale.get(n, 0) == 0), key=lambda r: r.created or "")
    for rev in old[: max(0, len(old) - limit)]:
        out.delete.append(("Deployment", rev.name))
