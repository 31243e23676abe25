"""Rollout scenarios on the pure planner, step by step, on the strict model of the cluster (sim.py):
pods take ``UP`` seconds to become ready, applies are skipped on equal hash, replicas move through
the scale subresource, and ``sim.traffic()`` says where users' requests really go."""

from __future__ import annotations

import pytest

from modelops.config import OperatorConfig
from modelops.domain.spec import ModelDeploymentSpec
from modelops.planning import resources

from .sim import Sim, healthy, measure

CFG = OperatorConfig(resync_seconds=30)
UP = 3  # seconds: longer than the model's pod startup (2 s)
GATEWAY = {"router": "gateway-api", "gateway": {"parentRefs": [{"name": "inference", "namespace": "gateways"}]}}
SERVICE = {"router": "service"}
ANALYSIS = {"interval": "10s", "window": "10s", "failureLimit": 0, "provider": {"prometheus": {"address": "http://prom:9090"}},
            "metrics": [{"name": "error-rate", "template": "errorRate", "max": 0.05, "minSamples": 20}]}
STEPS = [{"setWeight": 10}, {"pause": {"duration": "1m"}}, {"setWeight": 50}, {"pause": {}}]


def spec(strategy: str = "Canary", router: dict | None = None, analysis: dict | None = None, **rollout) -> dict:
    out = {"model": {"name": "gemma", "source": "gs://models/gemma/"}, "replicas": 2,
           "resources": {"gpu": {"count": 1, "type": "nvidia-l4"}},
           "traffic": router or GATEWAY,
           "rollout": {"strategy": strategy, **rollout}}
    if analysis is not None:
        out["rollout"]["analysis"] = analysis
    return out


def rev(s: dict) -> str:
    return resources.revision_for("chat", ModelDeploymentSpec.model_validate(s), CFG)


def started(s: dict, **sim_options) -> tuple[Sim, str, str]:
    """A Healthy v1, then the model changes to v2."""
    sim = Sim(s, CFG, **sim_options)
    sim.answer = lambda request: _answers()  # the first revision passes its golden prompts, if any
    sim.settle()
    sim.answer = None
    assert sim.phase == "Healthy"
    v1 = sim.status["stableRevision"]
    sim.change("model.source", "gs://models/gemma-v2/")
    v2 = rev(sim.spec)
    return sim, v1, v2


def no_outage(sim: Sim) -> None:
    share = sim.traffic()
    assert "" not in share, f"requests go to a Service with no ready pod: {share}"


def test_canary_promotes_through_all_steps_with_healthy_metrics() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}, analysis=ANALYSIS))
    sim.step()  # the canary comes up with the pods for 10 %
    assert sim.replicas(v2) == 1 and sim.replicas(v1) == 2
    assert sim.route_weights() == {v1: 100, v2: 0}
    sim.step(UP)  # its pod is ready: 10 % of traffic moves, then the timed pause starts
    assert sim.route_weights() == {v1: 90, v2: 10}
    assert sim.status["currentStep"] == 1 and sim.status["canaryWeight"] == 10
    assert sim.phase == "Progressing"
    sim.step(30, measurements=healthy())
    assert sim.status["currentStep"] == 1  # still pausing
    sim.step(31, measurements=healthy())  # pause over, analysis Successful: 50 %, then the open pause
    assert sim.route_weights() == {v1: 50, v2: 50}
    assert sim.status["currentStep"] == 3 and sim.phase == "Paused"
    assert sim.status["rollout"]["pauseReason"] == "PauseStep"
    assert sim.status["analysis"]["error-rate"]["verdict"] == "Successful"
    sim.step(60, measurements=healthy())
    assert sim.phase == "Paused"  # waits for a person
    assert sim.replicas(v1) == 2, "the stable keeps its full size while it serves"
    sim.annotate("promote")
    sim.step(measurements=healthy())
    sim.settle()
    assert sim.status["stableRevision"] == v2 and sim.phase == "Healthy"
    assert sim.route_weights() == {v2: 100}
    assert sim.service_revision() == v2
    assert sim.replicas(v2) == 2 and sim.replicas(v1) == 0
    assert "modelops.dev/promote" not in sim.annotations
    assert sim.events().count("Promoted") == 2  # v1 at first, v2 now: once each
    no_outage(sim)


