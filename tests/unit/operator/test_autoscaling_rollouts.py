"""Autoscaling on the strict model of the cluster (sim.py): the operator decides the total from the
gateways' load, and every strategy splits that total exactly as it splits spec.replicas; GPUs that
run out, a provider that fails, the scale subresource and a second autoscaler.

``sim.load`` is what the adapter hands every pass (the last sample, measured at most once per
interval): ``in_flight(n)`` is n requests in flight summed over the revisions that serve users."""

from __future__ import annotations

import copy

import pytest

from modelops.domain.autoscaling import LoadSample
from modelops.planning import reconcile

from .sim import Sim, in_flight
from .test_rollout import CFG, SERVICE, UP, no_outage, rev, spec

pytestmark = pytest.mark.unit
PROM = {"prometheus": {"address": "http://prom:9090"}}
AUTO = {"minReplicas": 2, "maxReplicas": 8, "target": {"inFlightPerReplica": 4}, "provider": PROM}
CANARY_25 = {"steps": [{"setWeight": 25}, {"pause": {}}]}


def autoscaled(strategy: str = "Canary", router: dict | None = None, autoscaling: dict | None = None,
               **rollout) -> dict:
    out = spec(strategy, router=router, **rollout)
    out["autoscaling"] = copy.deepcopy(autoscaling or AUTO)
    return out


def started(s: dict, load: float = 8.0, **sim_options) -> tuple[Sim, str, str]:
    """A Healthy v1 carrying ``load`` requests in flight, then the model changes to v2."""
    sim = Sim(s, CFG, **sim_options)
    sim.load = in_flight(load)
    sim.settle()
    assert sim.phase == "Healthy", sim.status.get("message")
    v1 = sim.status["stableRevision"]
    sim.change("model.source", "gs://models/gemma-v2/")
    return sim, v1, rev(sim.spec)


def total(sim: Sim) -> int:
    return sim.status["autoscaling"]["desired"]


def events(sim: Sim, reason: str) -> list[str]:
    return [e.message for p in sim.plans for e in p.events if e.reason == reason]


def test_load_rises_during_a_canary_the_total_grows_to_max_and_the_canary_keeps_its_share() -> None:
    sim, v1, v2 = started(autoscaled(canary=CANARY_25))
    assert total(sim) == 2 and sim.replicas(v1) == 2
    sim.step()
    sim.step(UP)
    assert sim.route_weights() == {v1: 75, v2: 25} and sim.replicas(v1) == 2 and sim.replicas(v2) == 1
    sim.load = in_flight(24.0)  # 6 replicas' worth
    sim.step(30)
    assert total(sim) == 6 and sim.status["autoscaling"]["reason"] == "ScaledUp"
    assert sim.replicas(v1) == 6, "the stable is sized for all of the load, not for its 75 %"
    assert sim.replicas(v2) == 2, "the canary's pods follow its weight of the new total"
    assert sim.route_weights() == {v1: 75, v2: 25}
    no_outage(sim)
    sim.step(UP)
    sim.load = in_flight(100.0)  # 25 replicas' worth: capped at maxReplicas
    sim.step(30)
    assert total(sim) == 8 and sim.replicas(v1) == 8 and sim.replicas(v2) == 2
    sim.settle()
    auto = sim.status["autoscaling"]
    assert auto["reason"] == "AtMaximum" and "maxReplicas is 8" in auto["message"]
    assert auto["current"] == 10 and sim.status["replicas"] == 10  # ready and serving users: 8 + 2
    assert sim.route_weights() == {v1: 75, v2: 25} and sim.phase == "Paused"
    assert [m for m in events(sim, "Scaled")][-2:] == [
        "2 → 6 replicas: 8.00 requests in flight per ready replica (target 4) over 3 ready: the load needs 6.00 "
        "replicas", "6 → 8 replicas: 12.50 requests in flight per ready replica (target 4) over 8 ready: the load "
        "needs 25.00 replicas"]
    no_outage(sim)
    # promoted at the autoscaled total: the new stable takes all of it
    sim.annotate("promote")
    sim.settle()
    assert sim.status["stableRevision"] == v2 and sim.replicas(v2) == 8 and sim.replicas(v1) == 0
    no_outage(sim)


