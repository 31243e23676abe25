"""Mirror steps (shadow traffic) on the pure planner and the strict model of the cluster (sim.py).

During a mirror step users get 0 %: every request reaches the stable revision, whose gateway copies
a share of them to the new revision (the split ConfigMap carries ``mirror``); the new revision's
metrics are analysed meanwhile, and a failing analysis rolls back before any user reached it.
"""

from __future__ import annotations

import datetime as dt

import promql_parser
import pytest
from pydantic import ValidationError

from modelops import crdgen
from modelops.config import OperatorConfig
from modelops.domain.analysis import Measurement
from modelops.domain.spec import CanarySpec, ModelDeploymentSpec, ModelDeploymentStatus
from modelops.planning.analysis import MIRROR_PROBE, measurement_due

from .sim import healthy, measure
from .test_rollout import ANALYSIS, GOLDEN, UP, _answers, no_outage, spec, started

STEPS = [{"mirror": {"percent": 20, "duration": "2m"}}, {"setWeight": 50}, {"pause": {}}]
SYNC = OperatorConfig().split_sync_seconds


def mirroring(sim, revision: str) -> int | None:
    split = sim.split() or {}
    mirror = split.get("mirror") or {}
    return mirror.get("percent") if mirror.get("revision") == revision else None


def probe(value: float) -> Measurement:
    return Measurement(MIRROR_PROBE, "q", value=value)


def test_a_mirror_step_gives_users_nothing_and_the_split_tells_the_stable_gateway_to_copy() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}, analysis=ANALYSIS))
    sim.step()  # the shadow comes up beside the stable (its pods for 20 % of the load)
    assert sim.replicas(v2) == 1 and sim.replicas(v1) == 2
    assert sim.split() is None, "nothing is mirrored to a revision without ready pods"
    sim.step(UP)
    assert mirroring(sim, v2) == 20
    assert sim.split() == {"stable": v1, "mirror": {"revision": v2, "percent": 20, "url": f"http://{v2}.ml.svc:80"}}
    assert sim.service_revision(v2) == v2  # the Service the stable gateway copies requests to
    assert sim.route_weights() == {v1: 100, v2: 0} and sim.status["canaryWeight"] == 0
    assert sim.traffic() == {v1: 1.0} and sim.reaches() == {v1}
    assert "mirroring 20% of requests" in sim.status["message"]
    assert sim.status["rollout"]["mirrorAt"] and not sim.status["rollout"].get("mirrorSince")
    # Nothing says the pods have the split yet: the clock starts after the kubelet's sync at the latest.
    sim.step(SYNC / 2, measurements=healthy())
    assert not sim.status["rollout"].get("mirrorSince") and "Mirroring" not in sim.events()
    sim.step(SYNC / 2, measurements=healthy())
    assert sim.status["rollout"]["mirrorSince"] and "Mirroring" in sim.events()
    for _ in range(3):
        sim.step(30, measurements=healthy())
        assert sim.status["currentStep"] == 0 and sim.reaches() == {v1}
    sim.step(31, measurements=healthy())  # 2 minutes of mirroring, analysis Successful: users come next
    assert sim.split() is None, "the mirror ends with its step"
    assert sim.route_weights() == {v1: 50, v2: 50} and sim.status["currentStep"] == 2
    assert sim.phase == "Paused"
    no_outage(sim)
    sim.annotate("promote")
    sim.step(10, measurements=healthy())  # the final gate: measured after the 50 % was set
    sim.settle()
    assert sim.status["stableRevision"] == v2 and sim.split() is None


def test_a_failing_analysis_during_the_mirror_step_rolls_back_before_any_user_reached_the_new_revision() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}, analysis=ANALYSIS))
    sim.step()
    sim.step(UP)
    assert mirroring(sim, v2) == 20 and sim.reaches() == {v1}
    sim.step(10, measurements=[measure("error-rate", value=0.4, samples=100, stable_value=0.0)])
    assert sim.phase == "RolledBack"
    assert "error-rate = 0.4 is above max 0.05" in sim.condition("Degraded")["message"]
    assert sim.split() is None and sim.route_weights() == {v1: 100}
    sim.settle()
    assert sim.replicas(v2) == 0 and sim.replicas(v1) == 2
    record = next(r for r in sim.status["revisions"] if r["name"] == v2)
    assert record["outcome"] == "RolledBack" and record["served"] is False  # never a last resort for users
    assert v2 not in sim.reaches()


def test_the_step_clock_starts_when_every_stable_pod_reports_mirroring() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}, analysis=ANALYSIS))
    sim.step()
    sim.step(UP)
    status = ModelDeploymentStatus.model_validate(sim.status)
    request = measurement_due("ml", "chat", ModelDeploymentSpec.model_validate(sim.spec), status, sim.now)
    assert request is not None, "the shadow is analysed although users get 0 %"
    probes = [q for q in request.queries if q.metric == MIRROR_PROBE]
    assert len(probes) == 1
    promql_parser.parse(probes[0].value)
    assert f'revision="{v1}",shadow="{v2}"}} == 20' in probes[0].value
    sim.step(10, measurements=[*healthy(), probe(0.5)])  # one of two stable pods has the split
    assert not sim.status["rollout"].get("mirrorSince")
    sim.step(10, measurements=[*healthy(), probe(1.0)])
    since = sim.status["rollout"]["mirrorSince"]
    assert since and "Mirroring" in sim.events()
    assert "error-rate" in sim.status["analysis"] and MIRROR_PROBE not in sim.status["analysis"]
    later = measurement_due("ml", "chat", ModelDeploymentSpec.model_validate(sim.spec),
                            ModelDeploymentStatus.model_validate(sim.status), sim.now + dt.timedelta(seconds=30))
    assert later is not None and MIRROR_PROBE not in [q.metric for q in later.queries]  # asked until confirmed
    sim.step(119, measurements=healthy())
    assert sim.status["currentStep"] == 0, "the step counts from mirrorSince, not from when it began"
    sim.step(2, measurements=healthy())
    assert sim.status["currentStep"] == 2


