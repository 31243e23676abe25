"""The rollout state machine: ``decide(inputs) -> Decision``. Pure; no manifests, no I/O.

Given the spec, what the cluster shows, the rollout state kept in status, the commands and
the analysis, it decides which revision serves, which one is rolled out and where it is,
how many replicas each revision should have and where users' traffic should go. The
renderer (planning/render.py) turns that into objects; planning/status.py into conditions.

One rule carries the promise "the stable revision keeps serving through every failure":
**the stable revision keeps its full size (``spec.replicas``, or the total ``spec.autoscaling``
decided: ``Inputs.replicas``) until another revision has taken all of its traffic.** A canary, a
blue-green preview or an A/B challenger comes up beside it (it needs GPUs of its own, and waits
for them with ``InsufficientGPU`` rather than take the stable's). So an abort, a revert of the spec or a rollback never has to wait for
capacity: it only moves traffic back.

Cases, in order:
- the target revision failed or was rolled back at this generation: pinned, the stable serves;
- nothing serves yet: the first revision comes up at full size and serves once available
  (and past its golden prompts);
- the spec asks for the stable revision: it serves (a rollout in flight is superseded);
  after a promotion the previous revision is kept warm for ``bakeTime`` / ``scaleDownDelay``
  and degradation in the bake rolls back to it;
- otherwise the target is rolled out with the spec's strategy.

A rollout's state belongs to one attempt: it is started afresh whenever the target revision
or the rollout settings (steps, analysis, router) change, so nothing from an earlier attempt
at a revision (a promote, a pause, a golden-prompt pass, analysis counts) is ever resumed.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from modelops.config import OperatorConfig
from modelops.domain import steps as stepmath
from modelops.domain.analysis import Measurement, MetricState, RunAssessment, RunVerdict, Verdict, assess_run, record
from modelops.domain.conditions import Reason
from modelops.domain.durations import seconds
from modelops.domain.golden import GoldenAnswer, check, excerpt
from modelops.domain.observed import Observed, RevisionState
from modelops.domain.spec import AnalysisSpec, ModelDeploymentSpec, RevisionRecord, RolloutState
from modelops.domain.timestamps import iso, parse

from .analysis import MIRROR_PROBE
from .contract import Event
from .traffic import ABSplit, Traffic

PINNED_OUTCOMES = ("Failed", "RolledBack")
PROGRESS_REQUEUE = 5.0
GOLDEN_ATTEMPTS = 3
PASSED = "Passed"
IDLE = RolloutState()


class Situation(str, Enum):
    FIRST = "First"  # nothing serves yet; the first revision comes up
    SERVING = "Serving"
    BAKING = "Baking"  # promoted; analysis continues, the previous revision kept warm
    ROLLING = "Rolling"  # a new revision is being rolled out beside the stable one
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"


@dataclass(frozen=True)
class Inputs:
    """Everything one decision reads."""

    name: str  # the ModelDeployment
    spec: ModelDeploymentSpec
    config: OperatorConfig
    observed: Observed
    now: dt.datetime
    generation: int
    target: str  # the revision the spec asks for
    rollout_hash: str  # of the rollout settings the steps are judged against
    stable: str | None  # the serving revision, if its Deployment exists
    rollout: RolloutState  # as kept in status (IDLE when none)
    records: dict[str, RevisionRecord]
    commands: dict[str, str]
    analysis: dict[str, MetricState]  # per-metric records kept in status
    measurements: tuple[Measurement, ...] = ()  # measured for the rollout in status (see reconcile)
    golden: tuple[GoldenAnswer, ...] | None = None  # answers of the revision in status' rollout
    total: int | None = None  # the autoscaled total (planning/autoscaling.py); None: spec.replicas

    @property
    def replicas(self) -> int:
        """The total a rollout splits: the stable's full size."""
        return self.spec.replicas if self.total is None else self.total

    def state(self, revision: str | None) -> RevisionState:
        return self.observed.revisions.get(revision or "", RevisionState(name=revision or "", replicas=0))

    @property
    def metrics(self) -> list[Any]:
        return self.spec.rollout.analysis.metrics if self.spec.rollout.analysis else []

    @property
    def golden_configured(self) -> bool:
        a = self.spec.rollout.analysis
        return bool(a and a.pre_promotion and a.pre_promotion.golden_prompts)


@dataclass(frozen=True)
class Decision:
    situation: Situation
    reason: str  # the Progressing (or, rolled back / failed, Degraded) condition's reason
    message: str
    stable: str | None
    replicas: dict[str, int]  # desired replicas of every revision
    traffic: Traffic
    rollout: RolloutState = field(default_factory=RolloutState)
    canary: str | None = None
    weight: int | None = None
    step: int | None = None
    analysis: dict[str, MetricState] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # field updates per revision record
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None


@dataclass
class _Notes:
    """What a decision says besides its state: events, record updates, when to look again."""

    events: list[Event] = field(default_factory=list)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    requeue: float | None = None

    def event(self, type_: str, reason: str, message: str, revision: str = "") -> None:
        self.events.append(Event(type_, reason, message, revision))

    def record(self, name: str, **updates: Any) -> None:
        self.records.setdefault(name, {}).update(updates)

    def wake_within(self, secs: float) -> None:
        self.requeue = secs if self.requeue is None else min(self.requeue, secs)


def decide(inp: Inputs) -> Decision:
    rec = inp.records.get(inp.target)
    notes = _Notes()
    if rec is not None and rec.outcome in PINNED_OUTCOMES and rec.generation == inp.generation:
        return _pinned(inp, rec, notes)
    if inp.stable is None:
        return _first(inp, notes)
    if inp.target == inp.stable:
        return _serve(inp, inp.rollout, _analysis(inp, inp.rollout), notes)
    return _roll_out(inp, notes)