def test_load_falls_back_to_min_only_after_the_down_window_and_the_canary_keeps_its_share() -> None:
    sim, v1, v2 = started(autoscaled(canary=CANARY_25), load=32.0)
    assert total(sim) == 8
    sim.settle()
    assert sim.route_weights() == {v1: 75, v2: 25} and sim.replicas(v2) == 2
    sim.load = in_flight(0.0)
    sim.step(30)  # the load asks for the minimum from here
    for wait in (60, 120, 119):
        assert total(sim) == 8 and sim.status["autoscaling"]["reason"] == "ScaleDownStabilized"
        assert sim.replicas(v1) == 8 and sim.replicas(v2) == 2
        sim.step(wait)
    assert total(sim) == 8, "4m59s after the load fell"
    sim.step(1)
    assert total(sim) == 2 and sim.status["autoscaling"]["reason"] == "ScaledDown"
    assert sim.replicas(v1) == 2, "the stable keeps its full size: all of the (new) total"
    assert sim.replicas(v2) == 1, "a running rollout keeps its minimum: at least a pod for its share"
    assert sim.route_weights() == {v1: 75, v2: 25}
    no_outage(sim)
    assert events(sim, "Scaled")[-1].startswith("8 → 2 replicas: 0.00 requests in flight per ready replica")


def test_a_gpu_capped_scale_up_waits_with_insufficient_gpu_and_never_shrinks_the_stable() -> None:
    sim = Sim(autoscaled(canary=CANARY_25), CFG, gpus=3)
    sim.load = in_flight(8.0)
    sim.settle()
    v1 = sim.status["stableRevision"]
    sim.load = in_flight(20.0)  # 5 replicas' worth, 3 GPUs in the cluster
    sim.step(30)
    assert total(sim) == 5 and sim.replicas(v1) == 5
    sim.load = in_flight(40.0)  # the ready replicas queue: it would ask for 10
    for _ in range(4):
        sim.step(30)
        auto = sim.status["autoscaling"]
        assert total(sim) == 5 and auto["reason"] == "InsufficientGPU" and auto["recommendation"] == 8
        assert "held at 5 until the pending pods are placed" in auto["message"]
        assert sim.replicas(v1) == 5 and sim.ready(v1) == 3
        no_outage(sim)
    progressing = sim.condition("Progressing")
    assert progressing["reason"] == "InsufficientGPU" and "scaling " + v1 + " up to 5 replicas: 3/5 ready" in \
        progressing["message"] and "Insufficient nvidia.com/gpu" in progressing["message"]
    assert sim.phase == "Progressing" and sim.status["ready"] == "3/5"
    assert len(events(sim, "InsufficientGPU")) == 1, "one Warning when the cap begins"
    # A rollout meanwhile: the canary waits for GPUs beside the stable, which keeps all 5
    sim.change("model.source", "gs://models/gemma-v2/")
    v2 = rev(sim.spec)
    sim.step(30)  # the canary's Deployment: its pods cannot be placed either
    for _ in range(3):
        sim.step(30)
        assert sim.replicas(v1) == 5 and sim.route_weights() == {v1: 100, v2: 0}
        assert sim.condition("Progressing")["reason"] == "InsufficientGPU"
    # GPUs come (a node autoscaler): the pending pods are placed, then the total grows on
    sim.gpus = None
    sim.step(UP)
    sim.step(30)
    assert total(sim) == 8 and sim.replicas(v1) == 8
    sim.settle()
    assert sim.route_weights() == {v1: 75, v2: 25} and sim.replicas(v2) == 2
    no_outage(sim)


def test_a_mirror_step_blue_green_preview_and_ab_challenger_follow_the_total() -> None:
    # mirror: the shadow gets its percent of the total, at least one pod, users none
    s = autoscaled(canary={"steps": [{"mirror": {"percent": 50, "duration": "10m"}}, {"setWeight": 50}]})
    sim, v1, v2 = started(s, load=8.0)
    sim.step()
    assert sim.replicas(v2) == 1
    sim.load = in_flight(32.0)
    sim.step(30)
    assert total(sim) == 8 and sim.replicas(v1) == 8 and sim.replicas(v2) == 4
    assert sim.traffic() == {v1: 1.0}  # the shadow's pods take copies, no users' requests
    # blue-green: the preview comes up at the active side's size and scales with it
    sim, v1, v2 = started(autoscaled("BlueGreen", router=SERVICE, blueGreen={"autoPromote": False}), load=8.0)
    sim.settle()
    assert sim.replicas(v2) == 2 and sim.phase == "Paused"
    sim.load = in_flight(24.0)
    sim.step(30)
    assert sim.replicas(v1) == 6 and sim.replicas(v2) == 6
    assert sim.status["replicas"] == 2, "the preview serves no users: not in the current count"
    sim.annotate("promote")
    sim.settle()
    assert sim.status["stableRevision"] == v2 and sim.replicas(v2) == 6 and sim.replicas(v1) == 6  # warm
    no_outage(sim)


