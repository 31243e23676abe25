"""Rollouts end to end: the operator on the local cluster, real Prometheus scraping real
gateway processes that stand in for each revision's pods (only while their Deployment has
available pods), and user traffic sent all along through the HTTPRoute or the Service as a
router would send it. Every scenario ends with ``assert_no_outage``: no request reached a
revision without endpoints, and none failed but on a revision the test failed on purpose."""

from __future__ import annotations

import copy

import json
from pathlib import Path

from kubernetes import client

from modelops.config import OperatorConfig
from modelops.domain.spec import ModelDeploymentSpec
from modelops.planning import resources
from tests.support.prometheus import PrometheusServer
from tests.support.receiver import Receiver
from tests.support.wait import wait_for

from .rollout_harness import Harness
from .steps import (apply, condition, events, get, manifest, replicas, service_revision, wait_phase, wait_reason,
                    wait_replicas, with_changes)

STEPS = [{"setWeight": 20}, {"pause": {"duration": "6s"}}, {"setWeight": 50}, {"pause": {"duration": "6s"}}]


def canary(prometheus: PrometheusServer, router: str = "gateway-api", **analysis) -> dict:
    traffic = {"router": router}
    if router == "gateway-api":
        traffic["gateway"] = {"parentRefs": [{"name": "inference", "namespace": "gateways"}]}
    m = manifest("chat", replicas=2, traffic=traffic)
    m["spec"]["rollout"] = {"strategy": "Canary", "canary": {"steps": STEPS}, "notify": ["e2e", "e2e-slack"], "analysis": {
        "interval": "2s", "window": "10s", "failureLimit": 1,
        "provider": {"prometheus": {"address": prometheus.address}},
        "metrics": [{"name": "error-rate", "template": "errorRate", "max": 0.05, "minSamples": 5}], **analysis}}
    return m


def revision(m: dict) -> str:
    return resources.revision_for(m["metadata"]["name"], ModelDeploymentSpec.model_validate(m["spec"]),
                                  OperatorConfig())


def given_v1_then_v2(api, cluster, namespace: str, v1: dict, v2: dict, h: Harness | None = None) -> None:
    """Given v1 serving (Healthy, and users served through the harness ``h``), when the manifest changes to v2."""
    apply(cluster, namespace, v1)
    wait_phase(api, namespace, "chat", "Healthy")
    if h is not None:
        h.wait_serving()
    apply(cluster, namespace, v2)


def held_canary(prometheus: PrometheusServer, weight: int, router: str = "gateway-api") -> tuple[dict, dict, str, str]:
    """v1 and v2 manifests whose canary stops at ``weight`` % behind an open pause."""
    m = canary(prometheus, router=router)
    m["spec"]["rollout"]["canary"]["steps"] = [{"setWeight": weight}, {"pause": {}}]
    v2m = with_changes(m, "spec.model.source", "gs://models/gemma-2-9b-it-v2/")
    return m, v2m, revision(m), revision(v2m)


def notified(receiver: Receiver, namespace: str, *kinds: str, timeout: float = 30) -> list[dict]:
    """Wait until the webhook receiver got CloudEvents of each of ``kinds`` for this namespace's
    ModelDeployment (and Slack the same number of messages); returns them in arrival order."""
    def mine() -> list[dict]:
        return [b for b in receiver.bodies("/e2e") if b["data"]["namespace"] == namespace]

    def slack() -> list[str]:
        return [b["text"] for b in receiver.bodies("/slack") if f"*{namespace}/chat*" in b["text"]]

    wait_for(lambda: set(kinds) <= {b["data"]["kind"] for b in mine()} and len(slack()) >= len(mine()),
             timeout=timeout, what=f"notifications {kinds} (got {[b['data']['kind'] for b in mine()]})")
    got = mine()
    for b in got:
        assert b["specversion"] == "1.0" and b["type"] == f"dev.modelops.rollout.{b['data']['kind']}"
        assert b["source"] == f"/apis/modelops.dev/v1alpha1/namespaces/{namespace}/modeldeployments/chat"
    return got


def keeps_serving(h: Harness, n: int = 30) -> None:
    """Users go on being served: ``n`` more answered requests from now."""
    served = h.served
    wait_for(lambda: h.served >= served + n, timeout=30, what=f"{n} more requests served")


def route_weights(api, namespace: str) -> dict[str, int]:
    route = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", namespace, "httproutes", "chat")
    return {b["name"]: b["weight"] for b in route["spec"]["rules"][-1]["backendRefs"]}