def test_canary_aborts_on_error_rate_and_stays_rolled_back_for_the_same_spec() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}, analysis=ANALYSIS))
    sim.step()
    sim.step(UP)
    assert sim.route_weights() == {v1: 90, v2: 10}
    sim.step(10, measurements=[measure("error-rate", value=0.2, samples=100)])
    assert sim.phase == "RolledBack"
    assert sim.route_weights() == {v1: 100}  # the weight goes to 0 at once
    assert sim.replicas(v1) == 2
    sim.step()  # traffic has moved: now the failed revision goes
    assert sim.replicas(v2) == 0
    assert sim.status["stableRevision"] == v1 and "canaryRevision" not in sim.status
    degraded = sim.condition("Degraded")
    assert degraded["reason"] == "RolledBack" and "error-rate = 0.2 is above max 0.05" in degraded["message"]
    assert "RolledBack" in sim.events()
    # Argo CD re-applies the same spec: no retry.
    for _ in range(3):
        sim.step(30)
    assert sim.phase == "RolledBack" and sim.replicas(v2) == 0
    # A new change rolls out again.
    sim.change("engine.args", ["--max-model-len", "4096"])
    sim.step()
    assert sim.phase == "Progressing" and sim.status["canaryRevision"] == rev(sim.spec)
    no_outage(sim)


def test_canary_aborts_on_ttft_relative_to_stable() -> None:
    analysis = {**ANALYSIS, "metrics": [{"name": "ttft-p95", "template": "ttftP95", "maxRatioToStable": 1.3}]}
    sim, v1, v2 = started(spec(canary={"steps": STEPS}, analysis=analysis))
    sim.step()
    sim.step(UP)
    sim.step(10, measurements=[measure("ttft-p95", value=0.26, stable_value=0.2)])  # 1.3x: at the limit, passes
    assert sim.phase == "Progressing"
    sim.step(10, measurements=[measure("ttft-p95", value=0.5, stable_value=0.2)])
    assert sim.phase == "RolledBack"
    assert "2.50x the stable revision's 0.2" in sim.condition("Degraded")["message"]


def test_too_few_samples_is_inconclusive_and_pauses_never_promotes() -> None:
    sim, v1, v2 = started(spec(canary={"steps": [{"setWeight": 20}, {"pause": {"duration": "30s"}}]},
                               analysis=ANALYSIS))
    sim.step()
    sim.step(UP)
    sim.step(31, measurements=[measure("error-rate", value=0.0, samples=3)])
    assert sim.phase == "Paused"
    assert sim.status["rollout"]["pauseReason"] == "Inconclusive"
    assert "fewer than minSamples 20" in sim.status["message"]
    for _ in range(5):
        sim.step(60, measurements=[measure("error-rate", value=0.0, samples=3)])
    assert sim.status["stableRevision"] == v1 and sim.route_weights() == {v1: 80, v2: 20}
    sim.annotate("resume")
    sim.step(10, measurements=healthy())
    sim.step(10, measurements=healthy())
    sim.settle()
    assert sim.status["stableRevision"] == v2


def test_provider_errors_hold_the_steps_then_abort_at_the_consecutive_error_limit() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}, analysis=ANALYSIS))
    sim.step()
    sim.step(UP)
    down = [measure("error-rate", error="ConnectError: connection refused")]
    for n in range(4):
        sim.step(31, measurements=down)
        assert sim.status["currentStep"] == 1, "a step advanced on missing data"
        assert sim.status["analysis"]["error-rate"]["consecutiveErrors"] == n + 1
    sim.step(31, measurements=down)
    assert sim.phase == "RolledBack"
    assert "5 errors in a row" in sim.condition("Degraded")["message"]


def test_abort_and_pause_resume_by_annotation() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}))
    sim.step()
    sim.step(UP)
    sim.annotate("pause")
    sim.step(120)
    assert sim.phase == "Paused" and sim.status["rollout"]["pauseReason"] == "Manual"
    assert sim.status["currentStep"] == 1  # the 1m pause did not run out while paused by hand
    assert "modelops.dev/pause" not in sim.annotations
    sim.annotate("resume")
    sim.step(61)
    sim.step(UP)
    assert sim.status["currentStep"] == 3
    sim.annotate("abort")
    sim.step()
    assert sim.phase == "RolledBack" and sim.route_weights() == {v1: 100}
    sim.step()
    assert sim.replicas(v2) == 0
    assert "aborted by annotation" in sim.status["message"]


def test_a_manual_pause_stops_the_clock_of_a_timed_pause() -> None:
    """Found: after resume the step advanced at once, the time paused by hand counted as pause."""
    sim, v1, v2 = started(spec(canary={"steps": STEPS}))
    sim.step()
    sim.step(UP)  # 10 %, the 1m pause starts
    sim.step(20)
    sim.annotate("pause")
    sim.step()  # paused by hand 20 s into the minute
    sim.step(300)
    sim.annotate("resume")
    sim.step(1)
    assert sim.status["currentStep"] == 1 and sim.status["canaryWeight"] == 10, "the pause did not keep its 40 s"
    sim.step(30)
    assert sim.status["currentStep"] == 1
    sim.step(11)
    sim.step(UP)
    assert sim.status["canaryWeight"] == 50


