"""The reconcile planner: (ModelDeployment, observed cluster, measurements, now) -> Plan.

Pure and level-based: the same inputs give the same plan, and running a plan twice
changes nothing the second time. The whole rollout state lives in status, so after a
restart the next plan continues from the same step: a weight is set once, a promotion
happens once. The executor applies the plan; nothing here does I/O.

Cases, in order:
- the spec cannot be rendered -> InvalidSpec in status, nothing touched;
- no stable revision yet -> bring the first one up at full size and serve it once Available;
- the spec asks for the stable revision -> keep it serving (and finish a bake or a
  blue-green scale-down delay, rolling back if post-promotion analysis degrades);
- the spec asks for a revision that failed or was rolled back at this generation -> leave
  it down (pinned, so re-applying the same spec does not loop) with stable serving;
- otherwise -> roll it out with the strategy (planning.rollout).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from modelops.config import OperatorConfig
from modelops.domain import conditions as cond
from modelops.domain.analysis import Measurement, MetricState, record
from modelops.domain.conditions import Reason
from modelops.domain.golden import GoldenAnswer
from modelops.domain.observed import Observed, RevisionState
from modelops.domain.spec import (
    Condition,
    ConditionStatus,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    ResolvedMetadata,
    RevisionRecord,
)

from . import resources, traffic
from .engines.common import PlanError

HISTORY = 10
PROGRESS_REQUEUE = 5.0
ANNOTATION_PREFIX = "modelops.dev/"
COMMANDS = ("promote", "abort", "pause", "resume")
PINNED_OUTCOMES = ("Failed", "RolledBack")

T, F, U = ConditionStatus.true.value, ConditionStatus.false.value, ConditionStatus.unknown.value


@dataclass(frozen=True)
class Owner:
    name: str
    namespace: str
    uid: str
    generation: int
    spec: dict[str, Any]
    status: dict[str, Any]
    annotations: dict[str, str] = field(default_factory=dict)

    def ref(self) -> dict[str, str]:
        return {"name": self.name, "namespace": self.namespace, "uid": self.uid}

    def commands(self) -> dict[str, str]:
        """Manual control annotations present on the object (acted on once, then removed)."""
        return {c: self.annotations[ANNOTATION_PREFIX + c] for c in COMMANDS
                if ANNOTATION_PREFIX + c in self.annotations}


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
    clear_annotations: list[str] = field(default_factory=list)
    requeue_after: float | None = None
    details: list[str] = field(default_factory=list)

    def wake_within(self, seconds: float) -> None:
        self.requeue_after = seconds if self.requeue_after is None else min(self.requeue_after, seconds)


def iso(now: dt.datetime) -> str:
    return now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


class StatusBuilder:
    """Accumulates the new status from the old one, keeping transition times stable."""

    def __init__(self, owner: Owner, now: dt.datetime) -> None:
        self.old = ModelDeploymentStatus.model_validate(owner.status or {})
        self.new = self.old.model_copy(deep=True)
        self.now_dt = now
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

    def event(self, event_type: str, reason: str, message: str) -> None:
        self.events.append(Event(event_type, reason, message))

    def record(self, name: str, **updates: Any) -> RevisionRecord:
        records = {r.name: r for r in self.new.revisions}
        rec = records.get(name) or RevisionRecord(name=name, created=self.now)
        rec = rec.model_copy(update=updates)
        others = [r for r in self.new.revisions if r.name != name]
        self.new.revisions = (others + [rec])[-HISTORY:]
        return rec

    def metric_states(self) -> dict[str, MetricState]:
        return {k: MetricState.model_validate(v) for k, v in (self.new.analysis or {}).items()}

    def finish(self) -> dict[str, Any] | None:
        for type_ in cond.TYPES:  # every condition is present from the first visit
            if cond.get(self.new.conditions, type_) is None:
                self.condition(type_, U, Reason.RECONCILING, "the operator has not decided yet")
        self.new.phase = cond.derive_phase(self.new.conditions)
        self.new.observed_generation = self.owner.generation
        new = self.new.model_dump(by_alias=True, exclude_none=True, mode="json")
        old = self.old.model_dump(by_alias=True, exclude_none=True, mode="json")
        return None if new == old else new


@dataclass
class Ctx:
    """Everything one planning pass reads and writes."""

    owner: Owner
    spec: ModelDeploymentSpec
    config: OperatorConfig
    observed: Observed
    st: StatusBuilder
    out: Plan
    target: str
    stable: str | None
    commands: dict[str, str]
    golden: list[GoldenAnswer] | None = None
    metadata: tuple[str, int] | None = None  # a metadata prefix's newest object and its generation

    @property
    def now(self) -> dt.datetime:
        return self.st.now_dt

    @property
    def replicas(self) -> int:
        return self.spec.replicas

    def state(self, revision: str | None) -> RevisionState:
        return self.observed.revisions.get(revision or "", RevisionState(name=revision or "", replicas=0))

    def deployment(self, revision: str, replicas: int) -> None:
        """Desire ``revision`` at ``replicas``: the full object for the target, a scale for older ones."""
        if revision == self.target:
            self.out.apply.append(resources.revision_deployment(self.owner.ref(), self.spec, self.config,
                                                                revision, replicas, self.metadata))
        elif self.state(revision).replicas != replicas and revision in self.observed.revisions:
            self.out.scale[revision] = replicas

    def record_started(self) -> dt.datetime:
        """When the target's current rollout started (now, if it is just starting)."""
        rec = {r.name: r for r in self.st.new.revisions}.get(self.target)
        return parse_time(rec.started if rec else None) or self.now

    def route(self, t: traffic.Traffic) -> None:
        objs = traffic.objects(self.owner.ref(), self.spec, t, split_applied=self.observed.split_applied)
        if t.canary and self.golden_prompts and t.canary not in {o["metadata"]["name"] for o in objs}:
            objs.append(traffic.service(self.owner.ref(), t.canary, t.canary))  # the gate calls the revision
        self.out.apply.extend(objs)

    @property
    def golden_prompts(self) -> bool:
        a = self.spec.rollout.analysis
        return bool(a and a.pre_promotion and a.pre_promotion.golden_prompts)

    def record_target(self, **updates: Any) -> RevisionRecord:
        return self.st.record(self.target, model=self.spec.model.name, source=self.spec.model.source,
                              engine=self.spec.engine.type,
                              image=self.spec.engine.image or _default_image(self.spec, self.config),
                              metadata_generation=self.metadata[1] if self.metadata else None,
                              generation=self.owner.generation, **updates)