# --------------------------------------------------------------------------- serving
def _serve(inp: Inputs, ro: RolloutState, analysis: dict[str, MetricState], notes: _Notes,
           stable: str | None = None) -> Decision:
    """``stable`` serves at full size; a rollout of another revision is superseded; a bake goes on."""
    stable = stable or inp.target
    fallback: tuple[str, ...] = ()
    if ro.revision and ro.revision != stable:  # the spec went back to the stable mid-rollout
        notes.event("Normal", "Superseded", f"rollout of {ro.revision} stopped: the spec asks for {stable} again")
        notes.record(ro.revision, outcome="Superseded", reason="Reverted",
                     message=f"the spec went back to {stable} before {ro.revision} was promoted")
        fallback = (ro.revision,) if _served(inp, ro) else ()
        ro, analysis = IDLE, {}
    previous = ro.previous_revision if ro.previous_revision in inp.observed.revisions else None
    bake_until = parse(ro.bake_until)
    baking = bool(previous and bake_until and inp.now < bake_until and inp.metrics)
    if baking:
        run = _run(inp, analysis)
        if "abort" in inp.commands or run.verdict in (RunVerdict.failed, RunVerdict.error):
            why = "Aborted" if "abort" in inp.commands else f"Analysis{run.verdict.value}"
            assert previous is not None
            return _rollback_after_promotion(inp, stable, previous, why,
                                             "aborted by annotation" if why == "Aborted" else run.message,
                                             analysis, notes)
        notes.wake_within(_interval(inp))
    keep_until = max((t for t in (bake_until, parse(ro.scale_down_at)) if t), default=None)
    warm = previous if previous and keep_until and inp.now < keep_until else None
    if warm and keep_until:
        notes.wake_within(max(1.0, (keep_until - inp.now).total_seconds()))
        fallback = (*fallback, warm)  # it served until the promotion: the last resort while the stable has no pod
    elif ro.revision:
        ro = IDLE  # the bake and the scale-down delay are over: no rollout any more
    notes.record(stable, outcome="Serving", reason=_serving_reason(inp.records.get(stable)))
    replicas = _only(inp, {stable: inp.replicas, **({warm: inp.replicas} if warm else {})})
    state = inp.state(stable)
    if state.ready < inp.replicas:
        notes.wake_within(PROGRESS_REQUEUE)
    if baking:
        message = f"{stable} serves; analysis continues until {ro.bake_until} (bakeTime), {warm} kept warm"
        return Decision(Situation.BAKING, "Baking", message, stable, replicas,
                        Traffic(stable=stable, fallback=fallback), ro, analysis=analysis, records=notes.records,
                        events=tuple(notes.events), requeue_after=notes.requeue)
    message = f"{stable} serves {inp.spec.model.name}: {min(state.ready, inp.replicas)}/{inp.replicas} ready"
    return Decision(Situation.SERVING, Reason.REVISION_AVAILABLE, message, stable, replicas,
                    Traffic(stable=stable, fallback=fallback), ro, analysis=analysis,
                    records=notes.records, events=tuple(notes.events), requeue_after=notes.requeue)


def _serving_reason(rec: RevisionRecord | None) -> str:
    return rec.reason if rec and rec.outcome == "Serving" and rec.reason else "Available"


def _rollback_after_promotion(inp: Inputs, failed: str, previous: str, why: str, message: str,
                              analysis: dict[str, MetricState], notes: _Notes) -> Decision:
    """Degradation during the bake: traffic back to the previous revision, kept warm at full size."""
    text = f"rolled back from {failed} to {previous}: {message}"
    # Its metrics got worse after promotion (not: the provider was unreachable, or a person aborted):
    # what a retraining pipeline listens for.
    if why == f"Analysis{RunVerdict.failed.value}":
        notes.event("Warning", Reason.DEGRADED_DURING_BAKE, f"revision {failed} degraded during bakeTime: {message}",
                    failed)
    notes.event("Warning", Reason.ROLLED_BACK, text + "; change the spec to try again", failed)
    notes.record(failed, outcome="RolledBack", reason=why, message=text, generation=inp.generation)
    notes.record(previous, outcome="Serving", reason="RolledBackTo")
    return Decision(Situation.ROLLED_BACK, Reason.ROLLED_BACK, text + "; change the spec to try again", previous,
                    _only(inp, {previous: inp.replicas}), Traffic(stable=previous, fallback=(failed,)),
                    analysis=analysis, records=notes.records, events=tuple(notes.events),
                    requeue_after=PROGRESS_REQUEUE)


def _pinned(inp: Inputs, rec: RevisionRecord, notes: _Notes) -> Decision:
    """The spec asks for a revision that failed or was rolled back at this generation: it stays
    down and the stable serves, until the spec changes again."""
    text = (rec.message or f"revision {inp.target} {rec.outcome.lower()} ({rec.reason})") + \
        "; change the spec to try again"
    fallback = (inp.target,) if rec.served else ()
    stable = inp.stable
    replicas = _only(inp, {stable: inp.replicas} if stable else {})
    situation = Situation.ROLLED_BACK if rec.outcome == "RolledBack" else Situation.FAILED
    reason = Reason.ROLLED_BACK if rec.outcome == "RolledBack" else rec.reason
    return Decision(situation, reason, text, stable, replicas, Traffic(stable=stable, fallback=fallback),
                    analysis=inp.analysis, records=notes.records, events=tuple(notes.events),
                    requeue_after=PROGRESS_REQUEUE if stable and inp.state(stable).ready < inp.replicas else None)


