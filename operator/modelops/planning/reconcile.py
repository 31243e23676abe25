"""The reconcile planner: (ModelDeployment, observed cluster, measurements, now) -> Plan.

Pure and level-based: the same inputs give the same plan, and running a plan twice changes
nothing the second time. One direction, in three steps:

1. **decide** (planning/decide.py): the rollout state machine says which revision serves,
   which is rolled out and where, the replicas of every revision and where traffic goes;
2. **render** (planning/render.py): the objects that decision needs, traffic first and
   capacity after;
3. **status** (planning/status.py): conditions and the phase, computed once.

The whole rollout state lives in status, so after a restart the next plan continues from
the same step. A spec that cannot be rendered is reported in status, nothing is touched.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import replace

from pydantic import ValidationError

from modelops.config import OperatorConfig
from modelops.domain import conditions as cond
from modelops.domain.analysis import Measurement
from modelops.domain.autoscaling import LoadSample
from modelops.domain.conditions import Reason
from modelops.domain.golden import GoldenAnswer
from modelops.domain.observed import Observed
from modelops.domain.spec import ModelDeploymentSpec, ModelDeploymentStatus, ResolvedMetadata
from modelops.domain.timestamps import iso

from . import autoscaling, render, resources
from .contract import ANNOTATION_PREFIX, Event, Owner, Plan
from .decide import IDLE, Inputs, decide
from .engines.common import PlanError, selector_labels
from .status import F, T, StatusBuilder, apply_decision, metric_states


def plan(owner: Owner, observed: Observed, config: OperatorConfig, now: dt.datetime,
         measurements: list[Measurement] | None = None, golden: list[GoldenAnswer] | None = None,
         metadata: ResolvedMetadata | None = None, load: LoadSample | None = None) -> Plan:
    """``load``: spec.autoscaling's latest measurement (planning/autoscaling.py), None when there is none."""
    old = ModelDeploymentStatus.model_validate(owner.status or {})
    st = StatusBuilder(old, owner.generation, now)
    out = Plan(clear_annotations=[ANNOTATION_PREFIX + c for c in owner.commands()])
    try:
        spec = ModelDeploymentSpec.model_validate(owner.spec)
        resolved = _resolved_metadata(st, out, spec, metadata)
        if is_metadata_prefix(spec) and resolved is None:
            return _invalid(owner, st, out, "spec.model.metadata",
                            f"no best_model_metadata.json found under {spec.model.metadata} yet")
        target = resources.revision_for(owner.name, spec, config, resolved)
    except ValidationError as exc:
        first = exc.errors()[0]
        return _invalid(owner, st, out, "spec." + ".".join(str(p) for p in first["loc"]), first["msg"])
    except PlanError as exc:
        return _invalid(owner, st, out, exc.field, exc.message)

    auto = autoscaling.autoscale(spec, old, observed, load, now, target, config)
    _warnings(st, out, spec, config, auto.warnings)
    ro = old.rollout or IDLE
    key = rollout_hash(spec)
    same_attempt = ro.revision == target and ro.rollout_hash == key
    inputs = Inputs(
        name=owner.name, spec=spec, config=config, observed=observed, now=now, generation=owner.generation,
        target=target, rollout_hash=key,
        stable=old.stable_revision if old.stable_revision in observed.revisions else None,
        rollout=ro, records={r.name: r for r in old.revisions}, commands=owner.commands(),
        analysis=metric_states(old),
        # measured and asked for the revision in status' rollout: only that attempt may use them
        measurements=tuple(measurements or ()) if ro.revision else (),
        golden=tuple(golden) if golden is not None and same_attempt else None, total=auto.total)
    d = decide(inputs)
    if measurements and d.rollout.revision:
        d = replace(d, rollout=d.rollout.model_copy(update={"last_measured_at": iso(now)}))

    keep = {r for r in (d.stable, d.canary, d.rollout.previous_revision, *d.traffic.fallback) if r}
    rendered = render.render(owner.ref(), spec, config, target, resolved, d, observed, keep)
    out.apply, out.replicas, out.delete = rendered.apply, rendered.replicas, rendered.delete
    out.events.extend(d.events)
    out.events.extend(auto.events)
    target_fields = {"model": spec.model.name, "source": resources.served_from(spec), "engine": spec.engine.type,
                     "image": spec.engine.image or _default_image(spec, config),
                     "metadata_generation": resolved[1] if resolved else None}
    st.new.selector = pod_selector(owner.name)
    st.new.autoscaling = auto.status
    apply_decision(st, d, inputs.state(d.stable), inputs.replicas, target_fields, target, observed, auto.progress)
    out.status = st.finish()
    out.details.append(d.message)
    for seconds in (d.requeue_after, rendered.requeue_after, auto.requeue_after, config.resync_seconds):
        if seconds is not None:
            out.wake_within(seconds)
    if not owner.status and not observed.revisions and not observed.services:
        return _deployment_first(out)
    return out


