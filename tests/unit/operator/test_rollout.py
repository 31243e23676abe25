"""Rollout scenarios on the pure planner, step by step (no cluster; see sim.py)."""

from __future__ import annotations

import copy

import pytest

from modelops.config import OperatorConfig
from modelops.domain.spec import ModelDeploymentSpec
from modelops.planning import resources

from .sim import Sim, healthy, measure

CFG = OperatorConfig(resync_seconds=30)
GATEWAY = {"router": "gateway-api", "gateway": {"parentRefs": [{"name": "inference", "namespace": "gateways"}]}}
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


def started(s: dict) -> tuple[Sim, str, str]:
    """A Healthy v1, then the model changes to v2."""
    sim = Sim(s, CFG)
    sim.settle()
    assert sim.phase == "Healthy"
    v1 = sim.status["stableRevision"]
    sim.change("model.source", "gs://models/gemma-v2/")
    v2 = rev(sim.spec)
    return sim, v1, v2


def test_canary_promotes_through_all_steps_with_healthy_metrics() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}, analysis=ANALYSIS))
    sim.step()  # the canary comes up with the pods for 10 %
    assert sim.replicas(v2) == 1 and sim.replicas(v1) == 2
    assert sim.route_weights() == {v1: 100, v2: 0}
    sim.step()  # its pod is ready: 10 % of traffic moves, then the timed pause starts
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
    sim.annotate("promote")
    sim.step(measurements=healthy())
    sim.settle()
    assert sim.status["stableRevision"] == v2 and sim.phase == "Healthy"
    assert sim.route_weights() == {v2: 100}
    assert sim.service_revision() == v2
    assert sim.replicas(v2) == 2 and sim.replicas(v1) == 0
    assert "modelops.dev/promote" not in sim.annotations
    assert sim.events().count("Promoted") == 2  # v1 at first, v2 now: once each


def test_canary_aborts_on_error_rate_and_stays_rolled_back_for_the_same_spec() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}, analysis=ANALYSIS))
    sim.step()
    sim.step()
    assert sim.route_weights() == {v1: 90, v2: 10}
    sim.step(10, measurements=[measure("error-rate", value=0.2, samples=100)])
    assert sim.phase == "RolledBack"
    assert sim.route_weights() == {v1: 100}
    assert sim.replicas(v2) == 0 and sim.replicas(v1) == 2
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


def test_canary_aborts_on_ttft_relative_to_stable() -> None:
    analysis = {**ANALYSIS, "metrics": [{"name": "ttft-p95", "template": "ttftP95", "maxRatioToStable": 1.3}]}
    sim, v1, v2 = started(spec(canary={"steps": STEPS}, analysis=analysis))
    sim.step()
    sim.step()
    sim.step(10, measurements=[measure("ttft-p95", value=0.26, stable_value=0.2)])  # 1.3x: at the limit, passes
    assert sim.phase == "Progressing"
    sim.step(10, measurements=[measure("ttft-p95", value=0.5, stable_value=0.2)])
    assert sim.phase == "RolledBack"
    assert "2.50x the stable revision's 0.2" in sim.condition("Degraded")["message"]


def test_too_few_samples_is_inconclusive_and_pauses_never_promotes() -> None:
    sim, v1, v2 = started(spec(canary={"steps": [{"setWeight": 20}, {"pause": {"duration": "30s"}}]},
                               analysis=ANALYSIS))
    sim.step()
    sim.step()
    sim.step(31, measurements=[measure("error-rate", value=0.0, samples=3)])
    assert sim.phase == "Paused"
    assert sim.status["rollout"]["pauseReason"] == "Inconclusive"
    assert "fewer than minSamples 20" in sim.status["message"]
    for _ in range(5):
        sim.step(60, measurements=[measure("error-rate", value=0.0, samples=3)])
    assert sim.status["stableRevision"] == v1 and sim.route_weights() == {v1: 80, v2: 20}
    sim.annotate("resume")
    sim.step(10, measurements=healthy())
    sim.settle()
    assert sim.status["stableRevision"] == v2


def test_provider_errors_hold_the_steps_then_abort_at_the_consecutive_error_limit() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}, analysis=ANALYSIS))
    sim.step()
    sim.step()
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
    sim.step()
    sim.annotate("pause")
    sim.step(120)
    assert sim.phase == "Paused" and sim.status["rollout"]["pauseReason"] == "Manual"
    assert sim.status["currentStep"] == 1  # the 1m pause did not run out while paused by hand
    assert "modelops.dev/pause" not in sim.annotations
    sim.annotate("resume")
    sim.step(61)
    assert sim.status["currentStep"] == 3
    sim.annotate("abort")
    sim.step()
    assert sim.phase == "RolledBack" and sim.route_weights() == {v1: 100} and sim.replicas(v2) == 0
    assert "aborted by annotation" in sim.status["message"]