def test_canary_promotes_through_all_steps_with_healthy_metrics(api, cluster, namespace, operator, prometheus,
                                                                 notifications, tmp_path) -> None:
    m = canary(prometheus)
    v2m = with_changes(m, "spec.model.source", "gs://models/gemma-2-9b-it-v2/")
    v1, v2 = revision(m), revision(v2m)
    with Harness(api, namespace, "chat", prometheus, tmp_path) as h:
        given_v1_then_v2(api, cluster, namespace, m, v2m, h)
        seen = []

        def promoted() -> bool:
            obj = get(api, namespace, "chat")
            seen.append(obj["status"].get("canaryWeight"))
            return obj["status"].get("stableRevision") == v2 and obj["status"].get("phase") == "Healthy"

        wait_for(promoted, timeout=120, interval=0.5, what="the canary to be promoted")
        wait_for(lambda: route_weights(api, namespace) == {v2: 100}, timeout=10, what="all traffic on v2")
        assert h.requests_to(v2) > 20 and h.requests_to(v1) > 20
        assert all(status == 200 for (_, status) in h.sent), h.sent
    h.assert_no_outage()
    steps_seen = [w for w in seen if w is not None]
    assert 20 in steps_seen and 50 in steps_seen and steps_seen == sorted(steps_seen)
    obj = get(api, namespace, "chat")
    assert obj["status"]["analysis"]["error-rate"]["verdict"] == "Successful"
    assert "modelops_gateway_requests_total" in obj["status"]["analysis"]["error-rate"]["query"]
    assert [r for _, r, _ in events(api, namespace, "chat")].count("Promoted") == 2
    got = notified(notifications, namespace, "started", "step", "promoted")
    kinds = [b["data"]["kind"] for b in got]
    # v1's first rollout, then v2's: started, its steps (a pass may complete several), promoted
    assert kinds[:3] == ["started", "promoted", "started"] and kinds[-1] == "promoted", kinds
    assert set(kinds[3:-1]) == {"step"} and len(kinds[3:-1]) >= 2, kinds
    assert {b["subject"] for b in got[2:]} == {v2} and got[0]["subject"] == v1
    assert "step 1/4 (setWeight 20) completed: 20%" in got[3]["data"]["message"]


def test_canary_aborted_on_error_rate_rolls_back_and_stays_rolled_back(api, cluster, namespace, operator,
                                                                       prometheus, notifications, tmp_path) -> None:
    m = canary(prometheus)
    v2m = with_changes(m, "spec.model.source", "gs://models/gemma-2-9b-it-broken/")
    v1, v2 = revision(m), revision(v2m)
    with Harness(api, namespace, "chat", prometheus, tmp_path, failing={v2}) as h:
        given_v1_then_v2(api, cluster, namespace, m, v2m, h)
        obj = wait_phase(api, namespace, "chat", "RolledBack", timeout=90)
        # status is written first, the route right after it in the same reconcile
        wait_for(lambda: route_weights(api, namespace) == {v1: 100}, timeout=10, what="the canary's weight at 0")
        assert h.requests_to(v2) > 0  # it did get its share before the abort
        keeps_serving(h)
    h.assert_no_outage()  # only v2's deliberate errors
    st = obj["status"]
    assert st["stableRevision"] == v1 and "canaryRevision" not in st
    assert "error-rate" in condition(obj, "Degraded")["message"] and "above max 0.05" in \
        condition(obj, "Degraded")["message"]
    deps = {d.metadata.name: d for d in client.AppsV1Api(api).list_namespaced_deployment(namespace).items}
    assert deps[v2].spec.replicas == 0 and deps[v1].spec.replicas == 2
    assert ("Warning", "RolledBack") in [(t, r) for t, r, _ in events(api, namespace, "chat")]
    assert operator.metric(f'modelops_rollbacks_total{{name="chat",namespace="{namespace}"}}') == 1
    (rolled_back,) = [b for b in notified(notifications, namespace, "rolledback") if b["data"]["kind"] == "rolledback"]
    assert rolled_back["subject"] == v2 and "error-rate" in rolled_back["data"]["message"] \
        and "above max 0.05" in rolled_back["data"]["message"]
    assert rolled_back["data"]["analysis"]["error-rate"]["verdict"] == "Failed"
    # Argo CD re-applying the same spec does not restart the rollout.
    apply(cluster, namespace, v2m)
    operator.wait_reconciles(3)
    assert get(api, namespace, "chat")["status"]["phase"] == "RolledBack"


def test_prometheus_unreachable_holds_the_steps_then_aborts_after_consecutive_errors(
        api, cluster, namespace, operator, prometheus, tmp_path) -> None:
    m = canary(prometheus, consecutiveErrorLimit=3)
    m["spec"]["rollout"]["analysis"]["provider"]["prometheus"]["address"] = "http://127.0.0.1:9"  # nothing listens
    v2m = with_changes(m, "spec.model.source", "gs://models/gemma-2-9b-it-v2/")
    v1 = revision(m)
    with Harness(api, namespace, "chat", prometheus, tmp_path) as h:
        given_v1_then_v2(api, cluster, namespace, m, v2m, h)
        weights = []

        def rolled_back() -> bool:
            st = get(api, namespace, "chat")["status"]
            weights.append(st.get("canaryWeight"))
            return st.get("phase") == "RolledBack"

        wait_for(rolled_back, timeout=60, interval=0.3, what="the rollout to abort on provider errors")
        wait_for(lambda: route_weights(api, namespace) == {v1: 100}, timeout=10, what="the canary's weight at 0")
        keeps_serving(h)
    h.assert_no_outage()
    obj = get(api, namespace, "chat")
    assert max(w for w in weights if w is not None) == 20, f"a step advanced without data: {weights}"
    assert "3 errors in a row" in condition(obj, "Degraded")["message"]
    assert obj["status"]["analysis"]["error-rate"]["verdict"] == "Error"