def test_an_ab_challenger_gets_its_share_of_a_growing_total_without_restarting_its_test() -> None:
    sim, v1, v2 = started(autoscaled("ABTest", abTest={"weight": 25, "duration": "10m"}), load=8.0)
    sim.step()
    sim.step(UP)  # ready at its share: the test's clock starts
    assert sim.replicas(v2) == 1 and "10m of 10m left" in sim.status["message"]
    sim.step(60)
    sim.load = in_flight(32.0)
    sim.step(30)  # the challenger's share grows to 2 pods; its second one is not ready yet
    assert sim.replicas(v1) == 8 and sim.replicas(v2) == 2 and sim.status["canaryWeight"] == 25
    assert "8m30s of 10m left" in sim.status["message"], "the A/B test's clock restarted on a scale-up"
    sim.step(UP)
    assert sim.ready(v2) == 2 and sim.split()["percent"] == 25
    no_outage(sim)


def test_a_failing_provider_keeps_the_total_and_says_so() -> None:
    sim, v1, v2 = started(autoscaled(canary=CANARY_25), load=24.0)
    assert total(sim) == 6
    sim.load = LoadSample(error="ConnectError: connection refused")
    for _ in range(3):
        sim.step(30)
        auto = sim.status["autoscaling"]
        assert total(sim) == 6 and auto["reason"] == "MetricUnavailable" and auto.get("recommendation") is None
        assert "6 replicas kept: the load could not be measured: ConnectError" in auto["message"]
        assert sim.replicas(v1) == 6
    assert len(events(sim, "MetricUnavailable")) == 1
    sim.load = in_flight(None)  # Prometheus answers, with no series (not scraped yet)
    sim.step(30)
    assert total(sim) == 6 and sim.status["autoscaling"]["reason"] == "NoData"


def test_an_idle_autoscaled_deployment_writes_nothing() -> None:
    sim, v1, v2 = started(autoscaled(canary=CANARY_25), load=13.0)
    sim.settle()
    for _ in range(5):
        sim.step(30)  # the same load (or a sample reused between intervals): the same decision
        assert sim.last_writes == []
    sim.load = in_flight(14.0)  # within the tolerance: the value in status changes, nothing else
    sim.step(30)
    assert [w.kind for w in sim.last_writes] == ["status"] and total(sim) == 4


def test_the_scale_subresource_status_and_kubectl_scale_without_autoscaling() -> None:
    s = spec(canary=CANARY_25)
    sim = Sim(s, CFG)
    sim.settle()
    v1 = sim.status["stableRevision"]
    assert sim.status["selector"] == "modelops.dev/deployment=chat" and sim.status["replicas"] == 2
    assert "autoscaling" not in sim.status
    sim.change("replicas", 4)  # what `kubectl scale md chat --replicas=4` (or an HPA) writes
    sim.step()
    assert sim.replicas(v1) == 4 and sim.status["replicas"] == 2  # ready ones: the new two are starting
    sim.settle()
    assert sim.status["replicas"] == 4 and sim.status["ready"] == "4/4"
    # a rollout splits the total an HPA set, as it splits spec.replicas
    sim.change("model.source", "gs://models/gemma-v2/")
    v2 = rev(sim.spec)
    sim.settle()
    assert sim.replicas(v1) == 4 and sim.replicas(v2) == 1 and sim.status["replicas"] == 5


def test_a_second_autoscaler_writing_spec_replicas_is_ignored_and_reported() -> None:
    sim, v1, v2 = started(autoscaled(canary=CANARY_25), load=24.0)
    assert total(sim) == 6 and sim.spec["replicas"] == 2
    sim.change("replicas", 3)  # kubectl scale, an HPA or KEDA
    sim.step(30)
    assert total(sim) == 6 and sim.replicas(v1) == 6, "spec.replicas is not the total while autoscaling is on"
    [warning] = sim.status["warnings"]
    assert warning.startswith("spec.replicas: 3 is ignored: spec.autoscaling decides the total") and \
        "set spec.replicas back to 2" in warning
    sim.change("replicas", 5)
    sim.step(30)
    assert len(events(sim, "ReplicasIgnored")) == 2  # once per value seen
    sim.step(30)
    assert len(events(sim, "ReplicasIgnored")) == 2
    sim.change("replicas", 2)
    sim.step(30)
    assert "warnings" not in sim.status