def test_promote_full_skips_the_remaining_steps() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}))
    sim.step()
    sim.annotate("promote", "full")
    sim.settle()
    assert sim.status["stableRevision"] == v2 and sim.route_weights() == {v2: 100}


def test_service_router_splits_by_ready_pods_and_never_shrinks_stable_first() -> None:
    sim, v1, v2 = started(spec(canary={"steps": [{"setWeight": 50}, {"pause": {}}]}, router={"router": "service"}))
    sim.never_ready.add(v2)
    sim.step()
    assert sim.replicas(v2) == 1 and sim.replicas(v1) == 2  # canary not ready: stable keeps both pods
    assert sim.service_revision() == v1
    sim.release(v2)
    sim.step()
    sim.step()
    assert sim.replicas(v1) == 1 and sim.replicas(v2) == 1
    assert sim.service_revision() is None  # the Service selects both revisions: 50 % by pods
    assert "approximated by ready pods" in sim.status["message"]


def test_insufficient_gpus_for_the_canary_waits_and_leaves_stable_alone() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}))
    sim.unschedulable[v2] = "0/5 nodes are available: 5 Insufficient nvidia.com/gpu."
    for _ in range(3):
        sim.step(600)  # far past progressDeadline: waiting for GPUs is not a failure
    assert sim.condition("Progressing")["reason"] == "InsufficientGPU"
    assert sim.replicas(v1) == 2 and sim.route_weights() == {v1: 100, v2: 0}
    assert sim.events().count("InsufficientGPU") == 1
    sim.release(v2)
    sim.step()
    sim.step()
    assert sim.route_weights() == {v1: 90, v2: 10}


def test_a_revision_that_never_becomes_ready_fails_at_the_progress_deadline() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}, progressDeadline="5m"))
    sim.never_ready.add(v2)
    sim.step()
    sim.step(301)
    assert sim.phase == "Failed" and sim.condition("Degraded")["reason"] == "ProgressDeadlineExceeded"
    assert sim.replicas(v2) == 0 and sim.route_weights() == {v1: 100}


def test_blue_green_manual_promotion_keeps_the_old_revision_warm_for_the_delay() -> None:
    sim, v1, v2 = started(spec("BlueGreen", router={"router": "service"},
                               blueGreen={"autoPromote": False, "scaleDownDelay": "5m"}))
    sim.step()
    sim.step()
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
    assert sim.replicas(v1) == 0 and "chat-preview" not in sim.services
    assert sim.phase == "Healthy"


def test_blue_green_preview_with_thin_data_gets_a_window_before_pausing_as_inconclusive() -> None:
    sim, v1, v2 = started(spec("BlueGreen", analysis=ANALYSIS))
    thin = [measure("error-rate", value=0.0, samples=3)]
    sim.step()  # the preview comes up
    sim.step(1, measurements=thin)  # nobody has tested it yet
    assert sim.phase == "Progressing" and sim.status["stableRevision"] == v1
    sim.step(25, measurements=thin)  # a window and an interval later, still too thin: a person decides
    assert sim.phase == "Paused" and sim.status["rollout"]["pauseReason"] == "Inconclusive"
    assert sim.status["stableRevision"] == v1


def test_blue_green_auto_promotes_once_the_preview_is_ready() -> None:
    sim, v1, v2 = started(spec("BlueGreen", router={"router": "service"}))
    sim.step()
    sim.step()
    assert sim.service_revision() == v2


def test_bake_time_degradation_rolls_back_to_the_warm_previous_revision() -> None:
    analysis = {**ANALYSIS, "bakeTime": "10m"}
    sim, v1, v2 = started(spec(canary={"steps": [{"setWeight": 50}]}, analysis=analysis))
    sim.step()
    sim.step(measurements=healthy())
    sim.step(10, measurements=healthy())
    sim.step()
    assert sim.status["stableRevision"] == v2 and sim.route_weights() == {v2: 100}
    assert sim.replicas(v1) == 2 and sim.phase == "Progressing"
    assert sim.condition("Progressing")["reason"] == "Baking"
    sim.step(60, measurements=[measure("error-rate", value=0.3, samples=200)])
    assert sim.phase == "RolledBack"
    assert sim.status["stableRevision"] == v1 and sim.route_weights() == {v1: 100}
    assert sim.replicas(v2) == 0
    assert "rolled back from" in sim.status["message"]
    sim.step(30)
    assert sim.phase == "RolledBack"  # pinned