def test_a_measurement_from_before_the_mirror_ran_does_not_pass_the_step() -> None:
    sim, v1, v2 = started(spec(canary={"steps": [{"mirror": {"percent": 50, "duration": "30s"}}, {"setWeight": 20}]},
                               analysis=ANALYSIS))
    sim.step()
    sim.step(UP, measurements=healthy())
    sim.step(SYNC)  # the clock starts now, with no measurement since
    sim.step(31)
    assert sim.status["currentStep"] == 0, "passed on data measured before the mirror ran"
    sim.step(1, measurements=healthy())
    assert sim.status["currentStep"] == 2 and sim.status["canaryWeight"] == 20


def test_thin_shadow_data_pauses_as_inconclusive_and_never_moves_users() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}, analysis=ANALYSIS))
    sim.step()
    sim.step(UP)
    sim.step(10, measurements=[*healthy(), probe(1.0)])
    for _ in range(8):
        sim.step(30, measurements=[measure("error-rate", value=0.0, samples=3)])
    assert sim.phase == "Paused" and sim.status["rollout"]["pauseReason"] == "Inconclusive"
    assert sim.reaches() == {v1} and mirroring(sim, v2) == 20  # the shadow keeps its copies while paused


def test_a_manual_pause_stops_the_mirror_clock() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}))  # no analysis: the clock starts after the sync time
    sim.step()
    sim.step(UP)
    sim.step(SYNC)
    assert sim.status["rollout"]["mirrorSince"]
    sim.step(60)
    sim.annotate("pause")
    sim.step()
    sim.step(600)
    sim.annotate("resume")
    sim.step(1)
    assert sim.status["currentStep"] == 0 and mirroring(sim, v2) == 20, "the paused time counted as mirroring"
    sim.step(60)
    assert sim.status["currentStep"] == 2 and sim.status["canaryWeight"] == 50


def test_nothing_is_mirrored_before_the_golden_prompts_pass() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}, analysis={**ANALYSIS, **GOLDEN}))
    sim.step()
    for _ in range(3):
        sim.step(UP)
        assert sim.split() is None
    sim.step(golden=_answers())
    assert mirroring(sim, v2) == 20 and sim.reaches() == {v1}


def test_with_the_service_router_the_main_service_keeps_selecting_only_the_stable() -> None:
    sim, v1, v2 = started(spec(router={"router": "service"}, canary={"steps": STEPS}))
    sim.step()
    sim.step(UP)
    assert mirroring(sim, v2) == 20
    assert sim.service_revision("chat") == v1 and sim.service_revision(v2) == v2
    assert sim.traffic() == {v1: 1.0} and "follows ready pods" not in sim.status["message"]


def test_a_full_promote_during_the_mirror_step_ends_the_mirror() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}))
    sim.step()
    sim.step(UP)
    sim.annotate("promote", "full")
    sim.step()
    assert sim.split() is None
    sim.settle()
    assert sim.status["stableRevision"] == v2


# --------------------------------------------------------------------------- validation
def steps(*s: dict) -> CanarySpec:
    return CanarySpec.model_validate({"steps": list(s)})


@pytest.mark.parametrize("bad", [
    {"mirror": {"percent": 0, "duration": "1m"}},
    {"mirror": {"percent": 101, "duration": "1m"}},
    {"mirror": {"percent": 20}},
    {"mirror": {"percent": 20, "duration": "ten minutes"}},
    {"mirror": {"percent": 20, "duration": "1m"}, "pause": {}},
    {"mirror": {"percent": 20, "duration": "1m"}, "setWeight": 0},
])
def test_a_mirror_step_is_refused_when_malformed(bad: dict) -> None:
    with pytest.raises(ValidationError):
        steps(bad)


def test_mirror_steps_come_before_any_setweight_above_zero() -> None:
    mirror = {"mirror": {"percent": 20, "duration": "1m"}}
    assert steps({"setWeight": 0}, mirror, {"setWeight": 10})  # users get nothing yet: fine
    assert steps(mirror, {"analysis": {}}, mirror, {"setWeight": 10}, {"pause": {}})
    with pytest.raises(ValidationError, match="before any setWeight above 0"):
        steps({"setWeight": 10}, mirror)


def test_the_crd_enforces_the_same_rules() -> None:
    schema = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    canary = schema["properties"]["spec"]["properties"]["rollout"]["properties"]["canary"]["properties"]["steps"]
    step = canary["items"]
    mirror = step["properties"]["mirror"]
    assert mirror["required"] == ["percent", "duration"]
    assert (mirror["properties"]["percent"]["minimum"], mirror["properties"]["percent"]["maximum"]) == (1, 100)
    assert "pattern" in mirror["properties"]["duration"]
    assert any("has(self.mirror)" in r["rule"] and "== 1" in r["rule"] for r in step["x-kubernetes-validations"])
    assert any("a mirror step must come before any setWeight above 0" in r["message"]
               for r in canary["x-kubernetes-validations"])