def test_canary_aborted_on_time_to_first_token_relative_to_stable(api, cluster, namespace, operator, prometheus,
                                                                  tmp_path) -> None:
    m = canary(prometheus)
    m["spec"]["rollout"]["analysis"]["metrics"] = [
        {"name": "ttft", "template": "ttftP95", "maxRatioToStable": 1.5, "minSamples": 5}]
    v2m = with_changes(m, "spec.model.source", "gs://models/gemma-2-9b-it-slow/")
    v1, v2 = revision(m), revision(v2m)
    with Harness(api, namespace, "chat", prometheus, tmp_path) as h:
        given_v1_then_v2(api, cluster, namespace, m, v2m, h)
        h.slow(v2, 0.3)  # the new revision starts answering 300 ms late; the stable one in milliseconds
        obj = wait_phase(api, namespace, "chat", "RolledBack", timeout=90)
        wait_for(lambda: route_weights(api, namespace) == {v1: 100}, timeout=10, what="the canary's weight at 0")
        assert all(status == 200 for (_, status) in h.sent)  # no errors: only slower
    h.assert_no_outage()
    ttft = obj["status"]["analysis"]["ttft"]
    assert ttft["verdict"] == "Failed" and ttft["value"] >= 0.25 and ttft["stableValue"] < 0.1, ttft
    message = condition(obj, "Degraded")["message"]
    assert "ttft" in message and "stable" in message, message


def test_too_few_samples_is_inconclusive_and_pauses_instead_of_promoting(api, cluster, namespace, operator,
                                                                        prometheus, tmp_path) -> None:
    m = canary(prometheus)
    m["spec"]["rollout"]["analysis"]["metrics"][0]["minSamples"] = 1_000_000  # more than the test ever sends
    v2m = with_changes(m, "spec.model.source", "gs://models/gemma-2-9b-it-v2/")
    v1, v2 = revision(m), revision(v2m)
    with Harness(api, namespace, "chat", prometheus, tmp_path) as h:
        given_v1_then_v2(api, cluster, namespace, m, v2m, h)
        obj = wait_phase(api, namespace, "chat", "Paused", timeout=60)
        assert obj["status"]["rollout"]["pauseReason"] == "Inconclusive"
        assert obj["status"]["analysis"]["error-rate"]["verdict"] == "Inconclusive"
        assert route_weights(api, namespace) == {v1: 80, v2: 20}  # held at the first step, not promoted
        # A person who has looked at it resumes; it stays held while the data stays too thin.
        cluster.kubectl("annotate", "md", "chat", "-n", namespace, "modelops.dev/resume=")
        wait_for(lambda: "modelops.dev/resume" not in (get(api, namespace, "chat")["metadata"].get("annotations")
                                                       or {}), timeout=30, what="the resume to be acted on")
        obj = wait_phase(api, namespace, "chat", "Paused", timeout=60)
        assert obj["status"]["stableRevision"] == v1 and route_weights(api, namespace)[v2] <= 20
    h.assert_no_outage()


def test_pause_and_resume_by_annotation(api, cluster, namespace, operator, prometheus, notifications,
                                       tmp_path) -> None:
    m = canary(prometheus)
    m["spec"]["rollout"]["canary"]["steps"] = [{"setWeight": 20}, {"pause": {"duration": "4s"}}, {"setWeight": 60},
                                               {"pause": {"duration": "4s"}}]
    v2m = with_changes(m, "spec.model.source", "gs://models/gemma-2-9b-it-v2/")
    v1, v2 = revision(m), revision(v2m)
    with Harness(api, namespace, "chat", prometheus, tmp_path) as h:
        given_v1_then_v2(api, cluster, namespace, m, v2m, h)
        wait_for(lambda: route_weights(api, namespace).get(v2) == 20, timeout=60, what="20% to the canary")
        cluster.kubectl("annotate", "md", "chat", "-n", namespace, "modelops.dev/pause=")
        obj = wait_phase(api, namespace, "chat", "Paused", timeout=30)
        assert obj["status"]["rollout"]["pauseReason"] == "Manual"
        time_paused = get(api, namespace, "chat")["status"]["currentStep"]
        operator.wait_reconciles(4, "while paused (longer than the step's 4 s pause)")
        assert route_weights(api, namespace) == {v1: 80, v2: 20}
        assert get(api, namespace, "chat")["status"]["currentStep"] == time_paused
        cluster.kubectl("annotate", "md", "chat", "-n", namespace, "modelops.dev/resume=")
        wait_phase(api, namespace, "chat", "Healthy", timeout=90)
    h.assert_no_outage()
    assert get(api, namespace, "chat")["status"]["stableRevision"] == v2
    paused = [b for b in notified(notifications, namespace, "paused", "promoted") if b["data"]["kind"] == "paused"]
    assert len(paused) == 1 and "(Manual)" in paused[0]["data"]["message"]