def test_promote_full_skips_the_remaining_steps() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}))
    sim.step()
    sim.annotate("promote", "full")
    sim.settle()
    assert sim.status["stableRevision"] == v2 and sim.route_weights() == {v2: 100}
    no_outage(sim)


def test_a_one_step_promote_at_a_set_weight_step_waits_for_the_pods_of_that_share() -> None:
    """Found: a promote at a setWeight step set the weight before the pods existed."""
    s = spec(canary={"steps": [{"setWeight": 75}, {"pause": {}}]})
    s["replicas"] = 3
    sim, v1, v2 = started(s)
    sim.never_ready.add(v2)
    sim.step()
    sim.annotate("promote")
    sim.step(UP)
    assert sim.status["canaryWeight"] == 0 and sim.route_weights()[v2] == 0
    sim.release(v2)
    sim.step(UP)
    assert sim.replicas(v2) == 3 and sim.status["canaryWeight"] == 75
    assert sim.phase == "Paused"  # the promote completed that one step only


def test_service_router_canary_comes_up_beside_the_full_stable_and_traffic_follows_ready_pods() -> None:
    sim, v1, v2 = started(spec(canary={"steps": [{"setWeight": 50}, {"pause": {}}]}, router=SERVICE))
    sim.never_ready.add(v2)
    sim.step()
    assert sim.replicas(v2) == 2 and sim.replicas(v1) == 2  # beside the stable, never instead of it
    assert sim.service_revision() == v1
    sim.step(60)
    no_outage(sim)
    sim.release(v2)
    sim.step(UP)
    sim.step()
    assert sim.replicas(v1) == 2 and sim.replicas(v2) == 2
    assert sim.service_revision() is None  # the Service selects both revisions: the share follows ready pods
    assert sim.traffic() == {v1: 0.5, v2: 0.5}
    assert "share follows ready pods" in sim.status["message"]


def test_service_router_final_gate_keeps_the_stable_serving_until_analysis_passes() -> None:
    """Found: at the final gate the stable was scaled to 0 while analysis was still Pending."""
    sim, v1, v2 = started(spec(canary={"steps": [{"setWeight": 25}]}, router=SERVICE, analysis=ANALYSIS))
    sim.step()
    sim.step(UP)
    assert sim.status["canaryWeight"] == 25
    for _ in range(3):
        sim.step(5)  # no measurement yet: Pending
        assert sim.replicas(v1) == 2 and sim.status["stableRevision"] == v1
        assert sim.traffic()[v1] > 0.5
    sim.step(5, measurements=[measure("error-rate", value=0.3, samples=100)])
    assert sim.phase == "RolledBack" and sim.traffic() == {v1: 1.0}
    sim.step()
    assert sim.replicas(v2) == 0 and sim.replicas(v1) == 2
    no_outage(sim)


def test_insufficient_gpus_for_the_canary_waits_and_leaves_stable_alone() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}))
    sim.unschedulable[v2] = "0/5 nodes are available: 5 Insufficient nvidia.com/gpu."
    for _ in range(3):
        sim.step(600)  # far past progressDeadline: waiting for GPUs is not a failure
    assert sim.condition("Progressing")["reason"] == "InsufficientGPU"
    assert sim.replicas(v1) == 2 and sim.route_weights() == {v1: 100, v2: 0}
    assert sim.events().count("InsufficientGPU") == 1
    sim.release(v2)
    sim.step(UP)
    assert sim.route_weights() == {v1: 90, v2: 10}


def test_a_superseded_canary_is_scaled_down_and_frees_its_gpus_for_the_next_revision() -> None:
    """Found: when the spec changed again mid-rollout the old canary kept its pods (and GPUs)."""
    sim, v1, v2 = started(spec(canary={"steps": STEPS}), gpus=3)
    sim.step()
    sim.step(UP)
    assert sim.route_weights() == {v1: 90, v2: 10}
    sim.change("model.source", "gs://models/gemma-v3/")
    v3 = rev(sim.spec)
    sim.step()
    assert sim.traffic() == {v1: 1.0}
    sim.step()
    assert sim.replicas(v2) == 0
    sim.step(UP)
    assert sim.route_weights() == {v1: 90, v3: 10}
    rec = {r["name"]: r for r in sim.status["revisions"]}
    assert rec[v2]["outcome"] == "Superseded"
    no_outage(sim)


def test_a_revision_that_never_becomes_ready_fails_at_the_progress_deadline() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}, progressDeadline="5m"))
    sim.never_ready.add(v2)
    sim.step()
    sim.step(301)
    assert sim.phase == "Failed" and sim.condition("Degraded")["reason"] == "ProgressDeadlineExceeded"
    assert sim.replicas(v2) == 0 and sim.route_weights() == {v1: 100}


