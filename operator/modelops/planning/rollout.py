"""Rollout strategies: the state machine that brings a new revision in beside the stable one.

Each function reads the context (spec, observed revisions, status so far, manual
commands, the analysis record) and adds to the plan: desired Deployments, traffic
objects, status and events. State that must survive a restart (step, weight, pause,
timers, analysis counts) is in status.

- Canary: steps ``setWeight`` (traffic moves only once the canary's pods for that share
  are available), ``pause`` (timed, or until promoted), ``analysis`` (the run must be
  Successful, measured after the step started). Background analysis runs throughout.
- BlueGreen: the new revision comes up at full size behind a preview Service; promotion
  (automatic once the analysis passes, or manual) flips the main Service; the old
  revision stays warm for ``scaleDownDelay``.
- ABTest: the challenger is held at a fixed share (and header matches, with Gateway API)
  until promoted or aborted; analysis compares it with the stable revision all along.

Failed or Error analysis, or ``modelops.dev/abort``, aborts: the canary's weight goes
to 0 at once, the stable revision serves at full size, the failed revision scales to
zero and is pinned as RolledBack for this generation. After promotion, analysis
continues for ``bakeTime``; degradation rolls back to the previous revision, kept warm.
"""

from __future__ import annotations

import datetime as dt

from modelops.domain import conditions as cond
from modelops.domain import steps as stepmath
from modelops.domain.analysis import RunAssessment, RunVerdict, assess_run
from modelops.domain.conditions import Reason
from modelops.domain.durations import seconds
from modelops.domain.observed import RevisionState
from modelops.domain.spec import AnalysisSpec, RolloutState

from . import traffic
from .reconcile import PROGRESS_REQUEUE, Ctx, F, T, available, parse_time, replica_status, stable_status, waiting_text


# --------------------------------------------------------------------------- serving
def serve(ctx: Ctx) -> None:
    """The target is the stable revision: keep it at spec size, serving; finish a bake."""
    st, stable = ctx.st, ctx.target
    ro = st.new.rollout if st.new.rollout and st.new.rollout.revision == stable else None
    previous = ro.previous_revision if ro and ro.previous_revision in ctx.observed.revisions else None
    if ro and previous and ro.bake_until and ctx.now < parse_time(ro.bake_until):  # type: ignore[operator]
        run = _run(ctx)
        if "abort" in ctx.commands or run.verdict in (RunVerdict.failed, RunVerdict.error):
            why = "Aborted" if "abort" in ctx.commands else f"Analysis{run.verdict.value}"
            _rollback_after_promotion(ctx, previous, why, run.message if why != "Aborted" else "aborted by annotation")
            return
        ctx.out.wake_within(_analysis_interval(ctx))
    ctx.deployment(stable, ctx.replicas)
    ctx.route(traffic.Traffic(stable=stable))

    keep_until = _keep_previous_until(ro)
    if previous and keep_until and ctx.now < keep_until:
        ctx.out.wake_within(max(1.0, (keep_until - ctx.now).total_seconds()))
    elif ro and (ro.previous_revision or ro.bake_until):
        previous = None
        st.new.rollout = ro.model_copy(update={"previous_revision": None, "bake_until": None, "scale_down_at": None})
    for name, rev in ctx.observed.revisions.items():
        if name not in (stable, previous) and rev.replicas > 0:
            ctx.out.scale[name] = 0

    if st.old.stable_revision != stable and st.old.stable_revision:
        st.record(st.old.stable_revision, outcome="Superseded", reason="Replaced")
    ctx.record_target(outcome="Serving", reason="Available")
    st.new.stable_revision = stable
    st.new.canary_revision = None
    st.new.canary_weight = None
    st.new.current_step = None
    state = ctx.state(stable)
    replica_status(st, state, ctx.replicas)
    st.condition(cond.DEGRADED, F, Reason.AS_EXPECTED, "")
    baking = bool(ro and ro.bake_until and previous)
    if baking:
        text = f"{stable} serves; analysis continues until {ro.bake_until} (bakeTime), {previous} kept warm"  # type: ignore[union-attr]
        st.condition(cond.PROGRESSING, T, "Baking", text)
    else:
        st.condition(cond.PROGRESSING, T, Reason.REVISION_AVAILABLE, f"revision {stable} is serving")
    if state.ready >= ctx.replicas and state.replicas == ctx.replicas:
        st.condition(cond.READY, T, Reason.ALL_REPLICAS_READY, f"{state.ready}/{ctx.replicas} replicas ready")
        st.new.message = text if baking else f"{stable} serves {ctx.spec.model.name}: {state.ready}/{ctx.replicas} ready"
    else:
        st.condition(cond.READY, F, Reason.REPLICAS_NOT_READY, waiting_text(state, ctx.replicas))
        st.new.message = f"{stable}: " + waiting_text(state, ctx.replicas)
        ctx.out.wake_within(PROGRESS_REQUEUE)
    available(st, state, ctx.replicas)