def test_bake_time_that_passes_scales_the_previous_down() -> None:
    sim, v1, v2 = started(spec(canary={"steps": [{"setWeight": 50}]}, analysis={**ANALYSIS, "bakeTime": "2m"}))
    sim.step()
    sim.step(measurements=healthy())
    sim.step(10, measurements=healthy())
    sim.step()
    sim.step(121, measurements=healthy())
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
    split = sim.split()
    del sim.config_maps["chat-split"]  # deleted by hand: the operator cannot read it, but re-applies it
    sim.step(30)
    assert sim.split() == split
    sim.annotate("promote")
    sim.settle()
    assert sim.status["stableRevision"] == v2 and sim.route_weights() == {v2: 100}
    assert sim.split() is None  # the test is over: the split ConfigMap is deleted


def test_ab_test_with_the_service_router_splits_users_the_same_way_and_an_abort_ends_it() -> None:
    sim, v1, v2 = started(spec("ABTest", router={"router": "service"}, abTest={"weight": 30, "stickyHeader": "x-tenant"}))
    sim.settle()
    assert sim.service_revision("chat") == v1 and sim.service_revision(v2) == v2 and sim.replicas(v1) == 2
    assert sim.split()["percent"] == 30 and sim.split()["header"] == "x-tenant"
    assert "approximated" not in sim.status["message"]  # the share is by users, exactly
    sim.annotate("abort")
    sim.settle()
    assert sim.phase == "RolledBack" and sim.split() is None and sim.service_revision("chat") == v1


@pytest.mark.parametrize("crash", ["after-annotations", "after-status"])
@pytest.mark.parametrize("at", range(1, 7))
def test_killed_at_any_point_the_rollout_resumes_without_repeating_a_transition(at: int, crash: str) -> None:
    """The operator dies part-way through its ``at``-th reconcile of a rollout; a new process
    continues from status and the cluster as they are. Each weight is set once, in order, and the
    new revision is promoted once."""
    sim, v1, v2 = started(spec(canary={"steps": [{"setWeight": 10}, {"pause": {"duration": "20s"}},
                                                  {"setWeight": 50}]}, analysis=ANALYSIS))
    weights = []
    for n in range(1, 12):
        sim.step(11, measurements=healthy(), crash=crash if n == at else None)
        if "chat" in sim.routes and v2 in sim.route_weights() and sim.status.get("stableRevision") == v1:
            weights.append(sim.route_weights()[v2])
    sim.settle()
    assert sim.status["stableRevision"] == v2 and sim.route_weights() == {v2: 100}
    assert weights == sorted(weights), f"a weight went back: {weights}"
    assert set(weights) <= {0, 10, 50}
    assert sim.events().count("Promoted") <= 2 and sim.events().count("NewRevision") <= 2
    assert "RolledBack" not in sim.events()


def test_after_an_abort_the_next_reconciles_write_nothing() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}, analysis=ANALYSIS))
    sim.step()
    sim.step()
    sim.step(10, measurements=[measure("error-rate", value=0.2, samples=100)])
    assert sim.phase == "RolledBack"
    sim.step(1)  # scales settle
    again = sim.step(30)
    assert again.status is None and again.events == [] and again.scale == {}
    assert "error-rate = 0.2 is above max 0.05" in sim.status["message"]


GOLDEN = {"prePromotion": {"goldenPrompts": [
    {"prompt": "Reply with the word ok.", "expect": {"regex": "(?i)\\bok\\b", "maxLatency": "5s"}},
    {"prompt": "Return {\"label\": ...} as JSON.", "expect": {"jsonSchema": {
        "type": "object", "required": ["label"], "properties": {"label": {"type": "string"}}}}}]}}


def _answers(ok: str = "OK.", js: str = '{"label": "spam"}', latency: float = 0.3):
    from modelops.domain.golden import GoldenAnswer

    prompts = [g["prompt"] for g in GOLDEN["prePromotion"]["goldenPrompts"]]
    return [GoldenAnswer(prompts[0], 200, ok, latency), GoldenAnswer(prompts[1], 200, js, latency)]


def test_golden_prompts_gate_traffic_and_passing_answers_let_the_canary_proceed() -> None:
    sim, v1, v2 = started(spec(canary={"steps": [{"setWeight": 20}]}, analysis=GOLDEN))
    sim.step()
    sim.step()
    assert sim.route_weights() == {v1: 100, v2: 0}, "traffic moved before the quality gate"
    assert v2 in sim.services  # the gate reaches the revision through its own Service
    from modelops.domain.spec import ModelDeploymentSpec, ModelDeploymentStatus
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
    sim.step()
    sim.step(golden=_answers(**answers))
    assert sim.phase == "RolledBack"
    assert why in sim.status["message"] and "golden prompt" in sim.status["message"]
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
    env = {e["name"]: e["value"] for e in sim_env(sim, v1)}
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


def sim_env(sim: Sim, revision: str) -> list[dict]:
    obj = next(o for p in sim.plans for o in p.apply if o["metadata"]["name"] == revision and o["kind"] == "Deployment")
    gateway = obj["spec"]["template"]["spec"]["containers"][1]
    return gateway["env"]