def test_raising_the_progress_deadline_after_a_timeout_retries_at_full_size() -> None:
    """Found: the retried revision stayed at 0 (its apply was skipped on an equal hash)."""
    sim, v1, v2 = started(spec(canary={"steps": [{"setWeight": 50}]}, progressDeadline="1m"))
    sim.never_ready.add(v2)
    sim.step()
    sim.step(61)
    assert sim.phase == "Failed" and sim.replicas(v2) == 0
    sim.release(v2)
    sim.change("rollout.progressDeadline", "10m")
    sim.settle()
    assert sim.status["stableRevision"] == v2 and sim.replicas(v2) == 2 and sim.replicas(v1) == 0


def test_blue_green_manual_promotion_keeps_the_old_revision_warm_for_the_delay() -> None:
    sim, v1, v2 = started(spec("BlueGreen", router=SERVICE, blueGreen={"autoPromote": False, "scaleDownDelay": "5m"}))
    sim.step()
    sim.step(UP)
    assert sim.replicas(v2) == 2 and sim.service_revision("chat-preview") == v2
    assert sim.service_revision() == v1
    assert sim.phase == "Paused" and sim.status["rollout"]["pauseReason"] == "AwaitingPromotion"
    sim.annotate("promote")
    sim.step()
    assert sim.service_revision() == v2 and sim.status["stableRevision"] == v2
    assert sim.replicas(v1) == 2  # warm: an instant rollback is possible
    sim.step(299)
    assert sim.replicas(v1) == 2
    sim.step(2)
    sim.step()
    assert sim.replicas(v1) == 0 and "chat-preview" not in sim.services
    assert sim.phase == "Healthy"


def test_blue_green_preview_with_thin_data_gets_a_window_before_pausing_as_inconclusive() -> None:
    sim, v1, v2 = started(spec("BlueGreen", analysis=ANALYSIS))
    thin = [measure("error-rate", value=0.0, samples=3)]
    sim.step()
    sim.step(UP)  # the preview comes up
    sim.step(1, measurements=thin)  # nobody has tested it yet
    assert sim.phase == "Progressing" and sim.status["stableRevision"] == v1
    sim.step(25, measurements=thin)  # a window and an interval later, still too thin: a person decides
    assert sim.phase == "Paused" and sim.status["rollout"]["pauseReason"] == "Inconclusive"
    assert sim.status["stableRevision"] == v1


def test_blue_green_auto_promotes_once_the_preview_is_ready() -> None:
    sim, v1, v2 = started(spec("BlueGreen", router=SERVICE))
    sim.step()
    sim.step(UP)
    assert sim.service_revision() == v2
    no_outage(sim)


@pytest.mark.parametrize("router", [GATEWAY, SERVICE], ids=["gateway-api", "service"])
def test_bake_time_degradation_rolls_back_to_the_warm_previous_revision(router) -> None:
    analysis = {**ANALYSIS, "bakeTime": "10m"}
    sim, v1, v2 = started(spec(canary={"steps": [{"setWeight": 50}]}, router=router, analysis=analysis))
    sim.step()
    sim.step(UP, measurements=healthy())  # 50 %
    sim.step(10, measurements=healthy())  # measured at 50 %: promotion starts, the canary scales up
    sim.step(UP)
    assert sim.status["stableRevision"] == v2 and sim.traffic() == {v2: 1.0}
    sim.step()
    assert sim.replicas(v1) == 2, "kept warm means pods, not a status line"
    assert sim.phase == "Progressing" and sim.condition("Progressing")["reason"] == "Baking"
    assert f"{v1} kept warm" in sim.status["message"]
    sim.step(60, measurements=[measure("error-rate", value=0.3, samples=200)])
    assert sim.phase == "RolledBack"
    assert sim.status["stableRevision"] == v1 and sim.traffic() == {v1: 1.0}
    assert sim.replicas(v2) == 2  # traffic first
    sim.step()
    assert sim.replicas(v2) == 0 and sim.replicas(v1) == 2
    assert "rolled back from" in sim.status["message"]
    sim.step(30)
    assert sim.phase == "RolledBack"  # pinned
    no_outage(sim)