def _first(inp: Inputs, notes: _Notes) -> Decision:
    """Nothing serves yet: the revision comes up at full size and serves once it is available
    (and has passed its golden prompts, if any)."""
    ro, analysis = _attempt(inp, notes)
    ro, aborted = _golden(inp, ro, notes)
    if aborted:
        return _abort(inp, ro, notes, aborted[0], aborted[1], analysis)
    state = inp.state(inp.target)
    gate = _gate_open(inp, ro)
    if state.is_available(inp.replicas) and gate:
        notes.event("Normal", Reason.PROMOTED, f"revision {inp.target} now serves {inp.spec.model.name}", inp.target)
        return _serve(inp, IDLE, {}, notes)
    ro, failed = _wait_for_pods(inp, ro, inp.replicas, notes)
    if failed:
        return _fail(inp, notes)
    reason = Reason.INSUFFICIENT_GPU if ro.waiting_for_gpus else Reason.REVISION_PROGRESSING
    message = _waiting_message(inp, state) if ro.waiting_for_gpus else (
        f"rolling out {inp.target}: {min(state.ready, inp.replicas)}/{inp.replicas} replicas ready"
        + ("" if gate else ", golden prompts pending"))
    notes.wake_within(PROGRESS_REQUEUE)
    return Decision(Situation.FIRST, reason, message, None, _only(inp, {inp.target: inp.replicas}),
                    Traffic(stable=inp.target if gate else None, canary=inp.target,
                            canary_service=inp.golden_configured), ro, analysis=analysis,
                    records=notes.records, events=tuple(notes.events), requeue_after=notes.requeue)


# --------------------------------------------------------------------------- rolling out
def _roll_out(inp: Inputs, notes: _Notes) -> Decision:
    fresh = not _continues(inp)
    ro, analysis = _attempt(inp, notes)
    if "abort" in inp.commands:
        return _abort(inp, ro, notes, "Aborted", "aborted by annotation modelops.dev/abort", analysis)
    if "pause" in inp.commands and not ro.paused:
        ro = _pause(ro, inp, notes, "Manual")
    if "resume" in inp.commands and ro.paused:
        ro = _resume(ro, inp)
    run = _run(inp, analysis)
    if run.verdict in (RunVerdict.failed, RunVerdict.error):
        return _abort(inp, ro, notes, f"Analysis{run.verdict.value}", run.message, analysis)
    ro, aborted = _golden(inp, ro, notes)
    if aborted:
        return _abort(inp, ro, notes, aborted[0], aborted[1], analysis)
    if inp.metrics:
        notes.wake_within(_interval(inp))
    strategy = inp.spec.rollout.strategy
    promote = inp.commands.get("promote")
    if promote is not None and fresh:  # given before this attempt existed: it was meant for another
        notes.event("Warning", "CommandIgnored", f"modelops.dev/promote ignored: the rollout of {inp.target} "
                                                 "has just started (promote it once it is under way)")
        promote = None
    if promote is not None:
        ro = _set(ro, paused=False, pause_reason=None, paused_at=None)
        if promote == "full" or strategy != "Canary":
            ro = _set(ro, promoting=True, promote_reason=BY_HAND + (
                " (full)" if promote == "full" else ""))
        else:
            ro = _set(ro, skip_step=ro.step)
    if strategy == "BlueGreen":
        progress = _blue_green(inp, ro, run, notes)
    elif strategy == "ABTest":
        progress = _ab_test(inp, ro, run, analysis, notes)
    else:
        progress = _canary(inp, ro, run, analysis, notes)
    return _progress(inp, progress, run, analysis, notes)


@dataclass(frozen=True)
class _Progress:
    """Where a strategy stands: the rollout state, the new revision's pods, the traffic."""

    ro: RolloutState
    pods: int
    traffic: Traffic
    where: str
    step: int | None = None
    hold: bool = False  # an A/B test: the share is held, not stepped


def _progress(inp: Inputs, p: _Progress, run: RunAssessment, analysis: dict[str, MetricState],
              notes: _Notes) -> Decision:
    """Finish a strategy's pass: promote once it asks to and the revision is ready at full size,
    count the progress deadline while pods are awaited, say where the rollout is."""
    ro = p.ro
    state = inp.state(inp.target)
    if ro.promoting and state.is_available(inp.replicas) and _gate_open(inp, ro) and \
            _still_passing(inp, ro, analysis):
        return _promote(inp, ro, analysis, notes)
    ro, failed = _wait_for_pods(inp, ro, inp.replicas if ro.promoting else p.pods, notes)
    if failed:
        return _fail(inp, notes)
    if ro.weight > 0 and _gate_open(inp, ro) and not inp.records.get(inp.target, RevisionRecord(name="")).served:
        notes.record(inp.target, served=True)
    if ro.waiting_for_gpus:
        reason, message = Reason.INSUFFICIENT_GPU, _waiting_message(inp, state)
    else:
        parts = [f"{p.where}: {ro.weight}% to {inp.target}"]
        if inp.spec.traffic.router == "service" and not p.hold and ro.weight not in (0, 100):
            parts.append(f"(service router: the share follows ready pods, now "
                         f"{stepmath.replica_weight(inp.state(inp.stable).ready, state.ready)}%)")
        if ro.promoting:
            parts.append(f"promoting ({ro.promote_reason}): {min(state.ready, inp.replicas)}/{inp.replicas} ready")
        if inp.metrics:
            parts.append(f"analysis {run.verdict.value.lower()}" + (f": {run.message}" if run.message else ""))
        message = ", ".join(parts)
        reason = "ABTest" if p.hold else Reason.REVISION_PROGRESSING
        if ro.paused:
            reason, message = Reason.PAUSED, f"paused ({ro.pause_reason}): " + message
    pods = inp.replicas if ro.promoting else p.pods
    # Once it has served users, the new revision may take them all while the stable has no ready pod.
    routing = replace(p.traffic, fallback=(inp.target,)) if _served(inp, ro) else p.traffic
    return Decision(Situation.ROLLING, reason, message, inp.stable,
                    _only(inp, {inp.stable: inp.replicas, inp.target: pods}), routing, ro,
                    canary=inp.target, weight=ro.weight, step=p.step, analysis=analysis, records=notes.records,
                    events=tuple(notes.events), requeue_after=notes.requeue)