def _keep_previous_until(ro: RolloutState | None) -> dt.datetime | None:
    if ro is None:
        return None
    times = [t for t in (parse_time(ro.bake_until), parse_time(ro.scale_down_at)) if t]
    return max(times) if times else None


def _rollback_after_promotion(ctx: Ctx, previous: str, why: str, message: str) -> None:
    """Post-promotion degradation: traffic back to the previous revision (warm), the new one down."""
    st, failed = ctx.st, ctx.target
    st.new.stable_revision = previous
    ctx.deployment(previous, max(ctx.state(previous).replicas, ctx.replicas))
    ctx.route(traffic.Traffic(stable=previous))
    ctx.out.scale[failed] = 0
    text = f"rolled back from {failed} to {previous}: {message}"
    ctx.record_target(outcome="RolledBack", reason=why, message=text)
    st.record(previous, outcome="Serving", reason="RolledBackTo")
    st.new.rollout = None
    _rolled_back_status(ctx, previous, text)


# --------------------------------------------------------------------------- rolling out
def roll_out(ctx: Ctx) -> None:
    st = ctx.st
    ro = st.new.rollout
    if ro is None or ro.revision != ctx.target:  # a new rollout starts (also when the previous was superseded)
        ro = RolloutState(revision=ctx.target, started_at=st.now, step_started_at=st.now)
        st.new.current_step = 0
        st.new.canary_weight = 0
        st.new.analysis = None
        st.event("Normal", Reason.NEW_REVISION,
                 f"rolling out revision {ctx.target} ({ctx.spec.model.name} on {ctx.spec.engine.type}) "
                 f"with {ctx.spec.rollout.strategy}")
        ctx.record_target(outcome="Progressing", reason=Reason.REVISION_PROGRESSING, started=st.now)
    st.new.rollout = ro
    st.new.canary_revision = ctx.target

    if "abort" in ctx.commands:
        abort(ctx, "Aborted", "aborted by annotation modelops.dev/abort")
        return
    if "pause" in ctx.commands:
        _pause(ctx, "Manual")
    if "resume" in ctx.commands:
        st.new.rollout = st.new.rollout.model_copy(update={"paused": False, "pause_reason": None})
    run = _run(ctx)
    if run.verdict in (RunVerdict.failed, RunVerdict.error):
        abort(ctx, f"Analysis{run.verdict.value}", run.message)
        return
    if ctx.golden is not None and _judge_golden(ctx):
        return
    if ctx.spec.rollout.analysis and ctx.spec.rollout.analysis.metrics:
        ctx.out.wake_within(_analysis_interval(ctx))

    strategy = ctx.spec.rollout.strategy
    if strategy == "BlueGreen":
        _blue_green(ctx, run)
    elif strategy == "ABTest":
        _ab_test(ctx)
    else:
        _canary(ctx, run)