def _deployment_first(full: Plan) -> Plan:
    """A new ModelDeployment's first pass creates its Deployment and nothing else, and comes back at
    once: nothing serves yet, so nothing needs the status recorded first, and a burst of new objects
    (Argo CD syncing hundreds) gets every Deployment's pods scheduling before any object's Service,
    split ConfigMap and status (the next pass plans those, with the Deployment observed). Events wait
    for that pass too, which derives them again: each is posted once."""
    return Plan(apply=[o for o in full.apply if o["kind"] == "Deployment"], replicas={}, requeue_after=0,
                details=["a new ModelDeployment: its Deployment first, the rest in the next pass"])


def rollout_hash(spec: ModelDeploymentSpec) -> str:
    """The settings a rollout is judged against: changing them starts the attempt afresh."""
    # Who is notified is not how the rollout is judged: editing spec.rollout.notify restarts nothing
    # (and objects written before the field existed keep their hash).
    doc = {"rollout": spec.rollout.model_dump(mode="json", exclude={"notify"}), "router": spec.traffic.router}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:10]


def is_metadata_prefix(spec: ModelDeploymentSpec) -> bool:
    return bool(spec.model.metadata and spec.model.metadata.endswith("/"))


def _resolved_metadata(st: StatusBuilder, out: Plan, spec: ModelDeploymentSpec,
                       fresh: ResolvedMetadata | None) -> tuple[str, int] | None:
    """The newest serving config of a metadata prefix: freshly looked up, else as recorded in status
    (so a restart or a failed lookup keeps the same revision)."""
    if not is_metadata_prefix(spec):
        st.new.metadata = None
        return None
    known = st.new.metadata if st.new.metadata and st.new.metadata.source == spec.model.metadata else None
    if fresh is not None and fresh.source == spec.model.metadata:
        if known is None or (known.uri, known.generation) != (fresh.uri, fresh.generation):
            out.events.append(Event("Normal", "NewServingConfig", f"{fresh.uri} generation {fresh.generation}"))
            st.new.metadata = fresh.model_copy(update={"resolved_at": st.now})
        known = st.new.metadata
    return (known.uri, known.generation) if known else None


def _warnings(st: StatusBuilder, out: Plan, spec: ModelDeploymentSpec, config: OperatorConfig,
              replicas: tuple[str, ...] = ()) -> None:
    """What is wrong but stops nothing, said in status.warnings (and once in a Warning Event, when
    the warning appears): receivers named in the spec that the operator has not configured (the
    rollout goes on regardless), and ``replicas``: spec.replicas changed while spec.autoscaling owns
    the total (it is ignored)."""
    warnings = [(Reason.UNKNOWN_RECEIVER, f'spec.rollout.notify[{i}]: no receiver "{name}" is configured in the '
                                          'operator')
                for i, name in enumerate(spec.rollout.notify) if name not in config.notify_receivers]
    warnings += [(Reason.REPLICAS_IGNORED, text) for text in replicas]
    for reason, text in warnings:
        if text not in (st.old.warnings or []):
            out.events.append(Event("Warning", reason, text))
    st.new.warnings = [text for _, text in warnings] or None


def pod_selector(name: str) -> str:
    """The label selector of every revision's pods, as the scale subresource gives it (status.selector).

    >>> pod_selector("chat")
    'modelops.dev/deployment=chat'
    """
    return ",".join(f"{k}={v}" for k, v in selector_labels(name).items())


def _invalid(owner: Owner, st: StatusBuilder, out: Plan, field_path: str, message: str) -> Plan:
    """Refuse the spec in status; whatever serves keeps serving, untouched. Commands are cleared
    (and said to be ignored): acted on later, a stale abort would hit the next valid rollout."""
    text = f"{field_path}: {message}"
    old = cond.get(st.old.conditions, cond.DEGRADED)
    if old is None or old.reason != Reason.INVALID_SPEC:
        out.events.append(Event("Warning", Reason.INVALID_SPEC, text))
    for command in owner.commands():
        out.events.append(Event("Warning", "CommandIgnored",
                                f"{ANNOTATION_PREFIX}{command} ignored: the spec is invalid ({text})"))
    st.condition(cond.DEGRADED, T, Reason.INVALID_SPEC, text)
    st.condition(cond.PROGRESSING, F, Reason.INVALID_SPEC, "the spec cannot be rolled out: " + text)
    st.new.message = "invalid spec: " + text
    out.details.append(st.new.message)
    out.status = st.finish()
    return out


def _default_image(spec: ModelDeploymentSpec, config: OperatorConfig) -> str:
    if spec.engine.type == "hosted":
        return config.inference_image  # the gateway is all a hosted revision runs
    return config.vllm_image if spec.engine.type == "vllm" else config.ollama_image