def plan(owner: Owner, observed: Observed, config: OperatorConfig, now: dt.datetime,
         measurements: list[Measurement] | None = None, golden: list[GoldenAnswer] | None = None,
         metadata: ResolvedMetadata | None = None) -> Plan:
    from . import rollout  # the strategies build on this module's context

    st = StatusBuilder(owner, now)
    out = Plan()
    commands = owner.commands()
    out.clear_annotations = [ANNOTATION_PREFIX + c for c in commands]
    try:
        spec = ModelDeploymentSpec.model_validate(owner.spec)
        resolved = _resolved_metadata(st, spec, metadata)
        if is_metadata_prefix(spec) and resolved is None:
            return _invalid(st, out, "spec.model.metadata",
                            f"no best_model_metadata.json found under {spec.model.metadata} yet")
        target = resources.revision_for(owner.name, spec, config, resolved)
    except ValidationError as exc:
        first = exc.errors()[0]
        return _invalid(st, out, "spec." + ".".join(str(p) for p in first["loc"]), first["msg"])
    except PlanError as exc:
        return _invalid(st, out, exc.field, exc.message)

    stable = st.old.stable_revision if st.old.stable_revision in observed.revisions else None
    ctx = Ctx(owner, spec, config, observed, st, out, target, stable, commands, golden, resolved)
    if measurements:
        _record_measurements(ctx, measurements)
    rec = {r.name: r for r in st.old.revisions}.get(target)
    pinned = rec is not None and rec.outcome in PINNED_OUTCOMES and rec.generation == owner.generation

    if stable is None and not pinned:
        _first(ctx)
    elif target == stable:
        rollout.serve(ctx)
    elif pinned:
        pinned_failed(ctx, rec)  # type: ignore[arg-type]
    else:
        rollout.roll_out(ctx)

    _prune(ctx)
    out.status = st.finish()
    out.events = st.events
    out.wake_within(config.resync_seconds)
    return out


def is_metadata_prefix(spec: ModelDeploymentSpec) -> bool:
    return bool(spec.model.metadata and spec.model.metadata.endswith("/"))