def _canary(ctx: Ctx, run: RunAssessment) -> None:
    st = ctx.st
    steps = ctx.spec.rollout.canary.steps if ctx.spec.rollout.canary else []
    promote = ctx.commands.get("promote")
    if promote == "full" or st.new.rollout.promoting:  # type: ignore[union-attr]
        return _promote_when_ready(ctx, "promoted by annotation (full)", st.new.canary_weight or 0)
    i = st.new.current_step or 0
    weight = st.new.canary_weight or 0
    if promote is not None:  # one step: leave a pause, or skip the current step
        st.new.rollout = st.new.rollout.model_copy(update={"paused": False, "pause_reason": None})  # type: ignore[union-attr]
        i, weight = _advance(ctx, i, weight, steps, skip=True)

    for _ in range(len(steps) + 1):
        if st.new.rollout.paused:  # type: ignore[union-attr]
            break
        if i >= len(steps):
            if _gate(ctx, run, ctx.replicas, weight):
                return _promote(ctx, "all steps completed")
            break
        step = steps[i]
        kind = stepmath.step_kind(step)
        started = parse_time(st.new.rollout.step_started_at) or ctx.now  # type: ignore[union-attr]
        if kind == "setWeight":
            want = _canary_pods(ctx, step.set_weight or 0)
            _desire_split(ctx, want, weight)
            if not _pods_ready(ctx, want) or not _may_advance(ctx, run, weight):
                break
            i, weight = _advance(ctx, i, step.set_weight or 0, steps)
            _desire_split(ctx, want, weight)
        elif kind == "pause":
            _desire_split(ctx, _canary_pods(ctx, weight), weight)
            duration = step.pause.duration if step.pause else None
            if duration is None:
                _pause(ctx, "PauseStep", f"step {i + 1} waits for modelops.dev/promote")
                break
            left = seconds(duration) - (ctx.now - started).total_seconds()
            if left > 0:
                ctx.out.wake_within(max(0.5, left))
                break
            if not _may_advance(ctx, run, weight):
                break
            i, weight = _advance(ctx, i, weight, steps)
        else:  # analysis step: a Successful run measured after the step started
            _desire_split(ctx, _canary_pods(ctx, weight), weight)
            measured = parse_time(st.new.rollout.last_measured_at)  # type: ignore[union-attr]
            if not _may_advance(ctx, run, weight) or not (measured and measured >= started):
                break
            i, weight = _advance(ctx, i, weight, steps)

    if st.new.rollout is None:  # failed past progressDeadline while waiting
        return
    st.new.current_step = i
    st.new.canary_weight = weight
    _rolling_status(ctx, f"step {min(i, len(steps)) + (0 if i >= len(steps) else 1)}/{len(steps)}"
                    if steps else "waiting for the new revision", weight, run)


GOLDEN_ATTEMPTS = 3


def _judge_golden(ctx: Ctx) -> bool:
    """Record the quality gate's answers; a failed prompt aborts (returns True)."""
    from modelops.domain.golden import check, excerpt

    pre = ctx.spec.rollout.analysis.pre_promotion  # type: ignore[union-attr]
    expectations = {g.prompt: g.expect for g in pre.golden_prompts}  # type: ignore[union-attr]
    ro = ctx.st.new.rollout
    assert ro is not None
    unreachable = [a for a in ctx.golden or [] if a.status is None]
    if unreachable and ro.golden_attempts + 1 < GOLDEN_ATTEMPTS:
        # Endpoints lag pod readiness: an unreachable revision is asked again, a few times.
        ctx.st.new.rollout = ro.model_copy(update={"golden_attempts": ro.golden_attempts + 1,
                                                    "golden_asked_at": ctx.st.now})
        ctx.out.wake_within(PROGRESS_REQUEUE)
        return False
    for answer in ctx.golden or []:
        why = check(expectations[answer.prompt], answer)
        if why:
            abort(ctx, "GoldenPromptFailed",
                  f'golden prompt "{excerpt(answer.prompt)}" failed: {why}; answer: "{excerpt(answer.text)}"')
            return True
    ctx.st.new.rollout = ctx.st.new.rollout.model_copy(update={"golden_prompts": "Passed"})  # type: ignore[union-attr]
    ctx.st.event("Normal", "GoldenPromptsPassed", f"{len(ctx.golden or [])} golden prompts passed on {ctx.target}")
    return False


def _golden_pending(ctx: Ctx) -> bool:
    """The quality gate is configured and has not passed yet: no traffic, no promotion."""
    ro = ctx.st.new.rollout
    return ctx.golden_prompts and (ro is None or ro.golden_prompts != "Passed")