def _canary(inp: Inputs, ro: RolloutState, run: RunAssessment, analysis: dict[str, MetricState],
            notes: _Notes) -> _Progress:
    steps = inp.spec.rollout.canary.steps if inp.spec.rollout.canary else []
    started_at = ro.step
    for _ in range(len(steps) + 1):
        if ro.paused or ro.promoting:
            break
        i, skip = ro.step, ro.skip_step == ro.step
        if i >= len(steps):  # every step done: the gate before all traffic
            ok, ro = _final_gate(inp, ro, run, analysis, notes)
            if ok:
                ro = _set(ro, promoting=True, promote_reason="all steps completed")
            break
        step = steps[i]
        kind = stepmath.step_kind(step)
        if kind == "setWeight":
            want = step.set_weight or 0
            if not _pods_ready(inp, _canary_pods(inp, want)):
                break
            ok, ro = (True, ro) if skip else _may_advance(inp, ro, run, notes)
            if not ok:
                break
            ro = _advance(ro, inp, weight=want)
        elif kind == "pause":
            duration = step.pause.duration if step.pause else None
            if not skip:
                if duration is None:
                    if ro.step > started_at:  # said before the pause it leads to
                        _step_reached(inp, ro, steps, notes)
                        started_at = ro.step
                    ro = _pause(ro, inp, notes, "PauseStep", f"step {i + 1} waits for modelops.dev/promote")
                    break
                left = seconds(duration) - _elapsed(ro, inp)
                if left > 0:
                    notes.wake_within(max(0.5, left))
                    break
                ok, ro = _may_advance(inp, ro, run, notes)
                if not ok:
                    break
            ro = _advance(ro, inp)
        elif kind == "mirror":  # shadow traffic for its duration, its metrics Successful measured meanwhile
            if not skip:
                ok, ro = _mirror_step_passed(inp, ro, step, analysis, notes)
                if not ok:
                    break
            ro = _advance(ro, inp)
        else:  # an analysis step: its metrics Successful, measured after the step began, for its duration
            if not skip:
                ok, ro = _analysis_step_passed(inp, ro, step, analysis, notes)
                if not ok:
                    break
            ro = _advance(ro, inp)
    if ro.step > started_at:
        _step_reached(inp, ro, steps, notes)
    pods = _canary_pods(inp, ro.weight)
    if not ro.promoting and ro.step < len(steps) and stepmath.step_kind(steps[ro.step]) == "setWeight":
        pods = max(pods, _canary_pods(inp, steps[ro.step].set_weight or 0))  # the next share's pods come up first
    current = steps[ro.step].mirror if not ro.promoting and ro.step < len(steps) else None
    mirror = 0
    if current is not None:
        pods = max(pods, stepmath.mirror_replicas(inp.replicas, current.percent))
        mirror = current.percent if ro.mirror_at else 0
    where = f"step {min(ro.step + 1, len(steps))}/{len(steps)}" if steps else "waiting for the new revision"
    if mirror:
        where += (f" (mirroring {mirror}% of requests to it, answers discarded"
                  + ("" if ro.mirror_since else "; waiting for the stable gateway to apply the split") + ")")
    return _Progress(ro, pods, replace(_split(inp, ro), mirror=mirror), where, step=ro.step)


def _step_reached(inp: Inputs, ro: RolloutState, steps: list[Any], notes: _Notes) -> None:
    """One event per pass that moved the canary on, naming the last step completed and the one the
    rollout is now at (a pass may complete several: a timed pause that was over, then a setWeight
    whose pods were ready)."""
    done, n = ro.step, len(steps)
    text = f"step {done}/{n} ({stepmath.describe(steps[done - 1])}) completed: {ro.weight}% to {inp.target}"
    text += f"; now at step {done + 1}/{n} ({stepmath.describe(steps[done])})" if done < n else \
        "; every step completed"
    notes.event("Normal", Reason.STEP_REACHED, text, inp.target)


def _split(inp: Inputs, ro: RolloutState) -> Traffic:
    """Canary traffic: the weight only once the gate is open (the renderer also sends nothing to
    a revision without ready pods)."""
    return Traffic(stable=inp.stable, canary=inp.target, weight=ro.weight if _gate_open(inp, ro) else 0,
                   canary_service=inp.golden_configured)


def _blue_green(inp: Inputs, ro: RolloutState, run: RunAssessment, notes: _Notes) -> _Progress:
    bg = inp.spec.rollout.blue_green
    auto = bg.auto_promote if bg else True
    # The preview's analysis window starts when it is up (someone has to send it traffic).
    up = _pods_ready(inp, inp.replicas) and _gate_open(inp, ro)
    if up != (ro.step_started_at is not None):
        ro = _set(ro, step_started_at=iso(inp.now) if up else None)
    if up and not ro.paused and not ro.promoting:
        passed = not inp.metrics or run.verdict == RunVerdict.successful
        if auto and passed:
            ro = _set(ro, promoting=True, promote_reason="the preview passed its checks")
        elif run.verdict == RunVerdict.inconclusive:
            ro = _pause_if_settled(inp, ro, run, notes)
        elif passed:
            ro = _pause(ro, inp, notes, "AwaitingPromotion",
                        f"{inp.target} is ready on the preview Service {inp.name}-preview")
    preview = inp.target if _gate_open(inp, ro) else None
    return _Progress(ro, inp.replicas, Traffic(stable=inp.stable, canary=inp.target, preview=preview,
                                               canary_service=inp.golden_configured),
                     "blue-green: preview")