def _resolved_metadata(st: StatusBuilder, spec: ModelDeploymentSpec,
                       fresh: ResolvedMetadata | None) -> tuple[str, int] | None:
    """The newest serving config of a metadata prefix: freshly looked up, else as recorded in status
    (so a restart or a failed lookup keeps the same revision)."""
    if not is_metadata_prefix(spec):
        st.new.metadata = None
        return None
    known = st.new.metadata if st.new.metadata and st.new.metadata.source == spec.model.metadata else None
    if fresh is not None and fresh.source == spec.model.metadata:
        if known is None or (known.uri, known.generation) != (fresh.uri, fresh.generation):
            st.event("Normal", "NewServingConfig", f"{fresh.uri} generation {fresh.generation}")
            st.new.metadata = fresh.model_copy(update={"resolved_at": st.now})
        known = st.new.metadata
    return (known.uri, known.generation) if known else None


def _record_measurements(ctx: Ctx, measurements: list[Measurement]) -> None:
    analysis = ctx.spec.rollout.analysis
    if analysis is None:
        return
    states = ctx.st.metric_states()
    by_name = {m.name: m for m in analysis.metrics}
    for m in measurements:
        if m.metric in by_name:
            states[m.metric] = record(states.get(m.metric, MetricState()), by_name[m.metric], m, ctx.st.now)
    ctx.st.new.analysis = {k: v.model_dump(by_alias=True, exclude_none=True, mode="json") for k, v in states.items()}
    if ctx.st.new.rollout is not None:
        ctx.st.new.rollout = ctx.st.new.rollout.model_copy(update={"last_measured_at": ctx.st.now})


def _invalid(st: StatusBuilder, out: Plan, field_path: str, message: str) -> Plan:
    """Refuse the spec in status; whatever serves keeps serving, untouched."""
    text = f"{field_path}: {message}"
    st.event_on_change(cond.DEGRADED, Reason.INVALID_SPEC, "Warning", text)
    st.condition(cond.DEGRADED, T, Reason.INVALID_SPEC, text)
    st.condition(cond.PROGRESSING, F, Reason.INVALID_SPEC, "the spec cannot be rolled out: " + text)
    st.new.message = "invalid spec: " + text
    out.clear_annotations = []
    out.details.append(st.new.message)
    out.status = st.finish()
    out.events = st.events
    return out


def _first(ctx: Ctx) -> None:
    """Nothing serves yet: bring the revision up at full size; it serves once Available."""
    state = ctx.state(ctx.target)
    if state.is_available(ctx.replicas):
        ctx.st.event("Normal", "Promoted", f"revision {ctx.target} now serves {ctx.spec.model.name}")
        ctx.st.new.stable_revision = ctx.target
        ctx.stable = ctx.target
        from . import rollout

        rollout.serve(ctx)
        return
    ctx.deployment(ctx.target, ctx.replicas)
    ctx.route(traffic.Traffic(stable=ctx.target))
    rec = {r.name: r for r in ctx.st.old.revisions}.get(ctx.target)
    if rec is None or rec.outcome != "Progressing" or rec.generation != ctx.owner.generation:
        ctx.st.event("Normal", Reason.NEW_REVISION,
                     f"rolling out revision {ctx.target} ({ctx.spec.model.name} on {ctx.spec.engine.type})")
        ctx.record_target(outcome="Progressing", reason=Reason.REVISION_PROGRESSING, started=ctx.st.now)
    ctx.st.new.canary_revision = None
    ctx.st.new.canary_weight = None
    ctx.st.new.current_step = None
    from . import rollout

    if rollout.waiting_for_pods(ctx, state, ctx.replicas, since=ctx.record_started()):
        return
    prog = cond.get(ctx.st.new.conditions, cond.PROGRESSING)
    if not (prog and prog.reason == Reason.INSUFFICIENT_GPU and (ctx.st.new.message or "").startswith("waiting")):
        text = f"rolling out {ctx.target}: " + waiting_text(state, ctx.replicas)
        ctx.st.condition(cond.PROGRESSING, T, Reason.REVISION_PROGRESSING, text)
        ctx.st.condition(cond.DEGRADED, F, Reason.AS_EXPECTED, "")
        ctx.st.new.message = text
    stable_status(ctx, None, rolling=True)


