"""What a review found broken in the rollout core, one scenario each, on the strict cluster model.
Each is a defect the review found in the planner before the redesign (decide -> render -> status)."""

from __future__ import annotations

import pytest

from modelops.domain.spec import ModelDeploymentSpec
from modelops.planning.analysis import TEMPLATES, queries_for

from .sim import Sim, healthy, measure
from .test_rollout import ANALYSIS, CFG, GATEWAY, SERVICE, STEPS, UP, _answers, no_outage, rev, spec, started

GOLDEN = {"prePromotion": {"goldenPrompts": [{"prompt": "Reply with the word ok.", "expect": {"regex": "(?i)ok"}}]}}


def to_full_size(sim: Sim, revision: str, n: int = 2) -> None:
    sim.settle()
    assert sim.replicas(revision) == n and sim.ready(revision) == n, sim.status.get("message")


# 1. desired replicas converge whatever wrote them last
def test_reverting_to_the_stable_after_a_service_router_canary_leaves_it_at_full_size() -> None:
    sim, v1, v2 = started(spec(canary={"steps": [{"setWeight": 50}, {"pause": {}}]}, router=SERVICE))
    sim.step()
    sim.step(UP)
    assert sim.status["canaryWeight"] == 50
    sim.change("model.source", "gs://models/gemma/")  # Argo CD: the commit is reverted
    sim.step()
    no_outage(sim)
    to_full_size(sim, v1)
    assert sim.replicas(v2) == 0 and sim.phase == "Healthy" and sim.traffic() == {v1: 1.0}
    rec = {r["name"]: r for r in sim.status["revisions"]}
    assert rec[v2]["outcome"] == "Superseded" and rec[v2]["reason"] == "Reverted"  # not "Progressing" forever


def test_reverting_while_the_canary_is_being_promoted_never_leaves_zero_serving_pods() -> None:
    sim, v1, v2 = started(spec(canary={"steps": [{"setWeight": 50}]}, router=SERVICE))
    sim.step()
    sim.step(UP)  # 50 %, every step done: promotion brings the canary to full size
    sim.step()
    assert sim.replicas(v2) == 2
    sim.change("model.source", "gs://models/gemma/")
    for _ in range(4):
        sim.step(1)
        no_outage(sim)
    to_full_size(sim, v1)
    assert sim.replicas(v2) == 0


def test_a_revision_retried_through_another_spec_and_back_comes_up_at_full_size() -> None:
    sim, v1, v2 = started(spec(canary={"steps": [{"setWeight": 50}]}, analysis=ANALYSIS))
    sim.step()
    sim.step(UP)
    sim.step(10, measurements=[measure("error-rate", value=0.5, samples=100)])
    assert sim.phase == "RolledBack"
    sim.settle()
    sim.change("model.source", "gs://models/gemma-v3/")
    sim.step()
    sim.change("model.source", "gs://models/gemma-v2/")  # try v2 again
    sim.step()
    sim.step(UP, measurements=healthy())
    sim.step(10, measurements=healthy())
    to_full_size(sim, v2)
    assert sim.status["stableRevision"] == v2


def test_kubectl_scale_of_the_stable_is_corrected() -> None:
    sim = Sim(spec(), CFG)
    sim.settle()
    v1 = sim.status["stableRevision"]
    sim.kubectl_scale(v1, 1)
    sim.step()
    assert sim.replicas(v1) == 2
    assert sim.status["ready"] == "1/2", "READY is measured against the spec, not the current replicas"


# 4. a crash after the abort's status write
def test_a_crash_after_the_abort_status_write_still_restores_the_stable() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}, router=SERVICE, analysis=ANALYSIS))
    sim.step()
    sim.step(UP)
    sim.kubectl_scale(v1, 1)  # the stable shrank meanwhile (by hand, or a node went away)
    sim.step(10, measurements=[measure("error-rate", value=0.5, samples=100)], crash="after-status")
    assert sim.phase == "RolledBack" and sim.replicas(v1) == 1  # the scale-up was lost
    sim.step()  # a new operator process
    assert sim.replicas(v1) == 2
    sim.settle()
    assert sim.status["ready"] == "2/2" and sim.replicas(v2) == 0
    no_outage(sim)


def test_while_the_stable_has_no_ready_pod_an_aborted_canary_that_served_keeps_serving() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}, router=SERVICE, analysis=ANALYSIS))
    sim.step()
    sim.step(UP)
    sim.never_ready.add(v1)  # the stable's pods crash
    sim.step(10, measurements=[measure("error-rate", value=0.5, samples=100)])
    assert sim.phase == "RolledBack"
    for _ in range(3):
        sim.step(1)
        assert sim.traffic() == {v2: 1.0}, "the last resort keeps serving while the stable is down"
        assert sim.replicas(v2) > 0
    sim.release(v1)
    sim.step(UP)
    sim.settle()
    assert sim.traffic() == {v1: 1.0} and sim.replicas(v2) == 0


# 5. a superseded canary: covered in test_rollout (GPUs freed); 6. stale rollout state
def test_a_promote_from_an_earlier_attempt_is_not_resumed_when_the_revision_comes_back() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}, analysis=ANALYSIS))
    sim.step()
    sim.step(UP)
    sim.annotate("promote", "full")
    sim.step()  # promoting: v2 scales up to full size
    assert sim.status["rollout"]["promoting"]
    sim.change("model.source", "gs://models/gemma/")  # reverted
    sim.settle()
    sim.change("model.source", "gs://models/gemma-v2/")  # and back
    sim.step()
    sim.step(UP)
    sim.step(UP)
    assert sim.status["stableRevision"] == v1, "promoted at full size with no steps and no analysis"
    assert sim.status["rollout"]["promoting"] is False and sim.status["currentStep"] == 1