def _ab_test(inp: Inputs, ro: RolloutState, run: RunAssessment, analysis: dict[str, MetricState],
             notes: _Notes) -> _Progress:
    """The challenger is held at its share of users. With a ``duration`` the test concludes on its
    own: its clock (``step_started_at``) starts when the challenger becomes active (ready at its
    share, past its golden prompts: when the share is set, ``weight_at``) and a manual pause stops it;
    once it is over the challenger is promoted if the final gate passes (every metric Successful on
    data measured during the test), paused for a person if the data stays inconclusive, and waited
    for while a measurement is pending. A failing metric aborts at any time (in ``_roll_out``)."""
    ab = inp.spec.rollout.ab_test
    assert ab is not None  # the CRD requires it for ABTest
    pods = max(1, stepmath.canary_replicas(inp.replicas, ab.weight)) if inp.replicas else 0
    # Active once ready at its share; it stays active while it has a ready pod, so a share that grows
    # with the total (autoscaling) is not a gap in the test while the new pods come up.
    active = _gate_open(inp, ro) and (_pods_ready(inp, pods) or (ro.weight_at is not None
                                                                  and inp.state(inp.target).ready > 0))
    if active != (ro.weight_at is not None):
        # A challenger that lost its pods had its users sent back to the stable revision: the test
        # starts again when it is back (as a blue-green preview's window does), so "ran 30m" means
        # 30 minutes of its users on it without a gap, and the final gate judges only data measured
        # since. Becoming active during a pause, the clock starts stopped (resume shifts it to then).
        start = (parse(ro.paused_at) or inp.now) if ro.paused else inp.now
        ro = _set(ro, weight_at=iso(inp.now) if active else None, step_started_at=iso(start) if active else None)
    ro = _set(ro, weight=ab.weight if active else 0)
    how = f"users assigned by {ab.sticky_header} or the OpenAI user field" + (
        ", header matches to the challenger" if ab.match else "")
    clock = ""
    if ab.duration and not ro.promoting:
        total = seconds(ab.duration)
        left = total - _elapsed(ro, inp) if ro.weight_at else total
        if not ro.weight_at:
            clock = f", {_span(total)} once the challenger is ready"
        elif left > 0:
            clock = f", {_span(left)} of {_span(total)} left"
            if not ro.paused:
                notes.wake_within(max(0.5, left))
        else:
            clock = f", {_span(total)} over"
            if not ro.paused:
                ok, ro = _final_gate(inp, ro, run, analysis, notes)
                if ok:
                    ro = _set(ro, promoting=True, promote_reason=f"the A/B test ran {ab.duration} and " + (
                        "every metric passed" if inp.metrics else "had no metrics to check"))
                elif not ro.paused:  # a measurement taken during the test is still to come
                    notes.wake_within(_interval(inp))
    traffic = Traffic(stable=inp.stable, canary=inp.target,
                      matches=tuple(m.headers for m in ab.match) if active else (),
                      ab=ABSplit(percent=ro.weight, header=ab.sticky_header))
    return _Progress(ro, pods, traffic, f"A/B test ({how})" + ("" if ro.promoting else clock), hold=True)


def _span(secs: float) -> str:
    """Seconds as a duration is written, rounded up to a whole second.

    >>> _span(12), _span(90.2), _span(3600), _span(0), _span(86400 + 61)
    ('12s', '1m31s', '1h', '0s', '24h1m1s')
    """
    s = max(0, math.ceil(secs - 1e-6))
    h, m = s // 3600, s % 3600 // 60
    return "".join(f"{n}{u}" for n, u in ((h, "h"), (m, "m"), (s % 60, "s")) if n) or "0s"


# --------------------------------------------------------------------------- gates
BY_HAND = "promoted by annotation"


def _still_passing(inp: Inputs, ro: RolloutState, analysis: dict[str, MetricState]) -> bool:
    """A promotion decided on passing analysis completes only while every metric's latest verdict is
    still Successful: a failure below failureLimit, thin data or a provider error measured while the
    new revision's pods come up to full size (which takes longer the larger the total) holds it until
    the next Successful measurement. A promotion by hand does not wait for analysis."""
    if not inp.metrics or (ro.promote_reason or "").startswith(BY_HAND):
        return True
    return all((analysis.get(m.name) or MetricState()).verdict == Verdict.successful for m in inp.metrics)


def _gate_open(inp: Inputs, ro: RolloutState) -> bool:
    """Users may reach the new revision: its golden prompts (if any) passed in this attempt."""
    return not inp.golden_configured or ro.golden_prompts == PASSED


def _may_advance(inp: Inputs, ro: RolloutState, run: RunAssessment, notes: _Notes) -> tuple[bool, RolloutState]:
    """A step moves on only on good data: a Successful run, or no data yet while the canary has
    no traffic. Inconclusive pauses for a person; errors and failures below the limits wait."""
    if not _gate_open(inp, ro):
        notes.wake_within(PROGRESS_REQUEUE)
        return False, ro
    if not inp.metrics or run.verdict == RunVerdict.successful:
        return True, ro
    if run.verdict == RunVerdict.pending:
        return ro.weight == 0, ro
    if run.verdict == RunVerdict.inconclusive:
        return False, _pause_if_settled(inp, ro, run, notes)
    return False, ro


def _final_gate(inp: Inputs, ro: RolloutState, run: RunAssessment, analysis: dict[str, MetricState],
                notes: _Notes) -> tuple[bool, RolloutState]:
    """Before all traffic: the gate open and, if analysed, every metric Successful on a measurement
    taken after the canary's current share was set."""
    if not _gate_open(inp, ro):
        return False, ro
    if not inp.metrics:
        return True, ro
    if run.verdict == RunVerdict.inconclusive:
        return False, _pause_if_settled(inp, ro, run, notes)
    return _successful_since(inp.metrics, analysis, parse(ro.weight_at or ro.started_at)), ro