def test_not_enough_gpus_for_the_canary_waits_and_leaves_stable_untouched(api, cluster, namespace, operator,
                                                                         prometheus, tmp_path) -> None:
    m = canary(prometheus)
    v2m = with_changes(m, "spec.resources.gpu.count", 16)  # no node has 16 L4s
    v1, v2 = revision(m), revision(v2m)
    with Harness(api, namespace, "chat", prometheus, tmp_path) as h:
        given_v1_then_v2(api, cluster, namespace, m, v2m, h)
        obj = wait_reason(api, namespace, "chat", "Progressing", "InsufficientGPU", timeout=60)
        assert "nvidia.com/gpu" in condition(obj, "Progressing")["message"]
        operator.wait_reconciles(3, "while waiting for GPUs")
        apps = client.AppsV1Api(api)
        assert apps.read_namespaced_deployment(v1, namespace).spec.replicas == 2  # stable never shrinks
        assert route_weights(api, namespace).get(v2, 0) == 0 and h.requests_to(v2) == 0
        obj = get(api, namespace, "chat")
        assert obj["status"]["stableRevision"] == v1 and condition(obj, "Available")["status"] == "True"
        # The GPUs come back (here: the spec asks for what exists): the rollout goes on.
        apply(cluster, namespace, with_changes(v2m, "spec.resources.gpu.count", 1))
        wait_phase(api, namespace, "chat", "Healthy", timeout=120)
    h.assert_no_outage()


def test_ab_test_keeps_each_user_on_one_variant_then_promotes(api, cluster, namespace, operator, prometheus,
                                                              tmp_path) -> None:
    import httpx

    m = canary(prometheus)
    m["spec"]["rollout"] = {**m["spec"]["rollout"], "strategy": "ABTest", "abTest": {"weight": 20}}
    del m["spec"]["rollout"]["canary"]
    v2m = with_changes(m, "spec.model.source", "gs://models/gemma-2-9b-it-challenger/")
    v1, v2 = revision(m), revision(v2m)
    with Harness(api, namespace, "chat", prometheus, tmp_path) as h:
        given_v1_then_v2(api, cluster, namespace, m, v2m, h)
        obj = wait_for(lambda: (o := get(api, namespace, "chat"))["status"].get("canaryWeight") == 20 and o,
                       timeout=60, what="the A/B test at 20%")
        assert obj["status"]["phase"] == "Progressing" and condition(obj, "Progressing")["reason"] == "ABTest"
        assert route_weights(api, namespace) == {v1: 100, v2: 0}  # users are assigned by v1's gateway
        stable_url = h.url(v1)

        def variant(user: str, in_body: bool = False) -> str:
            body = {"model": "gemma-2-9b-it", "messages": [{"role": "user", "content": "hi"}]}
            headers = {}
            if in_body:
                body["user"] = user  # the OpenAI `user` field
            else:
                headers["x-user-id"] = user
            r = httpx.post(stable_url + "/v1/chat/completions", json=body, headers=headers, timeout=10)
            assert r.status_code == 200, r.text
            return r.headers["x-modelops-revision"]

        wait_for(lambda: any(variant(f"probe-{i}") == v2 for i in range(30)), timeout=30, interval=0.5,
                 what="the split to reach the stable gateway")
        # 100 requests from 10 users, by header and by the body's `user`: each user sees one variant.
        seen: dict[str, set[str]] = {}
        for i in range(100):
            user = f"user-{i % 10}"
            seen.setdefault(user, set()).add(variant(user, in_body=i % 2 == 1))
        assert all(len(v) == 1 for v in seen.values()), seen
        # About 20 % of users get the challenger.
        share = sum(variant(f"member-{i}") == v2 for i in range(300)) / 300
        assert 0.12 <= share <= 0.28, share
        # Per-variant metrics: each revision's gateway counted what it served, analysis compares them.
        wait_for(lambda: prometheus.query(f'sum(modelops_gateway_requests_total{{revision="{v2}"}})'),
                 timeout=30, what="the challenger's requests in Prometheus")
        wait_for(lambda: (a := get(api, namespace, "chat")["status"].get("analysis", {}).get("error-rate", {}))
                 .get("verdict") == "Successful" and a.get("stableValue") is not None, timeout=60,
                 what="per-variant values in status")
        # A split deleted by hand comes back (the operator writes it but never reads it).
        core = client.CoreV1Api(api)
        core.delete_namespaced_config_map("chat-split", namespace)
        wait_for(lambda: json.loads(core.read_namespaced_config_map("chat-split", namespace).data["split.json"])
                 .get("percent") == 20, timeout=30, what="the split ConfigMap to be re-applied")
        cluster.kubectl("annotate", "md", "chat", "-n", namespace, "modelops.dev/promote=")
        obj = wait_phase(api, namespace, "chat", "Healthy", timeout=90)
        assert obj["status"]["stableRevision"] == v2
        wait_for(lambda: route_weights(api, namespace) == {v2: 100}, timeout=10, what="all traffic on v2")
        split = client.CoreV1Api(api).read_namespaced_config_map("chat-split", namespace).data["split.json"]
        assert split == "{}"  # the test is over
    h.assert_no_outage()
    assert [r for _, r, _ in events(api, namespace, "chat")].count("Promoted") == 2