def _may_advance(ctx: Ctx, run: RunAssessment, weight: int) -> bool:
    """A step moves on only on good data: a Successful run, or no data yet while the canary has
    no traffic. Inconclusive pauses for a person; errors and failures below the limits wait."""
    if _golden_pending(ctx):
        ctx.out.wake_within(PROGRESS_REQUEUE)
        return False
    metrics = ctx.spec.rollout.analysis.metrics if ctx.spec.rollout.analysis else []
    if not metrics or run.verdict == RunVerdict.successful:
        return True
    if run.verdict == RunVerdict.pending:
        return weight == 0
    if run.verdict == RunVerdict.inconclusive:
        _pause_if_still_inconclusive(ctx, run)
    return False


def _pause_if_still_inconclusive(ctx: Ctx, run: RunAssessment) -> None:
    """Data cannot be conclusive before one window of traffic at this step (a new revision's
    series appear with its first scrape): wait that long, then pause for a person."""
    analysis = ctx.spec.rollout.analysis
    assert analysis is not None
    started = parse_time(ctx.st.new.rollout.step_started_at) or ctx.now  # type: ignore[union-attr]
    settle = seconds(analysis.window) + seconds(analysis.interval)
    if (ctx.now - started).total_seconds() < settle:
        ctx.out.wake_within(seconds(analysis.interval))
        return
    _pause(ctx, "Inconclusive", run.message)


def _advance(ctx: Ctx, i: int, weight: int, steps: list, skip: bool = False) -> tuple[int, int]:
    """Finish step ``i`` (a skipped setWeight still sets its weight once pods are there)."""
    if skip and i < len(steps) and steps[i].set_weight is not None:
        weight = max(weight, steps[i].set_weight)
    ctx.st.new.rollout = ctx.st.new.rollout.model_copy(update={"step_started_at": ctx.st.now})  # type: ignore[union-attr]
    ctx.st.new.current_step = i + 1
    ctx.st.new.canary_weight = weight
    return i + 1, weight


def _canary_pods(ctx: Ctx, weight: int) -> int:
    pods = stepmath.canary_replicas(ctx.replicas, weight)
    if ctx.spec.traffic.router == "gateway-api" and ctx.replicas > 0:
        pods = max(1, pods)  # a pod to take traffic as soon as the route shifts
    return pods


def _desire_split(ctx: Ctx, canary_pods: int, weight: int) -> None:
    """Canary at ``canary_pods``; stable at full size (gateway-api) or giving up only what the
    canary already serves (service router); traffic at ``weight`` only to ready pods."""
    canary, stable = ctx.target, ctx.stable
    cstate = ctx.state(canary)
    ctx.deployment(canary, canary_pods)
    if ctx.spec.traffic.router == "gateway-api":
        ctx.deployment(stable, max(ctx.replicas, ctx.state(stable).replicas) if ctx.replicas else 0)  # type: ignore[arg-type]
        ctx.route(traffic.Traffic(stable=stable, canary=canary, weight=weight if cstate.ready else 0))
    else:
        serving = min(cstate.available, canary_pods) if weight > 0 else 0
        ctx.deployment(stable, stepmath.stable_replicas_for_split(ctx.replicas, serving))  # type: ignore[arg-type]
        ctx.route(traffic.Traffic(stable=stable, canary=canary, split=weight > 0 and cstate.ready > 0))


def _pods_ready(ctx: Ctx, want: int) -> bool:
    """Are the new revision's ``want`` pods available? If not, say why (and count the deadline
    from when the waiting began)."""
    st = ctx.st
    ro = st.new.rollout
    assert ro is not None
    state = ctx.state(ctx.target)
    if want == 0 or (state.replicas >= want and state.available >= want and state.ready >= want):
        if ro.waiting_since:
            st.new.rollout = ro.model_copy(update={"waiting_since": None})
        return True
    if not ro.waiting_since:
        st.new.rollout = ro = ro.model_copy(update={"waiting_since": st.now})
    waiting_for_pods(ctx, state, want, since=parse_time(ro.waiting_since) or ctx.now)
    return False