def _analysis_step_passed(inp: Inputs, ro: RolloutState, step: Any, analysis: dict[str, MetricState],
                          notes: _Notes) -> tuple[bool, RolloutState]:
    a = step.analysis
    names = set(a.metrics) if a and a.metrics else None
    metrics = [m for m in inp.metrics if names is None or m.name in names]
    if a and a.duration:
        left = seconds(a.duration) - _elapsed(ro, inp)
        if left > 0:
            notes.wake_within(max(0.5, left))
            return False, ro
    if not _gate_open(inp, ro):
        return False, ro
    sub = assess_run((inp.spec.rollout.analysis or AnalysisSpec()).model_copy(update={"metrics": metrics}), analysis)
    if sub.verdict == RunVerdict.inconclusive:
        return False, _pause_if_settled(inp, ro, sub, notes)
    return _successful_since(metrics, analysis, parse(ro.step_started_at)), ro


def _mirror_step_passed(inp: Inputs, ro: RolloutState, step: Any, analysis: dict[str, MetricState],
                        notes: _Notes) -> tuple[bool, RolloutState]:
    """A mirror step. Once the shadow's pods are ready (and its golden prompts passed) the split
    tells the stable gateway to copy ``percent`` of requests to it (``mirror_at``). The split reaches
    the pods with the kubelet's sync, so the step's clock starts (``mirror_since``) when every stable
    pod reports mirroring (the probe measured with the analysis), at the latest ``split_sync_seconds``
    after the split was written. It passes after ``duration`` with every metric Successful on a
    measurement taken after its clock started; a failing one aborts (in ``_roll_out``) before any
    user was sent to the new revision."""
    m = step.mirror
    if not _gate_open(inp, ro) or not _pods_ready(inp, stepmath.mirror_replicas(inp.replicas, m.percent)):
        notes.wake_within(PROGRESS_REQUEUE)
        return False, ro
    if ro.mirror_at is None:
        ro = _set(ro, mirror_at=iso(inp.now))
    if ro.mirror_since is None:
        waited = (inp.now - (parse(ro.mirror_at) or inp.now)).total_seconds()
        reported = _mirroring_reported(inp)
        sync = inp.config.split_sync_seconds
        if not reported and waited < sync:
            notes.wake_within(max(1.0, sync - waited))
            return False, ro
        ro = _set(ro, mirror_since=iso(inp.now))
        notes.event("Normal", "Mirroring", f"the stable revision's gateway mirrors {m.percent}% of requests to "
                                           f"{inp.target}" + ("" if reported else
                                                              f" (assumed {sync:g}s after the split was written)"),
                    inp.target)
    since = parse(ro.mirror_since)
    left = seconds(m.duration) - _elapsed(ro, inp, since)
    if left > 0:
        notes.wake_within(max(0.5, left))
        return False, ro
    if not inp.metrics:
        return True, ro
    run = _run(inp, analysis)
    if run.verdict == RunVerdict.inconclusive:
        return False, _pause_if_settled(inp, ro, run, notes, since)
    return _successful_since(inp.metrics, analysis, since), ro


def _mirroring_reported(inp: Inputs) -> bool:
    """Every stable pod reports mirroring this step's share to the target (planning/analysis.py)."""
    return any(m.metric == MIRROR_PROBE and m.error is None and m.value is not None and m.value >= 1
               for m in inp.measurements)


def _successful_since(metrics: list[Any], analysis: dict[str, MetricState], since: dt.datetime | None) -> bool:
    """Every metric's latest verdict is Successful, measured strictly after ``since`` (a measurement
    recorded in the pass that started the step belongs to the step before)."""
    for m in metrics:
        st = analysis.get(m.name)
        measured = parse(st.measured_at) if st else None
        if st is None or st.verdict != Verdict.successful or measured is None or (since and measured <= since):
            return False
    return True


def _pause_if_settled(inp: Inputs, ro: RolloutState, run: RunAssessment, notes: _Notes,
                      since: dt.datetime | None = None) -> RolloutState:
    """Data cannot be conclusive before one window of traffic at this step (a new revision's
    series appear with its first scrape): wait that long, then pause for a person. ``since``:
    when the step's traffic began, if not when the step did (a mirror step)."""
    analysis = inp.spec.rollout.analysis
    assert analysis is not None
    settle = seconds(analysis.window) + seconds(analysis.interval)
    if _elapsed(ro, inp, since) < settle:
        notes.wake_within(seconds(analysis.interval))
        return ro
    return _pause(ro, inp, notes, "Inconclusive", run.message)


def _golden(inp: Inputs, ro: RolloutState, notes: _Notes) -> tuple[RolloutState, tuple[str, str] | None]:
    """Judge the quality gate's answers (they are for this attempt's revision: see reconcile).
    Returns the new state and, when a prompt failed, why to abort."""
    if inp.golden is None or not inp.golden_configured or ro.golden_prompts:
        return ro, None
    pre = inp.spec.rollout.analysis.pre_promotion if inp.spec.rollout.analysis else None
    assert pre is not None
    expectations = {g.prompt: g.expect for g in pre.golden_prompts}
    if any(a.status is None for a in inp.golden) and ro.golden_attempts + 1 < GOLDEN_ATTEMPTS:
        # Endpoints lag pod readiness: an unreachable revision is asked again, a few times.
        notes.wake_within(PROGRESS_REQUEUE)
        return _set(ro, golden_attempts=ro.golden_attempts + 1, golden_asked_at=iso(inp.now)), None
    for answer in inp.golden:
        expect = expectations.get(answer.prompt)
        why = check(expect, answer) if expect is not None else None
        if why:
            return _set(ro, golden_prompts="Failed"), (
                "GoldenPromptFailed",
                f'golden prompt "{excerpt(answer.prompt)}" failed: {why}; answer: "{excerpt(answer.text)}"')
    notes.event("Normal", "GoldenPromptsPassed", f"{len(inp.golden)} golden prompts passed on {inp.target}")
    return _set(ro, golden_prompts=PASSED), None