def test_blue_green_auto_promotes_then_a_degraded_bake_rolls_back_to_the_warm_revision(
        api, cluster, namespace, operator, prometheus, notifications, tmp_path) -> None:
    m = canary(prometheus, bakeTime="60s")
    m["spec"]["rollout"] = {**m["spec"]["rollout"], "strategy": "BlueGreen",
                            "blueGreen": {"autoPromote": True, "scaleDownDelay": "60s"}}
    del m["spec"]["rollout"]["canary"]
    v2m = with_changes(m, "spec.model.source", "gs://models/gemma-2-9b-it-v2/")
    v1, v2 = revision(m), revision(v2m)
    with Harness(api, namespace, "chat", prometheus, tmp_path, preview_traffic=True) as h:
        given_v1_then_v2(api, cluster, namespace, m, v2m, h)
        # The preview is analysed (someone tests it through chat-preview), then promoted on its own.
        wait_for(lambda: get(api, namespace, "chat")["status"].get("stableRevision") == v2, timeout=60,
                 what="the automatic promotion")
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        # status is written first, the objects right after it in the same reconcile
        wait_for(lambda: core.read_namespaced_service("chat", namespace).spec.selector["modelops.dev/revision"] == v2,
                 timeout=10, what="the Service to flip to v2")
        wait_for(lambda: route_weights(api, namespace) == {v2: 100}, timeout=10, what="all traffic on v2")
        assert apps.read_namespaced_deployment(v1, namespace).spec.replicas == 2  # warm during the bake
        wait_for(lambda: h.requests_to(v2) > 10, timeout=30, what="traffic on the promoted revision")
        h.fail(v2)  # it degrades after promotion
        obj = wait_phase(api, namespace, "chat", "RolledBack", timeout=60)
        assert obj["status"]["stableRevision"] == v1
        wait_for(lambda: route_weights(api, namespace) == {v1: 100}, timeout=10, what="traffic back on v1")
        wait_for(lambda: core.read_namespaced_service("chat", namespace).spec.selector["modelops.dev/revision"] == v1,
                 timeout=10, what="the Service back on v1")
        assert apps.read_namespaced_deployment(v1, namespace).spec.replicas == 2
        keeps_serving(h)
    h.assert_no_outage()  # only v2's deliberate errors
    assert f"rolled back from {v2} to {v1}: error-rate" in condition(obj, "Degraded")["message"]
    assert ("Warning", "RolledBack") in [(t, r) for t, r, _ in events(api, namespace, "chat")]
    # What a retraining pipeline listens for: degraded (with the verdict), then the rollback.
    kinds = [b["data"]["kind"] for b in notified(notifications, namespace, "degraded", "rolledback")]
    assert kinds[-2:] == ["degraded", "rolledback"], kinds


def test_abort_by_annotation_mid_step(api, cluster, namespace, operator, prometheus, tmp_path) -> None:
    m, v2m, v1, v2 = held_canary(prometheus, 30)
    with Harness(api, namespace, "chat", prometheus, tmp_path) as h:
        given_v1_then_v2(api, cluster, namespace, m, v2m, h)
        wait_phase(api, namespace, "chat", "Paused", timeout=60)
        # status is written first, the route right after it in the same reconcile
        wait_for(lambda: route_weights(api, namespace) == {v1: 70, v2: 30}, timeout=10, what="30% to the canary")
        cluster.kubectl("annotate", "md", "chat", "-n", namespace, "modelops.dev/abort=")
        obj = wait_phase(api, namespace, "chat", "RolledBack", timeout=30)
        wait_for(lambda: route_weights(api, namespace) == {v1: 100}, timeout=10, what="the canary's weight at 0")
        keeps_serving(h)
    h.assert_no_outage()
    assert "modelops.dev/abort" not in (obj["metadata"].get("annotations") or {})
    assert "aborted by annotation" in obj["status"]["message"]


def test_blue_green_manual_promotion_flips_the_service_and_keeps_the_old_warm(
        api, cluster, namespace, operator, prometheus, tmp_path) -> None:
    m = manifest("chat", replicas=2)
    m["spec"]["rollout"] = {"strategy": "BlueGreen", "blueGreen": {"autoPromote": False, "scaleDownDelay": "8s"}}
    v2m = with_changes(m, "spec.model.source", "gs://models/gemma-2-9b-it-v2/")
    v1, v2 = revision(m), revision(v2m)
    with Harness(api, namespace, "chat", prometheus, tmp_path, preview_traffic=True) as h:
        given_v1_then_v2(api, cluster, namespace, m, v2m, h)
        obj = wait_phase(api, namespace, "chat", "Paused", timeout=60)
        assert obj["status"]["rollout"]["pauseReason"] == "AwaitingPromotion"
        core = client.CoreV1Api(api)
        assert core.read_namespaced_service("chat-preview", namespace).spec.selector["modelops.dev/revision"] == v2
        assert core.read_namespaced_service("chat", namespace).spec.selector["modelops.dev/revision"] == v1
        cluster.kubectl("annotate", "md", "chat", "-n", namespace, "modelops.dev/promote=")
        wait_for(lambda: core.read_namespaced_service("chat", namespace).spec.selector["modelops.dev/revision"] == v2,
                 timeout=30, what="the Service to flip to the new revision")
        apps = client.AppsV1Api(api)
        assert apps.read_namespaced_deployment(v1, namespace).spec.replicas == 2  # warm for scaleDownDelay
        wait_for(lambda: apps.read_namespaced_deployment(v1, namespace).spec.replicas == 0, timeout=30,
                 what="the old revision to scale down after scaleDownDelay")
        wait_phase(api, namespace, "chat", "Healthy")
        keeps_serving(h)
    h.assert_no_outage()
    assert h.requests_to(v1) > 0 and h.requests_to(v2) > 0