def waiting_for_pods(ctx: Ctx, state: RevisionState, want: int, since: dt.datetime) -> bool:
    """Report why the new revision's pods are not there yet; abort past progressDeadline.
    Returns True when the rollout was aborted."""
    st = ctx.st
    ctx.out.wake_within(PROGRESS_REQUEUE)
    gpu = ctx.config.gpu_resource
    if state.unschedulable and "Insufficient" in state.unschedulable and gpu in state.unschedulable:
        text = (f"waiting for GPUs: revision {ctx.target} needs {ctx.spec.resources.gpu.count} {gpu} per "
                f"replica and the scheduler says: {state.unschedulable}")
        st.event_on_change(cond.PROGRESSING, Reason.INSUFFICIENT_GPU, "Warning", text)
        st.condition(cond.PROGRESSING, T, Reason.INSUFFICIENT_GPU, text)
        st.new.message = text
        st.condition(cond.DEGRADED, F, Reason.AS_EXPECTED, "")
        return False  # GPUs may come (autoscaler, other workloads ending): wait, do not count the deadline
    deadline = seconds(ctx.spec.rollout.progress_deadline)
    if (ctx.now - since).total_seconds() > deadline:
        ctx.record_target(outcome="Failed", reason=Reason.PROGRESS_DEADLINE_EXCEEDED)
        from .reconcile import pinned_failed

        ctx.out.apply = [o for o in ctx.out.apply if o["metadata"]["name"] != ctx.target]
        if ctx.stable:
            ctx.out.apply = [o for o in ctx.out.apply if o["kind"] != "Service" and o["kind"] != "HTTPRoute"]
        pinned_failed(ctx, {r.name: r for r in st.new.revisions}[ctx.target])
        ctx.out.scale[ctx.target] = 0
        return True
    ctx.out.wake_within(max(1.0, deadline - (ctx.now - since).total_seconds()))
    return False


def _gate(ctx: Ctx, run: RunAssessment, pods: int, weight: int) -> bool:
    """Before taking all traffic: full size, ready, and (if analysed) a Successful run."""
    _desire_split(ctx, pods, weight)
    if not _pods_ready(ctx, pods) or _golden_pending(ctx):
        return False
    metrics = ctx.spec.rollout.analysis.metrics if ctx.spec.rollout.analysis else []
    if not metrics or run.verdict == RunVerdict.successful:
        return True
    if run.verdict == RunVerdict.inconclusive:
        _pause(ctx, "Inconclusive", run.message)
    return False


def _blue_green(ctx: Ctx, run: RunAssessment) -> None:
    st = ctx.st
    canary = ctx.target
    ctx.deployment(canary, ctx.replicas)
    ctx.deployment(ctx.stable, max(ctx.replicas, ctx.state(ctx.stable).replicas))  # type: ignore[arg-type]
    ctx.route(traffic.Traffic(stable=ctx.stable, preview=canary))
    bg = ctx.spec.rollout.blue_green
    auto = bg.auto_promote if bg else True
    if "promote" in ctx.commands or st.new.rollout.promoting:  # type: ignore[union-attr]
        return _promote_when_ready(ctx, "promoted by annotation", 0, blue_green=True)
    # The preview's analysis window starts when it is up (someone has to send it traffic): until
    # then step_started_at stays unset, so an Inconclusive verdict waits a window before pausing.
    up = ctx.state(canary).ready >= ctx.replicas
    if up != (st.new.rollout.step_started_at is not None):  # type: ignore[union-attr]
        st.new.rollout = st.new.rollout.model_copy(update={"step_started_at": st.now if up else None})  # type: ignore[union-attr]
    if not st.new.rollout.paused and _pods_ready(ctx, ctx.replicas) and not _golden_pending(ctx):  # type: ignore[union-attr]
        metrics = ctx.spec.rollout.analysis.metrics if ctx.spec.rollout.analysis else []
        passed = not metrics or run.verdict == RunVerdict.successful
        if auto and passed:
            return _promote(ctx, "the preview passed its checks", blue_green=True)
        if run.verdict == RunVerdict.inconclusive:
            _pause_if_still_inconclusive(ctx, run)
        elif not auto and passed:
            _pause(ctx, "AwaitingPromotion", f"{canary} is ready on the preview Service {ctx.owner.name}-preview")
    if st.new.rollout is None:
        return
    st.new.canary_weight = 0
    st.new.current_step = None
    _rolling_status(ctx, "blue-green: preview", 0, run)