# --------------------------------------------------------------------------- transitions
def _attempt(inp: Inputs, notes: _Notes) -> tuple[RolloutState, dict[str, MetricState]]:
    """The rollout state of this attempt at the target: continued, or started afresh (with empty
    analysis) when the target or the rollout settings changed."""
    ro = inp.rollout
    if _continues(inp):
        return ro, _analysis(inp, ro)
    if ro.revision and ro.revision not in (inp.target, inp.stable) and not ro.promoted_at:
        notes.event("Normal", "Superseded", f"rollout of {ro.revision} replaced by {inp.target}")
        notes.record(ro.revision, outcome="Superseded", reason="Superseded",
                     message=f"replaced by {inp.target} before it was promoted")
    strategy = inp.spec.rollout.strategy
    notes.event("Normal", Reason.NEW_REVISION,
                f"rolling out revision {inp.target} ({inp.spec.model.name} on {inp.spec.engine.type})"
                + (f" with {strategy}" if inp.stable else ""), inp.target)
    notes.record(inp.target, outcome="Progressing", reason=Reason.REVISION_PROGRESSING, message="",
                 started=iso(inp.now), generation=inp.generation, served=False)
    now = iso(inp.now)
    return RolloutState(revision=inp.target, rollout_hash=inp.rollout_hash, started_at=now,
                        step_started_at=None if strategy in ("BlueGreen", "ABTest") else now), {}


def _continues(inp: Inputs) -> bool:
    ro = inp.rollout
    return ro.revision == inp.target and ro.rollout_hash == inp.rollout_hash and not ro.promoted_at


def _analysis(inp: Inputs, ro: RolloutState) -> dict[str, MetricState]:
    """The metric records with this pass's measurements; during a bake a relative metric compares
    with the stable revision's values recorded before promotion (the previous revision no longer
    gets traffic, so it has no current data)."""
    spec = inp.spec.rollout.analysis
    states = dict(inp.analysis)
    if spec is None or not inp.measurements:
        return states
    by_name = {m.name: m for m in spec.metrics}
    for m in inp.measurements:
        if m.metric not in by_name:
            continue
        if ro.promoted_at and m.stable_value is None and m.metric in ro.baseline:
            m = replace(m, stable_value=ro.baseline[m.metric])
        states[m.metric] = record(states.get(m.metric, MetricState()), by_name[m.metric], m, iso(inp.now))
    return states


def _run(inp: Inputs, analysis: dict[str, MetricState]) -> RunAssessment:
    return assess_run(inp.spec.rollout.analysis or AnalysisSpec(), analysis)


def _set(ro: RolloutState, **updates: Any) -> RolloutState:
    return ro.model_copy(update=updates)


def _advance(ro: RolloutState, inp: Inputs, weight: int | None = None) -> RolloutState:
    moved = weight is not None and weight != ro.weight
    return _set(ro, step=ro.step + 1, weight=weight if moved else ro.weight, step_started_at=iso(inp.now),
                skip_step=None, weight_at=iso(inp.now) if moved else ro.weight_at, mirror_at=None, mirror_since=None)


def _elapsed(ro: RolloutState, inp: Inputs, since: dt.datetime | None = None) -> float:
    """Seconds the current step has run, or since ``since`` (a pause by hand stops the clock)."""
    started = since or parse(ro.step_started_at) or inp.now
    until = parse(ro.paused_at) if ro.paused else inp.now
    return ((until or inp.now) - started).total_seconds()


def _pause(ro: RolloutState, inp: Inputs, notes: _Notes, reason: str, message: str = "") -> RolloutState:
    if ro.paused:
        return ro
    notes.event("Normal", Reason.PAUSED,
                f"rollout of {ro.revision} paused ({reason}){': ' + message if message else ''}", ro.revision)
    return _set(ro, paused=True, pause_reason=reason, paused_at=iso(inp.now))


def _resume(ro: RolloutState, inp: Inputs) -> RolloutState:
    """Resume where the step was: a timed pause continues with the time it had left."""
    started, paused_at, mirroring = parse(ro.step_started_at), parse(ro.paused_at), parse(ro.mirror_since)
    if started and paused_at:
        started = started + (inp.now - paused_at)
    if mirroring and paused_at:
        mirroring = mirroring + (inp.now - paused_at)
    return _set(ro, paused=False, pause_reason=None, paused_at=None,
                   step_started_at=iso(started) if started else ro.step_started_at,
                   mirror_since=iso(mirroring) if mirroring else ro.mirror_since)


