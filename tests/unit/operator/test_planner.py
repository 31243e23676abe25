"""The reconcile planner, as tables: observed snapshots in, plans out; no cluster."""

from __future__ import annotations

import datetime as dt

import pytest

from modelops.config import OperatorConfig
from modelops.domain.observed import Observed, RevisionState, ServiceState
from modelops.domain.spec import ModelDeploymentSpec
from modelops.planning import reconcile, resources
from modelops.planning.contract import writes
from tests.unit.operator.sim import after_first_pass

CFG = OperatorConfig()
NOW = dt.datetime(2026, 11, 21, 12, 0, 0, tzinfo=dt.timezone.utc)
SPEC = {"model": {"name": "gemma", "source": "gs://models/gemma/"}, "replicas": 2,
        "resources": {"gpu": {"count": 1, "type": "nvidia-l4"}}}
V2 = {**SPEC, "model": {"name": "gemma", "source": "gs://models/gemma-v2/"}}


def rev_of(spec: dict) -> str:
    return resources.revision_for("chat", ModelDeploymentSpec.model_validate(spec), CFG)


def owner(spec: dict, status: dict | None = None, generation: int = 1) -> reconcile.Owner:
    return reconcile.Owner("chat", "ml", "uid-1", generation, spec, status or {})


def ready(name: str, n: int = 2, created: str = "2026-11-21T11:00:00Z") -> RevisionState:
    return RevisionState(name=name, replicas=n, ready=n, available=n, updated=n, available_condition=True,
                         created=created)


def run(o: reconcile.Owner, obs: Observed, now: dt.datetime = NOW) -> reconcile.Plan:
    return reconcile.plan(o, obs, CFG, now)


def settle(o: reconcile.Owner, obs: Observed) -> tuple[reconcile.Owner, reconcile.Plan]:
    p = run(o, obs)
    return reconcile.Owner(o.name, o.namespace, o.uid, o.generation, o.spec, p.status or o.status), p


def applied(plan: reconcile.Plan) -> dict[str, dict]:
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in plan.apply}


def scales(plan: reconcile.Plan, obs: Observed) -> dict[str, int]:
    """The scale writes the executor would make for this plan against ``obs``."""
    return {w.name: w.replicas for w in writes(plan, obs) if w.kind == "scale"}