def _ab_test(ctx: Ctx) -> None:
    st = ctx.st
    ab = ctx.spec.rollout.ab_test
    assert ab is not None  # the CRD requires it for ABTest
    if "promote" in ctx.commands or st.new.rollout.promoting:  # type: ignore[union-attr]
        return _promote_when_ready(ctx, "A/B test promoted by annotation", st.new.canary_weight or 0)
    pods = _canary_pods(ctx, ab.weight)
    ready = _pods_ready(ctx, pods)
    weight = ab.weight if ready else 0
    _desire_ab(ctx, pods, weight, active=ready)
    if st.new.rollout is None:
        return
    st.new.canary_weight = weight
    st.new.current_step = None
    how = f"users assigned by {ab.sticky_header} or the OpenAI user field" + (
        ", header matches to the challenger" if ab.match else "")
    _rolling_status(ctx, f"A/B test ({how})", weight, _run(ctx), hold=True)


def _desire_ab(ctx: Ctx, challenger_pods: int, percent: int, active: bool) -> None:
    """Challenger at ``challenger_pods``; every request reaches the stable revision first (its gateway
    assigns ``percent`` of users, see planning.traffic), so the stable one stays at full size.
    Header matches reach the challenger only while it is ``active`` (ready)."""
    ab = ctx.spec.rollout.ab_test
    assert ab is not None
    ctx.deployment(ctx.target, challenger_pods)
    ctx.deployment(ctx.stable, max(ctx.replicas, ctx.state(ctx.stable).replicas))  # type: ignore[arg-type]
    ctx.route(traffic.Traffic(stable=ctx.stable, canary=ctx.target, weight=0,
                              matches=tuple(m.headers for m in ab.match) if active else (),
                              ab=traffic.ABSplit(percent=percent, header=ab.sticky_header)))


# --------------------------------------------------------------------------- transitions
def _pause(ctx: Ctx, reason: str, message: str = "") -> None:
    ro = ctx.st.new.rollout
    assert ro is not None
    if not ro.paused:
        ctx.st.event("Normal", "Paused", f"rollout of {ro.revision} paused ({reason}){': ' + message if message else ''}")
    ctx.st.new.rollout = ro.model_copy(update={"paused": True, "pause_reason": reason})


def _promote_when_ready(ctx: Ctx, why: str, weight: int, blue_green: bool = False) -> None:
    """A person asked to promote: bring the revision to full size first (traffic unchanged), then promote."""
    st = ctx.st
    st.new.rollout = st.new.rollout.model_copy(update={"promoting": True, "paused": False,  # type: ignore[union-attr]
                                                       "pause_reason": None})
    if blue_green:
        ctx.deployment(ctx.target, ctx.replicas)
        ctx.deployment(ctx.stable, max(ctx.replicas, ctx.state(ctx.stable).replicas))  # type: ignore[arg-type]
        ctx.route(traffic.Traffic(stable=ctx.stable, preview=ctx.target))
    elif ctx.spec.rollout.strategy == "ABTest":  # the same users keep their variant while it scales up
        _desire_ab(ctx, ctx.replicas, weight, active=ctx.state(ctx.target).ready > 0)
    else:
        _desire_split(ctx, ctx.replicas, weight)
    if _pods_ready(ctx, ctx.replicas):
        return _promote(ctx, why, blue_green=blue_green)
    if st.new.rollout is not None:
        _rolling_status(ctx, "promoting", weight, _run(ctx))


def _promote(ctx: Ctx, why: str, blue_green: bool = False) -> None:
    """The new revision takes all traffic; the previous stays warm for bakeTime / scaleDownDelay."""
    st = ctx.st
    previous = ctx.stable
    analysis = ctx.spec.rollout.analysis
    bake = seconds(analysis.bake_time) if analysis and analysis.bake_time else 0.0
    delay = seconds(ctx.spec.rollout.blue_green.scale_down_delay) if blue_green and ctx.spec.rollout.blue_green \
        else (seconds("5m") if blue_green else 0.0)
    now = ctx.now
    st.new.rollout = RolloutState(
        revision=ctx.target, started_at=st.new.rollout.started_at if st.new.rollout else st.now,
        promoted_at=st.now, previous_revision=previous if (bake or delay) else None,
        bake_until=_iso(now + dt.timedelta(seconds=bake)) if bake else None,
        scale_down_at=_iso(now + dt.timedelta(seconds=delay)) if delay else None,
        last_measured_at=st.new.rollout.last_measured_at if st.new.rollout else None)
    st.event("Normal", "Promoted", f"revision {ctx.target} now serves {ctx.spec.model.name} ({why})")
    ctx.stable = ctx.target
    st.new.stable_revision = ctx.target
    serve(ctx)