def test_bake_compares_relative_metrics_with_the_stable_values_recorded_before_promotion() -> None:
    """Found: during the bake maxRatioToStable compared with a revision that no longer had traffic,
    so it was always Inconclusive and could never roll back."""
    analysis = {**ANALYSIS, "bakeTime": "10m", "metrics": [{"name": "ttft", "template": "ttftP95", "maxRatioToStable": 1.5}]}
    sim, v1, v2 = started(spec(canary={"steps": [{"setWeight": 50}]}, analysis=analysis))
    sim.step()
    sim.step(UP, measurements=[measure("ttft", value=0.2, stable_value=0.2)])
    sim.step(10, measurements=[measure("ttft", value=0.2, stable_value=0.2)])
    sim.step(UP)
    assert sim.status["stableRevision"] == v2 and sim.status["rollout"]["baseline"] == {"ttft": 0.2}
    from modelops.domain.spec import ModelDeploymentStatus
    from modelops.planning.analysis import measurement_due

    due = measurement_due("ml", "chat", ModelDeploymentSpec.model_validate(sim.spec),
                          ModelDeploymentStatus.model_validate(sim.status), sim.now.replace(minute=sim.now.minute + 1))
    assert due is not None and due.stable is None  # the previous revision is not queried
    sim.step(60, measurements=[measure("ttft", value=0.5)])  # no stable value: the baseline is used
    assert sim.phase == "RolledBack" and "2.50x the stable revision's 0.2" in sim.status["message"]


def test_bake_time_that_passes_scales_the_previous_down() -> None:
    sim, v1, v2 = started(spec(canary={"steps": [{"setWeight": 50}]}, analysis={**ANALYSIS, "bakeTime": "2m"}))
    sim.step()
    sim.step(UP, measurements=healthy())
    sim.step(10, measurements=healthy())
    sim.step(UP)
    sim.step(121, measurements=healthy())
    sim.step()
    assert sim.replicas(v1) == 0 and sim.phase == "Healthy"


def test_ab_test_holds_the_challenger_with_sticky_users_and_header_matches_until_promoted() -> None:
    sim, v1, v2 = started(spec("ABTest", abTest={"weight": 20, "match": [{"headers": {"x-model-variant": "challenger"}}]}))
    sim.step()  # the challenger comes up; no user is sent to it before it is ready
    assert sim.split() is None and sim.route_weights() == {v1: 100, v2: 0}
    for _ in range(4):
        sim.step(600)
    # Users are assigned by the stable revision's gateway: the route sends everything else there.
    assert sim.route_weights() == {v1: 100, v2: 0}
    assert sim.split() == {"stable": v1, "challenger": v2, "percent": 20, "header": "x-user-id",
                           "url": f"http://{v2}.ml.svc:80", "match": [{"x-model-variant": "challenger"}]}
    assert sim.service_revision(v2) == v2  # the Service the stable gateway forwards to
    header_rule = sim.routes["chat"]["spec"]["rules"][0]
    assert header_rule["matches"][0]["headers"] == [{"type": "Exact", "name": "x-model-variant", "value": "challenger"}]
    assert header_rule["backendRefs"][0]["name"] == v2
    assert sim.phase == "Progressing" and sim.status["canaryWeight"] == 20
    assert sim.replicas(v1) == 2  # every request reaches the stable revision first
    assert "users assigned by x-user-id or the OpenAI user field" in sim.status["message"]
    assert sim.traffic() == pytest.approx({v1: 0.8, v2: 0.2})
    split = sim.split()
    del sim.config_maps["chat-split"]  # deleted by hand: the operator cannot read it, but re-applies it
    sim.step(30)
    assert sim.split() == split
    sim.annotate("promote")
    sim.settle()
    assert sim.status["stableRevision"] == v2 and sim.route_weights() == {v2: 100}
    assert sim.split() is None  # the test is over: the split ConfigMap is emptied
    no_outage(sim)


def test_ab_test_with_the_service_router_splits_users_the_same_way_and_an_abort_ends_it() -> None:
    sim, v1, v2 = started(spec("ABTest", router=SERVICE, abTest={"weight": 30, "stickyHeader": "x-tenant"}))
    sim.settle()
    assert sim.service_revision("chat") == v1 and sim.service_revision(v2) == v2 and sim.replicas(v1) == 2
    assert sim.split()["percent"] == 30 and sim.split()["header"] == "x-tenant"
    assert "follows ready pods" not in sim.status["message"]  # the share is by users, exactly
    sim.annotate("abort")
    sim.settle()
    assert sim.phase == "RolledBack" and sim.split() is None and sim.service_revision("chat") == v1


def _event_messages(sim: Sim, reason: str) -> list[str]:
    return [e.message for p in sim.plans for e in p.events if e.reason == reason]