def _promote(inp: Inputs, ro: RolloutState, analysis: dict[str, MetricState], notes: _Notes) -> Decision:
    """The new revision takes all traffic; the previous stays warm for bakeTime / scaleDownDelay."""
    previous = inp.stable
    spec = inp.spec.rollout
    bake = seconds(spec.analysis.bake_time) if spec.analysis and spec.analysis.bake_time and inp.metrics else 0.0
    delay = seconds(spec.blue_green.scale_down_delay if spec.blue_green else "5m") \
        if spec.strategy == "BlueGreen" else 0.0
    now = inp.now
    promoted = RolloutState(
        revision=inp.target, rollout_hash=ro.rollout_hash, started_at=ro.started_at, promoted_at=iso(now),
        previous_revision=previous if (bake or delay) else None,
        bake_until=iso(now + dt.timedelta(seconds=bake)) if bake else None,
        scale_down_at=iso(now + dt.timedelta(seconds=delay)) if delay else None,
        baseline={k: s.stable_value for k, s in analysis.items() if s.stable_value is not None},
        last_measured_at=ro.last_measured_at, golden_prompts=ro.golden_prompts)
    notes.event("Normal", Reason.PROMOTED,
                f"revision {inp.target} now serves {inp.spec.model.name} ({ro.promote_reason})", inp.target)
    if previous:
        notes.record(previous, outcome="Superseded", reason="Replaced", message=f"replaced by {inp.target}")
    notes.record(inp.target, outcome="Serving", reason="Promoted", served=True)
    return _serve(inp, promoted, analysis, notes, stable=inp.target)


def _abort(inp: Inputs, ro: RolloutState, notes: _Notes, why: str, message: str,
           analysis: dict[str, MetricState] | None = None) -> Decision:
    """Traffic back to the stable revision at once (it kept its full size); the new revision
    scales to zero (once traffic has left it, see render) and is pinned for this generation."""
    text = f"rollout of {inp.target} aborted: {message}; change the spec to try again"
    notes.event("Warning", Reason.ROLLED_BACK, text, inp.target)
    served = _served(inp, ro)
    notes.record(inp.target, outcome="RolledBack", reason=why, message=text.removesuffix(
        "; change the spec to try again"), generation=inp.generation, served=served)
    stable = inp.stable
    return Decision(Situation.ROLLED_BACK, Reason.ROLLED_BACK, text, stable,
                    _only(inp, {stable: inp.replicas} if stable else {}),
                    Traffic(stable=stable, fallback=(inp.target,) if served else ()),
                    analysis=analysis or {}, records=notes.records, events=tuple(notes.events),
                    requeue_after=PROGRESS_REQUEUE)


def _fail(inp: Inputs, notes: _Notes) -> Decision:
    text = f"revision {inp.target} was not available within progressDeadline {inp.spec.rollout.progress_deadline}"
    notes.event("Warning", Reason.PROGRESS_DEADLINE_EXCEEDED, text, inp.target)
    notes.record(inp.target, outcome="Failed", reason=Reason.PROGRESS_DEADLINE_EXCEEDED, message=text,
                 generation=inp.generation)
    rec = RevisionRecord(name=inp.target, outcome="Failed", reason=Reason.PROGRESS_DEADLINE_EXCEEDED, message=text,
                         served=inp.records.get(inp.target, RevisionRecord(name="")).served)
    return _pinned(inp, rec, notes)


def _served(inp: Inputs, ro: RolloutState) -> bool:
    """Has the revision taken users' traffic in this attempt (after its gate)? Then it may serve
    as a last resort while the stable has no ready pod."""
    return ro.revision == inp.target and _gate_open(inp, ro) and (ro.weight > 0 or ro.promoting)


# --------------------------------------------------------------------------- pods
def _canary_pods(inp: Inputs, weight: int) -> int:
    """The new revision's pods for ``weight`` percent. The stable keeps its full size beside it, so
    with the service router (traffic follows ready pods) the share is pods / (pods + replicas):
    at most half before promotion."""
    n = inp.replicas
    if n == 0 or weight <= 0:
        return 0
    if inp.spec.traffic.router == "service" and inp.spec.rollout.strategy == "Canary":
        return min(n, max(1, round(n * weight / max(1, 100 - weight))))
    return max(1, stepmath.canary_replicas(n, weight))


def _pods_ready(inp: Inputs, want: int) -> bool:
    state = inp.state(inp.target)
    return want == 0 or (state.replicas >= want and state.available >= want and state.ready >= want)


def _wait_for_pods(inp: Inputs, ro: RolloutState, want: int, notes: _Notes) -> tuple[RolloutState, bool]:
    """Count the progress deadline while the new revision's pods are awaited (not while the
    scheduler has no GPUs for them: they may come). Returns the state and whether it failed."""
    if _pods_ready(inp, want):
        return _set(ro, waiting_since=None, waiting_for_gpus=False), False
    notes.wake_within(PROGRESS_REQUEUE)
    state = inp.state(inp.target)
    gpu = inp.config.gpu_resource
    if state.unschedulable and "Insufficient" in state.unschedulable and gpu in state.unschedulable:
        if not ro.waiting_for_gpus:
            notes.event("Warning", Reason.INSUFFICIENT_GPU, _waiting_message(inp, state))
        # The deadline counts from when GPUs were found, not from when the wait for them began.
        return _set(ro, waiting_for_gpus=True, waiting_since=iso(inp.now)), False
    since = parse(ro.waiting_since) or inp.now
    ro = _set(ro, waiting_for_gpus=False, waiting_since=iso(since))
    deadline = seconds(inp.spec.rollout.progress_deadline)
    elapsed = (inp.now - since).total_seconds()
    if elapsed > deadline:
        return ro, True
    notes.wake_within(max(1.0, deadline - elapsed))
    return ro, False


def _waiting_message(inp: Inputs, state: RevisionState) -> str:
    return (f"waiting for GPUs: revision {inp.target} needs {inp.spec.resources.gpu.count} "
            f"{inp.config.gpu_resource} per replica and the scheduler says: {state.unschedulable}")


def _only(inp: Inputs, wanted: dict[str | None, int]) -> dict[str, int]:
    """Desired replicas: ``wanted`` for those revisions, zero for every other one."""
    out = {name: 0 for name in inp.observed.revisions}
    out.update({k: v for k, v in wanted.items() if k})
    return out


def _interval(inp: Inputs) -> float:
    return seconds(inp.spec.rollout.analysis.interval) if inp.spec.rollout.analysis else 30.0