def test_operator_killed_during_steps_resumes_without_double_promotion(
        api, cluster, namespace, operator, prometheus, tmp_path) -> None:
    m = canary(prometheus)
    m["spec"]["rollout"]["canary"]["steps"] = [
        {"setWeight": 20}, {"pause": {"duration": "4s"}}, {"setWeight": 50}, {"pause": {"duration": "4s"}},
        {"setWeight": 80}, {"pause": {"duration": "4s"}}]
    v2m = with_changes(m, "spec.model.source", "gs://models/gemma-2-9b-it-v2/")
    v2 = revision(v2m)
    with Harness(api, namespace, "chat", prometheus, tmp_path) as h:
        given_v1_then_v2(api, cluster, namespace, m, v2m, h)
        kills = 0
        route_seen = []
        for step in (20, 50, 80):  # kill right after each weight lands, and again during its pause
            wait_for(lambda: route_weights(api, namespace).get(v2, 0) >= step, timeout=90,
                     what=f"{step}% to the canary")
            for _ in range(2):
                route_seen.append(route_weights(api, namespace).get(v2, 0))
                operator.kill()
                kills += 1
                operator.start()
                wait_for(lambda: operator.metric('modelops_reconciles_total{result="ok"}') >= 1, timeout=30,
                         what="the restarted operator to reconcile")
        wait_phase(api, namespace, "chat", "Healthy", timeout=120)
    assert kills >= 5
    assert route_seen == sorted(route_seen), f"a weight went back after a restart: {route_seen}"
    obj = get(api, namespace, "chat")
    assert obj["status"]["stableRevision"] == v2
    reasons = [r for _, r, _ in events(api, namespace, "chat")]
    assert reasons.count("Promoted") == 2 and reasons.count("NewRevision") == 2, reasons
    assert all(status == 200 for (_, status) in h.sent), h.sent
    h.assert_no_outage()


def test_a_revision_failing_its_golden_prompts_never_gets_traffic(api, cluster, namespace, operator, prometheus,
                                                                  tmp_path) -> None:
    m = canary(prometheus)  # v1 has no quality gate (every revision with one passes it first, v1 too)
    gated = copy.deepcopy(m)
    gated["spec"]["rollout"]["analysis"]["prePromotion"] = {"goldenPrompts": [
        {"prompt": "Reply with the word ok.", "expect": {"regex": "(?i)\\bok\\b", "maxLatency": "5s"}}]}
    v2m = with_changes(gated, "spec.model.source", "gs://models/gemma-2-9b-it-v2/")
    v1, v2 = revision(m), revision(v2m)
    with Harness(api, namespace, "chat", prometheus, tmp_path, urls_file=operator.revision_urls) as h:
        given_v1_then_v2(api, cluster, namespace, m, v2m, h)
        obj = wait_phase(api, namespace, "chat", "RolledBack", timeout=60)
        assert h.requests_to(v2) == 0, "the revision got traffic before passing its golden prompts"
        keeps_serving(h)
    h.assert_no_outage()
    message = condition(obj, "Degraded")["message"]
    assert 'golden prompt "Reply with the word ok."' in message and "does not match" in message
    assert 'answer: "tok tok tok' in message and message.count("tok") < 60  # the stub's answer, excerpted
    assert obj["status"]["stableRevision"] == v1