def test_an_ab_test_with_a_duration_is_promoted_when_it_is_over_and_every_metric_passed() -> None:
    sim, v1, v2 = started(spec("ABTest", abTest={"weight": 20, "duration": "30s"}, analysis=ANALYSIS))
    sim.step()  # the challenger comes up: the test's clock has not started
    assert "30s once the challenger is ready" in sim.status["message"]
    plan = sim.step(UP)  # ready at its share: the test starts
    assert sim.split()["percent"] == 20 and "30s of 30s left" in sim.status["message"]
    assert plan.requeue_after is not None and plan.requeue_after <= 30
    for left in (20, 10, 1):
        plan = sim.step(10 if left > 1 else 9, measurements=healthy())
        assert f"{left}s of 30s left" in sim.status["message"]
        assert plan.requeue_after is not None and plan.requeue_after <= left, "it would wake after the test ended"
        assert sim.phase == "Progressing" and sim.status["stableRevision"] == v1
    assert len(_event_messages(sim, "Promoted")) == 1  # v1's, at first
    sim.step(1, measurements=healthy())  # 30 s: over, every metric Successful on data measured during it
    assert "promoting (the A/B test ran 30s and every metric passed)" in sim.status["message"]
    sim.settle()
    assert sim.phase == "Healthy" and sim.status["stableRevision"] == v2 and sim.route_weights() == {v2: 100}
    assert sim.split() is None and sim.replicas(v1) == 0
    promoted = _event_messages(sim, "Promoted")
    assert len(promoted) == 2 and "(the A/B test ran 30s and every metric passed)" in promoted[-1]
    no_outage(sim)


def test_an_ab_test_over_with_inconclusive_data_pauses_for_a_person_and_is_not_promoted() -> None:
    sim, v1, v2 = started(spec("ABTest", abTest={"weight": 20, "duration": "30s"}, analysis=ANALYSIS))
    thin = [measure("error-rate", value=0.0, samples=3)]
    sim.step()
    sim.step(UP)
    sim.step(20, measurements=thin)
    assert sim.phase == "Progressing", "thin data before the test is over holds it, as without a duration"
    sim.step(10, measurements=thin)  # over, too few samples to decide
    assert sim.phase == "Paused" and sim.status["rollout"]["pauseReason"] == "Inconclusive"
    assert "30s over" in sim.status["message"] and "fewer than minSamples 20" in sim.status["message"]
    for _ in range(5):
        sim.step(60, measurements=thin)
    assert sim.phase == "Paused" and sim.status["stableRevision"] == v1
    assert sim.split()["percent"] == 20  # the test goes on while a person decides
    assert len(_event_messages(sim, "Promoted")) == 1 and sim.events().count("Paused") == 1


def test_an_ab_test_with_a_failing_metric_rolls_back_before_its_duration_is_over() -> None:
    sim, v1, v2 = started(spec("ABTest", abTest={"weight": 20, "duration": "1h"}, analysis=ANALYSIS))
    sim.step()
    sim.step(UP)
    sim.step(10, measurements=healthy())
    assert "59m50s of 1h left" in sim.status["message"]
    sim.step(10, measurements=[measure("error-rate", value=0.2, samples=100)])
    assert sim.phase == "RolledBack" and sim.status["stableRevision"] == v1
    assert "error-rate = 0.2 is above max 0.05" in sim.condition("Degraded")["message"]
    sim.settle()
    assert sim.split() is None and sim.replicas(v2) == 0 and sim.route_weights() == {v1: 100}
    assert len(_event_messages(sim, "Promoted")) == 1


def test_a_manual_pause_stops_the_clock_of_an_ab_test() -> None:
    sim, v1, v2 = started(spec("ABTest", abTest={"weight": 20, "duration": "30s"}, analysis=ANALYSIS))
    sim.step()
    sim.step(UP)
    sim.step(10, measurements=healthy())
    sim.annotate("pause")
    sim.step(measurements=healthy())  # paused by hand 10 s into the test
    assert sim.phase == "Paused" and sim.status["rollout"]["pauseReason"] == "Manual"
    for _ in range(5):
        sim.step(60, measurements=healthy())  # five minutes: far past the 30 s, but paused
    assert sim.phase == "Paused" and sim.status["stableRevision"] == v1
    assert "20s of 30s left" in sim.status["message"]
    sim.annotate("resume")
    sim.step(1, measurements=healthy())  # resumed in this pass: the clock runs from here
    assert sim.phase == "Progressing" and "20s of 30s left" in sim.status["message"]
    sim.step(1, measurements=healthy())
    assert "19s of 30s left" in sim.status["message"]
    sim.step(18, measurements=healthy())  # 29 s of un-paused time
    assert sim.status["stableRevision"] == v1 and not sim.status["rollout"].get("promoting")
    sim.step(1, measurements=healthy())
    sim.settle()
    assert sim.status["stableRevision"] == v2 and sim.phase == "Healthy"
    assert "the A/B test ran 30s" in _event_messages(sim, "Promoted")[-1]