def pinned_failed(ctx: Ctx, rec: RevisionRecord) -> None:
    """The spec asks for a revision that failed or was rolled back at this generation:
    leave it down, stable serving, until the spec changes again."""
    if ctx.state(ctx.target).replicas > 0:
        ctx.out.scale[ctx.target] = 0
    if ctx.stable:
        ctx.deployment(ctx.stable, ctx.replicas if ctx.stable == ctx.target else ctx.state(ctx.stable).replicas)
        ctx.route(traffic.Traffic(stable=ctx.stable))
    reason = Reason.ROLLED_BACK if rec.outcome == "RolledBack" else rec.reason
    text = (rec.message or f"revision {ctx.target} {_why(ctx, rec)}") + "; change the spec to try again"
    ctx.st.event_on_change(cond.DEGRADED, reason, "Warning", text)
    ctx.st.condition(cond.PROGRESSING, F, reason, text)
    ctx.st.condition(cond.DEGRADED, T, reason, text)
    ctx.st.new.message = text
    ctx.st.new.canary_revision = None
    ctx.st.new.canary_weight = None
    ctx.st.new.current_step = None
    ctx.st.new.rollout = None
    stable_status(ctx, ctx.stable, rolling=False)


def _why(ctx: Ctx, rec: RevisionRecord) -> str:
    if rec.reason == Reason.PROGRESS_DEADLINE_EXCEEDED:
        return f"was not available within progressDeadline {ctx.spec.rollout.progress_deadline}"
    if rec.outcome == "RolledBack":
        return f"was rolled back ({rec.reason})"
    return f"failed ({rec.reason})"


def stable_status(ctx: Ctx, stable: str | None, rolling: bool) -> None:
    st = ctx.st
    if stable is None:
        st.new.stable_revision = None
        replica_status(st, RevisionState(name="", replicas=0), ctx.replicas)
        st.condition(cond.AVAILABLE, F, Reason.NO_REPLICAS_AVAILABLE, "no revision serves yet")
        st.condition(cond.READY, F, Reason.ROLLOUT_IN_PROGRESS if rolling else Reason.NO_REPLICAS_AVAILABLE,
                     "no revision serves yet")
        return
    state = ctx.state(stable)
    want = state.replicas if rolling else max(state.replicas, 0)
    replica_status(st, state, want)
    available(st, state, want)
    if rolling:
        st.condition(cond.READY, F, Reason.ROLLOUT_IN_PROGRESS, f"{stable} serves while the new revision rolls out")
    elif state.ready >= want:
        st.condition(cond.READY, T, Reason.ALL_REPLICAS_READY, f"{stable} serves: {state.ready}/{want} ready")
    else:
        st.condition(cond.READY, F, Reason.REPLICAS_NOT_READY, waiting_text(state, want))


def available(st: StatusBuilder, state: RevisionState, want: int) -> None:
    if want == 0:
        st.condition(cond.AVAILABLE, F, Reason.SCALED_TO_ZERO, "replicas is 0")
    elif state.available > 0:
        st.condition(cond.AVAILABLE, T, Reason.MINIMUM_REPLICAS_AVAILABLE,
                     f"{state.available}/{want} replicas of {state.name} available")
    else:
        st.condition(cond.AVAILABLE, F, Reason.NO_REPLICAS_AVAILABLE, f"no replica of {state.name} is available")


def replica_status(st: StatusBuilder, state: RevisionState, want: int) -> None:
    st.new.replicas = want
    st.new.ready_replicas = state.ready
    st.new.ready = f"{state.ready}/{want}"


def waiting_text(state: RevisionState, want: int) -> str:
    return f"{min(state.ready, want)}/{want} replicas ready"


def _default_image(spec: ModelDeploymentSpec, config: OperatorConfig) -> str:
    return config.vllm_image if spec.engine.type == "vllm" else config.ollama_image


def _prune(ctx: Ctx) -> None:
    """Delete old revisions beyond the history limit (oldest first) once they are at zero,
    and per-revision Services of revisions that no longer take traffic."""
    st = ctx.st.new
    keep = {ctx.target, st.stable_revision or "", st.canary_revision or "",
            (st.rollout.previous_revision if st.rollout else None) or ""}
    old = sorted((r for n, r in ctx.observed.revisions.items() if n not in keep and r.replicas == 0
                  and ctx.out.scale.get(n, 0) == 0), key=lambda r: r.created or "")
    for rev in old[: max(0, len(old) - ctx.config.revision_history)]:
        ctx.out.delete.append(("Deployment", rev.name))
    wanted = {o["metadata"]["name"] for o in ctx.out.apply if o["kind"] == "Service"}
    for name in ctx.observed.services:
        if name not in wanted and name != ctx.owner.name:
            ctx.out.delete.append(("Service", name))
    if ctx.spec.traffic.router != "gateway-api" and ctx.owner.name in ctx.observed.routes:
        ctx.out.delete.append(("HTTPRoute", ctx.owner.name))