def test_a_new_metadata_generation_in_gcs_starts_a_canary_and_a_degraded_one_is_rolled_back_and_pinned(
        api, cluster, namespace, operator, prometheus, gcs, tmp_path) -> None:
    import uuid

    bucket = gcs.client().create_bucket(f"models-{uuid.uuid4().hex[:8]}")

    def publish(folder: str, temperature: float) -> int:
        blob = bucket.blob(f"gemma/{folder}/best_model_metadata.json")
        blob.upload_from_string(json.dumps({"selected_model": "gemma-2-9b-it",
                                            "hyperparameters": {"temperature": temperature}}))
        return blob.generation

    g1 = publish("20251201T120000_abc123", 0.2)
    m = canary(prometheus)
    m["spec"]["model"]["metadata"] = f"gs://{bucket.name}/gemma/"
    with Harness(api, namespace, "chat", prometheus, tmp_path) as h:
        apply(cluster, namespace, m)
        obj = wait_phase(api, namespace, "chat", "Healthy", timeout=60)
        h.wait_serving()
        v1 = obj["status"]["stableRevision"]
        assert obj["status"]["metadata"]["generation"] == g1
        # The pipeline publishes a new selection: a canary starts on its own (no spec change).
        g2 = publish("20251202T090000_def456", 0.9)

        def canary_started() -> str | None:
            return get(api, namespace, "chat")["status"].get("canaryRevision")

        v2 = wait_for(canary_started, timeout=30, what="a canary for the new serving config")
        h.fail(v2)  # the new serving config degrades answers
        obj = wait_phase(api, namespace, "chat", "RolledBack", timeout=90, generation=False)
        assert obj["status"]["stableRevision"] == v1
        records = {r["name"]: r for r in obj["status"]["revisions"]}
        assert records[v2]["metadataGeneration"] == g2 and records[v2]["outcome"] == "RolledBack"
        # Pinned: the same generation is not retried while it stays the newest.
        operator.wait_reconciles(5, "(with registry polls every second)")
        after = get(api, namespace, "chat")["status"]
        assert after["phase"] == "RolledBack" and after.get("canaryRevision") is None
    h.assert_no_outage()  # only v2's deliberate errors
    gw = client.AppsV1Api(api).read_namespaced_deployment(v2, namespace).spec.template.spec.containers[1]
    env = {e.name: e.value for e in gw.env}
    assert env["MODELOPS_METADATA_URI"].endswith("20251202T090000_def456/best_model_metadata.json")
    assert env["MODELOPS_METADATA_GENERATION"] == str(g2)