def test_a_golden_prompt_pass_from_an_earlier_attempt_does_not_open_the_gate() -> None:
    sim, v1, v2 = started(spec(canary={"steps": [{"setWeight": 20}, {"pause": {}}]}, analysis=GOLDEN))
    sim.step()
    sim.step(UP, golden=_answers()[:1])
    assert sim.status["canaryWeight"] == 20
    sim.change("rollout.canary.steps", [{"setWeight": 30}, {"pause": {}}])  # new settings: a new attempt
    sim.step()
    sim.step(UP)
    assert sim.route_weights()[v2] == 0 and sim.status["rollout"].get("goldenPrompts") is None


# 7. analysis steps need data from the step
def test_an_analysis_step_does_not_pass_on_data_measured_before_it_began() -> None:
    steps = [{"setWeight": 10}, {"pause": {"duration": "10s"}}, {"setWeight": 50}, {"analysis": {}}, {"pause": {}}]
    sim, v1, v2 = started(spec(canary={"steps": steps}, analysis=ANALYSIS))
    sim.step()
    sim.step(UP)
    sim.step(11, measurements=healthy())  # the pause ends; 50 % and the analysis step begin in this pass
    assert sim.status["canaryWeight"] == 50 and sim.status["currentStep"] == 3
    sim.step(1)
    assert sim.status["currentStep"] == 3, "passed on a measurement taken at 10 %"
    sim.step(10, measurements=healthy())
    assert sim.status["currentStep"] == 4 and sim.phase == "Paused"


def test_an_analysis_step_runs_its_own_metrics_for_its_duration() -> None:
    analysis = {**ANALYSIS, "metrics": [*ANALYSIS["metrics"],
                                        {"name": "ttft", "template": "ttftP95", "max": 1.0}]}
    steps = [{"setWeight": 20}, {"analysis": {"metrics": ["error-rate"], "duration": "30s"}}, {"pause": {}}]
    sim, v1, v2 = started(spec(canary={"steps": steps}, analysis=analysis))
    sim.step()
    sim.step(UP)
    only_errors = [measure("error-rate", value=0.0, samples=100)]
    sim.step(10, measurements=only_errors)
    assert sim.status["currentStep"] == 1  # 10 s of 30 s
    sim.step(21, measurements=only_errors)
    assert sim.status["currentStep"] == 2, "the step needs its own metric only"


# 12. queries of two namespaces never mix
def test_built_in_queries_filter_on_the_namespace_and_the_revision() -> None:
    metric = ModelDeploymentSpec.model_validate(spec(analysis=ANALYSIS)).rollout.analysis.metrics[0]
    a = queries_for(metric, "chat-1", None, "team-a", "chat", "1m")
    b = queries_for(metric, "chat-1", None, "team-b", "chat", "1m")
    assert a.value != b.value and 'namespace="team-a",revision="chat-1"' in a.value
    for name, template in TEMPLATES.items():
        assert template.count("{{namespace}}") == template.count("{{revision}}"), name
    gateway = Sim(spec(), CFG)
    gateway.settle()
    env = gateway.manifest(gateway.status["stableRevision"])["spec"]["template"]["spec"]["containers"][1]["env"]
    assert {"name": "MODELOPS_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in env


# 13. leftovers
def test_a_later_failure_says_why_it_failed_not_why_an_earlier_rollout_was_aborted() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}, progressDeadline="1m"))
    sim.step()
    sim.annotate("abort")
    sim.step()
    assert "aborted by annotation" in sim.status["message"]
    sim.never_ready.add(v2)
    sim.change("rollout.progressDeadline", "2m")  # try again
    sim.step()
    sim.step(121)
    assert sim.phase == "Failed"
    assert "progressDeadline 2m" in sim.status["message"] and "aborted" not in sim.status["message"]


def test_commands_are_cleared_and_said_to_be_ignored_while_the_spec_is_invalid() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}))
    sim.spec["resources"]["gpu"]["type"] = "tpu-v5e"  # not in the GPU-type map
    sim.generation += 1
    sim.annotate("abort")
    plan = sim.step()
    assert sim.condition("Degraded")["reason"] == "InvalidSpec"
    assert "modelops.dev/abort" not in sim.annotations
    assert "CommandIgnored" in [e.reason for e in plan.events]
    sim.spec["resources"]["gpu"]["type"] = "nvidia-l4"
    sim.generation += 1
    sim.step()
    sim.step(UP)
    assert sim.phase == "Progressing", "a stale abort acted on the next valid rollout"


def test_consecutive_error_limit_zero_is_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="consecutiveErrorLimit|consecutive_error_limit"):
        ModelDeploymentSpec.model_validate(spec(analysis={**ANALYSIS, "consecutiveErrorLimit": 0}))


@pytest.mark.parametrize("router", [GATEWAY, SERVICE], ids=["gateway-api", "service"])
def test_an_ab_challenger_whose_golden_prompts_cannot_be_asked_gets_no_user(router) -> None:
    from modelops.domain.golden import GoldenAnswer

    sim, v1, v2 = started(spec("ABTest", router=router, abTest={"weight": 50}, analysis=GOLDEN))
    sim.step()
    unreachable = [GoldenAnswer("Reply with the word ok.", None, error="connection refused")]
    for _ in range(2):
        sim.step(UP, golden=unreachable)
        assert sim.reaches() == {v1}
    sim.step(UP, golden=unreachable)  # the third try: the gate fails
    assert sim.phase == "RolledBack" and sim.reaches() == {v1}
    assert rev(sim.spec) == v2