def cond(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


def first_visit(o: reconcile.Owner) -> tuple[reconcile.Plan, Observed]:
    """A new object's first two passes: its Deployment alone, then the rest with it observed."""
    obs = after_first_pass(run(o, Observed()))
    return run(o, obs), obs


def test_a_new_modeldeployment_creates_its_deployment_first_and_comes_back_at_once() -> None:
    """Nothing serves yet, so nothing needs the status recorded first: a burst of new objects gets
    every Deployment's pods scheduling before any object's Service and status. The Events wait for
    the next pass (which derives them again), so each is posted once."""
    r1 = rev_of(SPEC)
    p = run(owner(SPEC), Observed())
    assert [(w.kind, w.name) for w in writes(p, Observed())] == [("apply", r1)]
    assert p.status is None and p.events == [] and p.requeue_after == 0
    second, obs = first_visit(owner(SPEC))
    assert [w.kind for w in writes(second, obs)][0] == "status"
    assert [e.reason for e in second.events] == ["NewRevision"]


def test_first_visit_creates_the_revision_and_service_and_sets_every_condition() -> None:
    p, _ = first_visit(owner(SPEC))
    r1 = rev_of(SPEC)
    objs = applied(p)
    assert objs[f"Deployment/{r1}"]["spec"]["replicas"] == 2
    assert objs["Service/chat"]["spec"]["selector"]["modelops.dev/revision"] == r1
    assert {c["type"] for c in p.status["conditions"]} == {"Ready", "Available", "Progressing", "Degraded"}
    assert p.status["phase"] == "Pending"
    assert p.status["observedGeneration"] == 1
    assert [e.reason for e in p.events] == ["NewRevision"]


def test_first_revision_available_becomes_stable_andhealthy() -> None:
    r1 = rev_of(SPEC)
    o, _ = settle(owner(SPEC), after_first_pass(run(owner(SPEC), Observed())))
    p = run(o, Observed(revisions={r1: ready(r1)}))
    assert p.status["stableRevision"] == r1
    assert p.status["phase"] == "Healthy"
    assert p.status["ready"] == "2/2"
    assert cond(p.status, "Ready")["status"] == "True"
    assert [e.reason for e in p.events] == ["Promoted"]


def healthy() -> tuple[reconcile.Owner, Observed]:
    r1 = rev_of(SPEC)
    o, _ = settle(owner(SPEC), after_first_pass(run(owner(SPEC), Observed())))
    o, _ = settle(o, Observed(revisions={r1: ready(r1)}))
    return o, Observed(revisions={r1: ready(r1)}, services={"chat": ServiceState("chat", r1, None)})


def test_steady_state_plans_no_status_write_and_no_events() -> None:
    o, obs = healthy()
    p = run(o, obs)
    assert p.status is None and p.events == [] and scales(p, obs) == {} and p.delete == []
    # the same objects are planned, and the executor skips them by their applied hash
    assert applied(p) == applied(run(o, obs))


def test_new_revision_comes_up_beside_stable_which_is_not_touched() -> None:
    o, obs = healthy()
    r1, r2 = rev_of(SPEC), rev_of(V2)
    o2 = owner(V2, o.status, generation=2)
    p = run(o2, obs)
    objs = applied(p)
    assert objs[f"Deployment/{r2}"]["spec"]["replicas"] == 2
    assert f"Deployment/{r1}" not in objs  # the stable revision is not touched
    assert objs["Service/chat"]["spec"]["selector"]["modelops.dev/revision"] == r1
    assert scales(p, obs) == {}
    assert p.status["stableRevision"] == r1 and p.status["canaryRevision"] == r2
    assert p.status["phase"] == "Progressing"
    assert cond(p.status, "Available")["status"] == "True"


def test_new_revision_half_ready_is_not_promoted() -> None:
    o, obs = healthy()
    r1, r2 = rev_of(SPEC), rev_of(V2)
    o2, _ = settle(owner(V2, o.status, generation=2), obs)
    half = RevisionState(name=r2, replicas=2, ready=1, available=1, updated=2)
    seen = Observed(revisions={r1: ready(r1), r2: half}, services=obs.services)
    p = run(o2, seen)
    assert p.status is None or p.status["stableRevision"] == r1
    assert r1 not in scales(p, seen)


def test_available_new_revision_is_promoted_then_old_scaled_to_zero() -> None:
    o, obs = healthy()
    r1, r2 = rev_of(SPEC), rev_of(V2)
    o2, _ = settle(owner(V2, o.status, generation=2), obs)
    seen = Observed(revisions={r1: ready(r1), r2: ready(r2)}, services=obs.services)
    p = run(o2, seen)
    assert applied(p)["Service/chat"]["spec"]["selector"]["modelops.dev/revision"] == r2
    assert scales(p, seen) == {}, "traffic first: the old revision is scaled down once the Service has moved"
    assert p.replicas[r1] == 2
    assert p.status["stableRevision"] == r2 and "canaryRevision" not in p.status
    outcomes = {r["name"]: r["outcome"] for r in p.status["revisions"]}
    assert outcomes == {r1: "Superseded", r2: "Serving"}
    service = applied(p)["Service/chat"]["metadata"]["annotations"]
    moved = Observed(revisions=seen.revisions, services={"chat": ServiceState(
        "chat", r2, service["modelops.dev/applied-hash"])}, split_applied=service["modelops.dev/split-applied"])
    o3 = reconcile.Owner("chat", "ml", "uid-1", 2, V2, p.status)
    assert scales(run(o3, moved), moved) == {r1: 0}


def test_replicas_change_scales_in_place() -> None:
    o, obs = healthy()
    r1 = rev_of(SPEC)
    p = run(owner({**SPEC, "replicas": 5}, o.status, generation=2), obs)
    assert applied(p)[f"Deployment/{r1}"]["spec"]["replicas"] == 5
    assert len([k for k in applied(p) if k.startswith("Deployment/")]) == 1


def test_insufficient_gpu_waits_and_says_so_while_stable_serves() -> None:
    o, obs = healthy()
    big = {**SPEC, "resources": {"gpu": {"count": 16, "type": "nvidia-l4"}}}
    r1, r2 = rev_of(SPEC), rev_of(big)
    o2, _ = settle(owner(big, o.status, generation=2), obs)
    stuck = RevisionState(name=r2, replicas=2, updated=2,
                          unschedulable="0/5 nodes are available: 2 Insufficient nvidia.com/gpu.")
    seen = Observed(revisions={r1: ready(r1), r2: stuck}, services=obs.services)
    p = run(o2, seen)
    assert cond(p.status, "Progressing")["reason"] == "InsufficientGPU"
    assert "Insufficient nvidia.com/gpu" in p.status["message"]
    assert p.status["stableRevision"] == r1 and cond(p.status, "Available")["status"] == "True"
    assert r1 not in scales(p, seen)
    assert applied(p)["Service/chat"]["spec"]["selector"]["modelops.dev/revision"] == r1
    assert [e.reason for e in p.events] == ["InsufficientGPU"]


def test_progress_deadline_fails_the_revision_scales_it_down_and_pins_it() -> None:
    o, obs = healthy()
    r1, r2 = rev_of(SPEC), rev_of(V2)
    o2, _ = settle(owner(V2, o.status, generation=2), obs)
    never = RevisionState(name=r2, replicas=2, updated=2)
    later = NOW + dt.timedelta(minutes=16)
    seen = Observed(revisions={r1: ready(r1), r2: never}, services=obs.services)
    p = run(o2, seen, now=later)
    assert applied(p)[f"Deployment/{r2}"]["spec"]["replicas"] == 0 or scales(p, seen) == {r2: 0}
    assert p.status["phase"] == "Failed"
    assert cond(p.status, "Degraded")["reason"] == "ProgressDeadlineExceeded"
    assert cond(p.status, "Available")["status"] == "True"  # stable untouched, serving
    # Re-applying the same spec (same generation, e.g. Argo CD auto-sync) does not retry.
    o3 = reconcile.Owner("chat", "ml", "uid-1", 2, V2, p.status)
    down = RevisionState(name=r2, replicas=0)
    again = run(o3, Observed(revisions={r1: ready(r1), r2: down}, services=obs.services), now=later)
    assert again.replicas[r2] == 0 and again.status is None
    # A new generation retries.
    retry = run(reconcile.Owner("chat", "ml", "uid-1", 3, V2, p.status),
                Observed(revisions={r1: ready(r1), r2: down}, services=obs.services), now=later)
    assert applied(retry)[f"Deployment/{r2}"]["spec"]["replicas"] == 2


@pytest.mark.parametrize("bad, field", [
    ({"resources": {"gpu": {"count": 1, "type": "tpu-v5e"}}}, "spec.resources.gpu.type"),
    ({"replicas": -1}, "spec.replicas"),
    ({"model": {"name": "x"}}, "spec.model.source"),
])
def test_invalid_spec_is_reported_with_the_field_and_nothing_is_touched(bad, field) -> None:
    o, obs = healthy()
    p = run(owner({**SPEC, **bad}, o.status, generation=2), obs)
    assert p.apply == [] and p.replicas == {} and p.delete == []
    assert cond(p.status, "Degraded")["reason"] == "InvalidSpec"
    assert field in cond(p.status, "Degraded")["message"]
    assert cond(p.status, "Available")["status"] == "True"
    assert p.status["phase"] == "Failed"


def test_old_revisions_beyond_history_are_deleted_oldest_first() -> None:
    o, obs = healthy()
    r1 = rev_of(SPEC)
    olds = {f"chat-old{i}": RevisionState(name=f"chat-old{i}", replicas=0, created=f"2026-11-0{i}T00:00:00Z")
            for i in range(1, 6)}
    p = run(o, Observed(revisions={r1: ready(r1), **olds}, services=obs.services))
    assert p.delete == [("Deployment", "chat-old1"), ("Deployment", "chat-old2")]  # keeps 3


def test_first_visit_says_what_is_happening() -> None:
    p, _ = first_visit(owner(SPEC))
    assert p.status["message"] == f"rolling out {rev_of(SPEC)}: 0/2 replicas ready"
    assert cond(p.status, "Progressing")["reason"] == "RevisionProgressing"