def test_an_ab_test_whose_challenger_loses_its_pods_starts_its_clock_again() -> None:
    sim, v1, v2 = started(spec("ABTest", abTest={"weight": 20, "duration": "30s"}))
    sim.step()
    sim.step(UP)
    sim.step(20)
    assert "10s of 30s left" in sim.status["message"]
    sim.never_ready.add(v2)  # its pods stop being ready: its users go back to the stable revision
    sim.step(5)
    assert sim.status["canaryWeight"] == 0 and sim.traffic() == {v1: 1.0}
    assert "30s once the challenger is ready" in sim.status["message"]
    sim.release(v2)
    sim.step(60)
    assert "30s of 30s left" in sim.status["message"] and sim.status["stableRevision"] == v1
    sim.step(29)
    assert sim.status["stableRevision"] == v1
    sim.step(1)  # no metrics: 30 s without a gap is all it takes
    sim.settle()
    assert sim.status["stableRevision"] == v2
    assert "(the A/B test ran 30s and had no metrics to check)" in _event_messages(sim, "Promoted")[-1]


def test_an_ab_test_without_a_duration_is_still_held_after_a_long_time() -> None:
    sim, v1, v2 = started(spec("ABTest", abTest={"weight": 20}, analysis=ANALYSIS))
    sim.step()
    sim.step(UP)
    for _ in range(12):
        sim.step(600, measurements=healthy())  # two hours of healthy data
    assert sim.phase == "Progressing" and sim.status["stableRevision"] == v1 and sim.split()["percent"] == 20
    assert " left" not in sim.status["message"] and "promoting" not in sim.status["message"]
    assert len(_event_messages(sim, "Promoted")) == 1


def test_an_ab_test_written_before_duration_existed_keeps_its_rollout_hash() -> None:
    """An operator upgrade must not restart a running A/B test: an unset duration is not in the hash."""
    import hashlib
    import json

    from modelops.planning import reconcile

    held = ModelDeploymentSpec.model_validate(spec("ABTest", abTest={"weight": 20}))
    doc = {"rollout": held.rollout.model_dump(mode="json", exclude={"notify"}), "router": "gateway-api"}
    assert "duration" not in doc["rollout"]["ab_test"]
    before = {**doc, "rollout": {**doc["rollout"], "ab_test": {"weight": 20, "match": [], "sticky_header": "x-user-id"}}}
    assert reconcile.rollout_hash(held) == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:10]
    timed = ModelDeploymentSpec.model_validate(spec("ABTest", abTest={"weight": 20, "duration": "1h"}))
    assert reconcile.rollout_hash(timed) != reconcile.rollout_hash(held)  # setting one starts the test afresh


GOLDEN = {"prePromotion": {"goldenPrompts": [
    {"prompt": "Reply with the word ok.", "expect": {"regex": "(?i)\\bok\\b", "maxLatency": "5s"}},
    {"prompt": "Return {\"label\": ...} as JSON.", "expect": {"jsonSchema": {
        "type": "object", "required": ["label"], "properties": {"label": {"type": "string"}}}}}]}}


def _answers(ok: str = "OK.", js: str = '{"label": "spam"}', latency: float = 0.3):
    from modelops.domain.golden import GoldenAnswer

    prompts = [g["prompt"] for g in GOLDEN["prePromotion"]["goldenPrompts"]]
    return [GoldenAnswer(prompts[0], 200, ok, latency), GoldenAnswer(prompts[1], 200, js, latency)]


def test_ab_test_sends_no_user_to_the_challenger_before_its_golden_prompts_pass() -> None:
    """Found: ABTest skipped the golden-prompt gate."""
    sim, v1, v2 = started(spec("ABTest", abTest={"weight": 20, "match": [{"headers": {"x-v": "c"}}]}, analysis=GOLDEN))
    sim.step()
    for _ in range(3):
        sim.step(UP)
        assert sim.reaches() == {v1}, "a user reached the challenger before its quality gate"
        assert sim.split() is None
    sim.step(golden=_answers())
    assert sim.split()["percent"] == 20 and v2 in sim.reaches()


@pytest.mark.parametrize("crash", ["after-annotations", "after-status"])
@pytest.mark.parametrize("at", range(1, 7))
def test_killed_at_any_point_the_rollout_resumes_without_repeating_a_transition(at: int, crash: str) -> None:
    """The operator dies part-way through its ``at``-th reconcile of a rollout; a new process
    continues from status and the cluster as they are. Each weight is set once, in order, and the
    new revision is promoted once."""
    sim, v1, v2 = started(spec(canary={"steps": [{"setWeight": 10}, {"pause": {"duration": "20s"}},
                                                  {"setWeight": 50}]}, analysis=ANALYSIS))
    weights = []
    for n in range(1, 14):
        sim.step(11, measurements=healthy(), crash=crash if n == at else None)
        if "chat" in sim.routes and v2 in sim.route_weights() and sim.status.get("stableRevision") == v1:
            weights.append(sim.route_weights()[v2])
        no_outage(sim)
    sim.settle()
    assert sim.status["stableRevision"] == v2 and sim.route_weights() == {v2: 100}
    assert weights == sorted(weights), f"a weight went back: {weights}"
    assert set(weights) <= {0, 10, 50}
    assert sim.events().count("Promoted") <= 2 and sim.events().count("NewRevision") <= 2
    assert "RolledBack" not in sim.events()