def abort(ctx: Ctx, why: str, message: str) -> None:
    """Weight to 0 at once, stable at full size, the new revision down and pinned for this generation."""
    st = ctx.st
    stable = ctx.stable
    ctx.out.apply = [o for o in ctx.out.apply if o["metadata"]["name"] != ctx.target]
    ctx.out.scale[ctx.target] = 0
    if stable:
        ctx.deployment(stable, max(ctx.replicas, ctx.state(stable).replicas))
        ctx.route(traffic.Traffic(stable=stable))
    text = f"rollout of {ctx.target} aborted: {message}"
    ctx.record_target(outcome="RolledBack", reason=why, message=text)
    st.new.rollout = None
    _rolled_back_status(ctx, stable, text)


def _rolled_back_status(ctx: Ctx, stable: str | None, text: str) -> None:
    st = ctx.st
    text += "; change the spec to try again"  # the same words the pinned state keeps showing
    st.event("Warning", Reason.ROLLED_BACK, text)
    st.condition(cond.PROGRESSING, F, Reason.ROLLED_BACK, text)
    st.condition(cond.DEGRADED, T, Reason.ROLLED_BACK, text)
    st.new.message = text
    st.new.canary_revision = None
    st.new.canary_weight = None
    st.new.current_step = None
    stable_status(ctx, stable, rolling=False)
    if stable:  # the stable was (or is being) scaled back to full size
        replica_status(st, ctx.state(stable), max(ctx.replicas, ctx.state(stable).replicas))


def _rolling_status(ctx: Ctx, where: str, weight: int, run: RunAssessment, hold: bool = False) -> None:
    st = ctx.st
    ro = st.new.rollout
    assert ro is not None
    cstate = ctx.state(ctx.target)
    parts = [f"{where}: {weight}% to {ctx.target}"]
    if ctx.spec.traffic.router == "service" and not hold and weight not in (0, 100):
        parts.append(f"(service router: weight approximated by ready pods, now "
                     f"{stepmath.replica_weight(ctx.state(ctx.stable).ready, cstate.ready)}%)")
    if ctx.spec.rollout.analysis and ctx.spec.rollout.analysis.metrics:
        parts.append(f"analysis {run.verdict.value.lower()}" + (f": {run.message}" if run.message else ""))
    text = ", ".join(parts)
    if ro.paused:
        reason = Reason.PAUSED
        text = f"paused ({ro.pause_reason}): " + text
        st.event_on_change(cond.PROGRESSING, reason, "Normal", text)
    else:
        prog = cond.get(st.new.conditions, cond.PROGRESSING)
        if prog is not None and prog.reason == Reason.INSUFFICIENT_GPU and st.new.message and \
                st.new.message.startswith("waiting for GPUs"):
            stable_status(ctx, ctx.stable, rolling=True)
            return  # waiting_for_pods said why
        reason = "ABTest" if hold else Reason.REVISION_PROGRESSING
    st.condition(cond.PROGRESSING, T, reason, text)
    st.condition(cond.DEGRADED, F, Reason.AS_EXPECTED, "")
    st.new.message = text
    stable_status(ctx, ctx.stable, rolling=True)


# --------------------------------------------------------------------------- analysis
def _run(ctx: Ctx) -> RunAssessment:
    analysis = ctx.spec.rollout.analysis or AnalysisSpec()
    return assess_run(analysis, ctx.st.metric_states())


def _analysis_interval(ctx: Ctx) -> float:
    return seconds(ctx.spec.rollout.analysis.interval) if ctx.spec.rollout.analysis else 30.0


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