def test_switching_autoscaling_on_starts_from_spec_replicas_and_off_goes_back_to_it() -> None:
    s = spec(canary=CANARY_25)
    s["replicas"] = 3
    sim = Sim(s, CFG)
    sim.load = in_flight(12.0)
    sim.settle()
    v1 = sim.status["stableRevision"]
    sim.change("autoscaling", copy.deepcopy(AUTO))
    sim.step()
    assert total(sim) == 3 and sim.status["autoscaling"]["reason"] == "AtTarget" and sim.replicas(v1) == 3
    sim.load = in_flight(32.0)
    sim.step(30)
    assert total(sim) == 8 and sim.replicas(v1) == 8
    sim.spec.pop("autoscaling")
    sim.generation += 1
    sim.settle()
    assert "autoscaling" not in sim.status and sim.replicas(v1) == 3 and sim.status["ready"] == "3/3"


def test_a_scale_up_is_progressing_not_degraded() -> None:
    sim, v1, v2 = started(autoscaled(canary=CANARY_25), load=8.0)
    sim.set_spec({**sim.spec, "model": {**sim.spec["model"], "source": "gs://models/gemma/"}})  # back to v1
    sim.settle()
    sim.load = in_flight(24.0)
    sim.step(30)
    assert sim.phase == "Progressing" and sim.condition("Progressing")["reason"] == "ScalingUp"
    assert sim.condition("Progressing")["message"] == f"scaling {v1} up to 6 replicas: 2/6 ready"
    sim.step(UP)
    assert sim.phase == "Healthy" and sim.condition("Progressing")["reason"] == "RevisionAvailable"


def test_the_load_query_covers_the_revisions_users_reach() -> None:
    from modelops.domain.spec import ModelDeploymentSpec, ModelDeploymentStatus
    from modelops.planning.autoscaling import load_request

    sim, v1, v2 = started(autoscaled(canary={"steps": [{"mirror": {"percent": 50, "duration": "1m"}},
                                                         {"setWeight": 25}, {"pause": {}}]}), load=8.0)
    queries = []
    for _ in range(8):
        sim.step(UP if not queries else 31)
        request = load_request("ml", ModelDeploymentSpec.model_validate(sim.spec),
                               ModelDeploymentStatus.model_validate(sim.status))
        queries.append(request.revisions)
    assert queries[0] == (v1,), "a shadow takes copies, not users' requests"
    assert queries[-1] == (v1, v2)
    tokens = autoscaled(autoscaling={**AUTO, "target": {"outputTokensPerSecondPerReplica": 200}, "window": "2m"})
    request = load_request("ml", ModelDeploymentSpec.model_validate(tokens),
                           ModelDeploymentStatus.model_validate(sim.status))
    assert list(request.queries.values()) == [
        f'sum(rate(modelops_gateway_output_tokens_total{{namespace="ml",revision=~"{v1}|{v2}"}}[2m])) or '
        f'(sum(modelops_gateway_inflight_requests{{namespace="ml",revision=~"{v1}|{v2}"}}) * 0)']
    assert request.address == "http://prom:9090" and request.interval == 30


def test_an_invalid_autoscaling_spec_is_reported_and_changes_nothing() -> None:
    sim, v1, v2 = started(autoscaled(canary=CANARY_25), load=24.0)
    sim.change("autoscaling", {**AUTO, "minReplicas": 9})
    plan = sim.step(30)
    assert sim.condition("Degraded")["reason"] == "InvalidSpec"
    assert "spec.autoscaling.minReplicas must not be above spec.autoscaling.maxReplicas" in sim.status["message"]
    assert plan.replicas == {} and sim.replicas(v1) == 6
    assert reconcile.pod_selector("chat") == sim.status["selector"]


def test_a_canary_carrying_everyone_while_the_stable_has_no_ready_pod_is_not_shrunk_by_a_smaller_total() -> None:
    """Found by the invariant machine: the stable crash-loops mid-canary, the canary (which served users in
    this attempt) takes them all; the load falls and the smaller total would have sized it to its 50 % share."""
    fast = {**AUTO, "scaleDown": {"stabilizationWindow": "0s"}}
    sim, v1, v2 = started(autoscaled(canary={"steps": [{"setWeight": 50}, {"pause": {}}]}, autoscaling=fast),
                          load=16.0)
    sim.settle()
    assert sim.replicas(v1) == 4 and sim.replicas(v2) == 2 and sim.traffic() == {v1: 0.5, v2: 0.5}
    sim.never_ready.add(v1)
    sim.step(1)
    assert sim.traffic() == {v2: 1.0}
    sim.load = in_flight(0.0)
    sim.step(30)
    assert total(sim) == 2 and sim.replicas(v1) == 2
    assert sim.replicas(v2) == 2, "the revision carrying every user was shrunk to its share of the new total"
    sim.release(v1)
    sim.settle()
    assert sim.traffic() == {v1: 0.5, v2: 0.5} and sim.replicas(v2) == 1  # its share again, traffic first
    no_outage(sim)