def test_after_an_abort_the_next_reconciles_write_nothing() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}, analysis=ANALYSIS))
    sim.step()
    sim.step(UP)
    sim.step(10, measurements=[measure("error-rate", value=0.2, samples=100)])
    assert sim.phase == "RolledBack"
    sim.step(1)  # scales settle
    sim.step(1)
    sim.step(30)
    assert sim.last_writes == []
    assert "error-rate = 0.2 is above max 0.05" in sim.status["message"]


def test_golden_prompts_gate_traffic_and_passing_answers_let_the_canary_proceed() -> None:
    sim, v1, v2 = started(spec(canary={"steps": [{"setWeight": 20}]}, analysis=GOLDEN))
    sim.step()
    sim.step(UP)
    assert sim.route_weights() == {v1: 100, v2: 0}, "traffic moved before the quality gate"
    assert v2 in sim.services  # the gate reaches the revision through its own Service
    from modelops.domain.spec import ModelDeploymentStatus
    from modelops.planning.analysis import golden_due

    request = golden_due("ml", "chat", ModelDeploymentSpec.model_validate(sim.spec),
                         ModelDeploymentStatus.model_validate(sim.status), canary_ready=1, now=sim.now)
    assert request is not None and request.service == v2 and len(request.prompts) == 2
    sim.step(golden=_answers())
    assert sim.status["rollout"]["goldenPrompts"] == "Passed"
    sim.settle()
    assert sim.status["stableRevision"] == v2


@pytest.mark.parametrize("answers, why", [
    (dict(ok="Sure, here you go"), "does not match"),
    (dict(js="label: spam"), "not JSON"),
    (dict(js='{"score": 1}'), "'label' is a required property"),
    (dict(latency=9.0), "more than maxLatency 5s"),
])
def test_a_revision_failing_its_golden_prompts_is_never_promoted(answers, why) -> None:
    sim, v1, v2 = started(spec(canary={"steps": [{"setWeight": 20}]}, analysis=GOLDEN))
    sim.step()
    sim.step(UP)
    sim.step(golden=_answers(**answers))
    assert sim.phase == "RolledBack"
    assert why in sim.status["message"] and "golden prompt" in sim.status["message"]
    sim.step()
    assert sim.replicas(v2) == 0 and sim.route_weights() == {v1: 100}
    sim.settle()
    assert sim.status["stableRevision"] == v1


def test_a_new_serving_config_generation_rolls_out_like_a_spec_change() -> None:
    from modelops.domain.spec import ResolvedMetadata

    prefix = "gs://models/gemma/"
    s = spec(canary={"steps": [{"setWeight": 50}]})
    s["model"]["metadata"] = prefix
    sim = Sim(s, CFG)
    first = sim.step()
    assert sim.condition("Degraded")["reason"] == "InvalidSpec"  # nothing resolved yet
    assert "no best_model_metadata.json found under gs://models/gemma/" in sim.status["message"]
    assert first.apply == []
    g1 = ResolvedMetadata(source=prefix, uri=prefix + "20251201T120000_abc123/best_model_metadata.json", generation=11)
    sim.step(metadata=g1)
    sim.settle()
    v1 = sim.status["stableRevision"]
    assert sim.status["metadata"]["generation"] == 11
    gateway = sim.manifest(v1)["spec"]["template"]["spec"]["containers"][1]
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    assert env["MODELOPS_METADATA_URI"] == g1.uri and env["MODELOPS_METADATA_GENERATION"] == "11"
    # between polls (no fresh lookup) and after a restart, the recorded generation keeps the revision
    sim.step(30)
    assert sim.status["stableRevision"] == v1 and "canaryRevision" not in sim.status
    g2 = ResolvedMetadata(source=prefix, uri=prefix + "20251202T090000_def456/best_model_metadata.json", generation=12)
    sim.step(metadata=g2)
    assert sim.status["canaryRevision"] and sim.status["canaryRevision"] != v1
    assert "NewServingConfig" in sim.events()
    rec = {r["name"]: r for r in sim.status["revisions"]}[sim.status["canaryRevision"]]
    assert rec["metadataGeneration"] == 12