def test_kubectl_modelops_during_a_live_canary(api, cluster, namespace, operator, prometheus, tmp_path) -> None:
    """The plugin, through the real kubectl, on a canary the operator is really running."""
    import os
    import subprocess
    import sys

    from tests.cluster import build

    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"

    def plugin(*args: str) -> str:
        out = subprocess.run([str(build.kubectl()), "modelops", *args, "-n", namespace,
                              f"--kubeconfig={cluster.kubeconfig}"], capture_output=True, text=True, env=env,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    m = canary(prometheus)
    m["spec"]["rollout"]["canary"]["steps"] = [{"setWeight": 30}, {"pause": {}}, {"setWeight": 60}]
    v2m = with_changes(m, "spec.model.source", "gs://models/gemma-2-9b-it-v2/")
    v1, v2 = revision(m), revision(v2m)
    with Harness(api, namespace, "chat", prometheus, tmp_path) as h:
        given_v1_then_v2(api, cluster, namespace, m, v2m, h)
        wait_phase(api, namespace, "chat", "Paused", timeout=60)
        wait_for(lambda: "Successful" in plugin("get", "chat"), timeout=30, what="an analysis verdict in the plugin")
        out = plugin("get", "chat")
        assert "Paused" in out and v1 in out and v2 in out
        assert "70%" in out and "30%" in out
        current = [line for line in out.splitlines() if "current" in line]
        assert current and "pause" in current[0], out
        assert "error-rate" in out and "Successful" in out
        plugin("promote", "chat")
        obj = wait_phase(api, namespace, "chat", "Healthy", timeout=60)
    h.assert_no_outage()
    assert obj["status"]["stableRevision"] == v2
    history = plugin("history", "chat")
    assert v1 in history and v2 in history and "Superseded" in history and "Serving" in history


# --------------------------------------------------------------------------- the stable path under failure
# Every rollout that ends without the new revision must leave the stable one serving at full
# size, and users must not notice: zero requests without endpoints all along.


def test_service_router_canary_aborted_on_error_rate_keeps_the_stable_serving(
        api, cluster, namespace, operator, prometheus, tmp_path) -> None:
    m = canary(prometheus, router="service")
    v2m = with_changes(m, "spec.model.source", "gs://models/gemma-2-9b-it-broken/")
    v1, v2 = revision(m), revision(v2m)
    with Harness(api, namespace, "chat", prometheus, tmp_path, failing={v2}) as h:
        given_v1_then_v2(api, cluster, namespace, m, v2m, h)
        # the Service selects both revisions while the canary shares traffic: v2 answers some requests
        wait_for(lambda: h.requests_to(v2) > 5, timeout=60, what="the canary's share of users")
        obj = wait_phase(api, namespace, "chat", "RolledBack", timeout=90)
        wait_for(lambda: service_revision(api, namespace, "chat") == v1, timeout=10, what="the Service on v1 alone")
        wait_replicas(api, namespace, v1, 2)
        wait_replicas(api, namespace, v2, 0)
        keeps_serving(h)
    st = obj["status"]
    assert st["stableRevision"] == v1 and "canaryRevision" not in st
    assert "error-rate" in condition(obj, "Degraded")["message"]
    h.assert_no_outage()  # only v2's deliberate errors


def test_service_router_revert_mid_canary_serves_v1_at_full_size(
        api, cluster, namespace, operator, prometheus, tmp_path) -> None:
    """Argo CD syncs a revert while the canary holds half the pods."""
    m, v2m, v1, v2 = held_canary(prometheus, 50, router="service")
    with Harness(api, namespace, "chat", prometheus, tmp_path) as h:
        given_v1_then_v2(api, cluster, namespace, m, v2m, h)
        wait_phase(api, namespace, "chat", "Paused", timeout=60)
        wait_for(lambda: h.requests_to(v2) > 10, timeout=30, what="the canary serving its share")
        assert service_revision(api, namespace, "chat") is None  # the Service selects both revisions
        apply(cluster, namespace, m)  # the revert
        obj = wait_phase(api, namespace, "chat", "Healthy", timeout=60)
        wait_for(lambda: service_revision(api, namespace, "chat") == v1, timeout=10, what="the Service on v1 alone")
        wait_replicas(api, namespace, v1, 2)
        wait_replicas(api, namespace, v2, 0)
        keeps_serving(h)
    assert obj["status"]["stableRevision"] == v1 and "canaryRevision" not in obj["status"]
    h.assert_no_outage()


def test_service_router_revert_at_the_last_step_with_all_traffic_on_the_canary(
        api, cluster, namespace, operator, prometheus, tmp_path) -> None:
    """The canary went to 100 % and waits for a person; Argo CD syncs a revert instead."""
    m = canary(prometheus, router="service")
    m["spec"]["rollout"]["canary"]["steps"] = [{"setWeight": 50}, {"setWeight": 100}, {"pause": {}}]
    v2m = with_changes(m, "spec.model.source", "gs://models/gemma-2-9b-it-v2/")
    v1, v2 = revision(m), revision(v2m)
    with Harness(api, namespace, "chat", prometheus, tmp_path) as h:
        given_v1_then_v2(api, cluster, namespace, m, v2m, h)
        obj = wait_phase(api, namespace, "chat", "Paused", timeout=90)
        assert obj["status"]["canaryWeight"] == 100
        assert replicas(api, namespace, v2) == (2, 2)  # at full size
        wait_for(lambda: h.requests_to(v2) > 10, timeout=30, what="the canary serving")
        apply(cluster, namespace, m)  # the revert
        obj = wait_phase(api, namespace, "chat", "Healthy", timeout=60)
        wait_for(lambda: service_revision(api, namespace, "chat") == v1, timeout=10, what="the Service on v1 alone")
        wait_replicas(api, namespace, v1, 2)
        wait_replicas(api, namespace, v2, 0)
        keeps_serving(h)
    assert obj["status"]["stableRevision"] == v1
    h.assert_no_outage()


def test_service_router_degraded_bake_rolls_back_to_v1_at_full_size(
        api, cluster, namespace, operator, prometheus, tmp_path) -> None:
    m = canary(prometheus, router="service", bakeTime="60s")
    m["spec"]["rollout"]["canary"]["steps"] = [{"setWeight": 50}, {"pause": {"duration": "4s"}}]
    v2m = with_changes(m, "spec.model.source", "gs://models/gemma-2-9b-it-v2/")
    v1, v2 = revision(m), revision(v2m)
    with Harness(api, namespace, "chat", prometheus, tmp_path) as h:
        given_v1_then_v2(api, cluster, namespace, m, v2m, h)
        wait_for(lambda: get(api, namespace, "chat")["status"].get("stableRevision") == v2, timeout=120,
                 what="the promotion")
        wait_for(lambda: service_revision(api, namespace, "chat") == v2, timeout=10, what="the Service on v2")
        keeps_serving(h, 10)
        warm_during_bake = replicas(api, namespace, v1)
        h.fail(v2)  # it degrades during the bake
        obj = wait_phase(api, namespace, "chat", "RolledBack", timeout=60)
        wait_for(lambda: service_revision(api, namespace, "chat") == v1, timeout=10, what="the Service back on v1")
        wait_replicas(api, namespace, v1, 2)
        wait_replicas(api, namespace, v2, 0)
        keeps_serving(h)
    assert obj["status"]["stableRevision"] == v1
    assert f"rolled back from {v2} to {v1}" in condition(obj, "Degraded")["message"]
    h.assert_no_outage()  # only v2's deliberate errors
    assert warm_during_bake == (2, 2), f"{v1} was not kept warm during the bake: {warm_during_bake}"


def test_gateway_api_revert_mid_canary_serves_v1_at_full_size(
        api, cluster, namespace, operator, prometheus, tmp_path) -> None:
    m, v2m, v1, v2 = held_canary(prometheus, 50)
    with Harness(api, namespace, "chat", prometheus, tmp_path) as h:
        given_v1_then_v2(api, cluster, namespace, m, v2m, h)
        wait_phase(api, namespace, "chat", "Paused", timeout=60)
        # status is written first, the route right after it in the same reconcile
        wait_for(lambda: route_weights(api, namespace) == {v1: 50, v2: 50}, timeout=10, what="50% to the canary")
        wait_for(lambda: h.requests_to(v2) > 10, timeout=30, what="the canary serving its share")
        apply(cluster, namespace, m)  # the revert
        obj = wait_phase(api, namespace, "chat", "Healthy", timeout=60)
        wait_for(lambda: route_weights(api, namespace) == {v1: 100}, timeout=10, what="all traffic on v1")
        wait_replicas(api, namespace, v1, 2)
        wait_replicas(api, namespace, v2, 0)
        keeps_serving(h)
    assert obj["status"]["stableRevision"] == v1 and "canaryRevision" not in obj["status"]
    h.assert_no_outage()
