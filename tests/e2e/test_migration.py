"""The migration from a hosted API to a model served on our own GPUs, end to end — the README's
walkthrough with the manifests of ``examples/migration/``, a shadow step, and structured output judged
on real traffic — on the local cluster with real Prometheus,
real gateway processes standing in for each revision's pods, configured as the pods are (their
prices, a hosted API's model and key, the feedback key: ``rollout_harness.PodConfig``), users sending
requests all along and rating the answers.

The hosted provider is the stub OpenAI-compatible server (no route leaves this machine), which
requires the API key the test puts in the Secret: the hosted revision serves only if the operator
mounted the right one. Departures from the examples, each for a test's time scale: one replica,
intervals of seconds, fewer samples; no golden prompts (their gate has its own scenarios) and no
time-to-first-token ratio (two stubs on loopback answer within the same millisecond bucket, so the
ratio is noise)."""

from __future__ import annotations

import base64

import pytest
from kubernetes import client

from tests.support.prometheus import PrometheusServer
from tests.support.receiver import Receiver
from tests.support.wait import wait_for

from .rollout_harness import Harness
from .steps import apply, condition, events, example, get, service_revision, wait_phase, with_changes
from .test_rollouts import canary, given_v1_then_v2, keeps_serving, notified, revision

PROVIDER_KEY = "sk-e2e-provider-key"  # what the stub provider checks: the Secret's value
FEEDBACK_KEY = "0" * 64  # signs response ids; shared by a revision's replicas
HOSTED_URL = "http://generativelanguage.test/v1beta/openai"  # mapped by the harness to the stub provider
USERS = 200


@pytest.fixture
def secrets(api, namespace: str) -> None:
    """The Secrets the examples' comments tell users to create."""
    core = client.CoreV1Api(api)
    for name, key, value in (("gemini-api", "api-key", PROVIDER_KEY), ("chat-feedback", "key", FEEDBACK_KEY)):
        core.create_namespaced_secret(namespace, client.V1Secret(
            metadata=client.V1ObjectMeta(name=name), data={key: base64.b64encode(value.encode()).decode()}))


def hosted() -> dict:
    """Step 1: the hosted API served through ModelOps."""
    m = example("migration/01-hosted-gemini.yaml")
    m["spec"]["engine"]["hosted"]["url"] = HOSTED_URL
    m["spec"]["replicas"] = 1
    return m


def challenger(prometheus: PrometheusServer, *metrics: dict, duration: str = "20s") -> dict:
    """Step 2: Gemma on an L4 as the A/B challenger, judged on ``metrics`` (besides errors)."""
    m = example("migration/02-gemma-challenger.yaml")
    m["spec"]["replicas"] = 1
    ro = m["spec"]["rollout"]
    ro["notify"] = ["e2e", "e2e-slack"]
    ro["abTest"]["duration"] = duration
    ro["analysis"].update(interval="2s", window="12s", failureLimit=1,
                          provider={"prometheus": {"address": prometheus.address}})
    del ro["analysis"]["prePromotion"]
    ro["analysis"]["metrics"] = [{"name": "error-rate", "template": "errorRate", "max": 0.05, "minSamples": 5},
                                 *metrics]
    return m


def analysis(api, namespace: str, name: str) -> dict:
    return get(api, namespace, "chat")["status"].get("analysis", {}).get(name, {})


def test_hosted_api_against_gemma_ab_by_user_promoted_on_what_users_said(
        api, cluster, namespace, operator, prometheus, notifications: Receiver, secrets, tmp_path) -> None:
    v1m = hosted()
    v2m = challenger(prometheus, {"name": "satisfaction", "template": "satisfaction", "minRatioToStable": 0.95,
                                  "minSamples": 10})
    v1, v2 = revision(v1m), revision(v2m)
    # Users like Gemma's answers more than the API's: 85 % thumbs up against 60 %.
    with Harness(api, namespace, "chat", prometheus, tmp_path, users=USERS, taste={v1: 0.6, v2: 0.85},
                 provider_key=PROVIDER_KEY) as h:
        apply(cluster, namespace, v1m)
        obj = wait_phase(api, namespace, "chat", "Healthy")
        assert obj["status"]["stableRevision"] == v1
        h.wait_serving()
        apply(cluster, namespace, v2m)
        wait_for(lambda: get(api, namespace, "chat")["status"].get("canaryWeight") == 20, timeout=60,
                 what="the A/B test at 20% of users")
        obj = get(api, namespace, "chat")
        assert condition(obj, "Progressing")["reason"] == "ABTest"
        assert service_revision(api, namespace, "chat") == v1  # the hosted revision's gateway assigns users
        # While it runs, status shows what users said of each variant (the challenger's ratings were
        # sent to the hosted revision's gateway, the one users reach, and forwarded to Gemma's).
        sat = wait_for(lambda: (a := analysis(api, namespace, "satisfaction")).get("stableValue") is not None
                       and a.get("value") is not None and a, timeout=60, what="satisfaction for both variants")
        assert sat["value"] > sat["stableValue"], sat
        print(f"satisfaction: Gemma {sat['value']:.2f}, the API {sat['stableValue']:.2f} ({sat.get('samples')} ratings)")
        obj = wait_phase(api, namespace, "chat", "Healthy", timeout=120)
        assert obj["status"]["stableRevision"] == v2
        wait_for(lambda: service_revision(api, namespace, "chat") == v2, timeout=20, what="every user on Gemma")
    h.assert_no_outage()
    # (the stand-ins have stopped: Prometheus's last samples of their series)
    # Both variants served users, and users' ratings of Gemma reached Gemma across the forward.
    assert h.requests_to(v1) > 0 and h.requests_to(v2) > 0, h.summary()
    forwarded = {(rev, status) for rev, _, status in h.feedback if rev == v2}
    assert (v2, 200) in forwarded, h.feedback
    rated = prometheus.query(f'sum(max_over_time(modelops_gateway_feedback_total{{revision="{v2}"}}[10m]))')
    assert rated and float(rated[0]["value"][1]) >= 10, rated
    promoted = [m for _, r, m in events(api, namespace, "chat") if r == "Promoted"]
    assert len(promoted) == 2 and v2 in promoted[-1], promoted
    got = [b for b in notified(notifications, namespace, "started", "promoted") if b["subject"] == v2]
    assert [b["data"]["kind"] for b in got] == ["started", "promoted"], got
    assert got[-1]["data"]["analysis"]["satisfaction"]["verdict"] == "Successful"


def test_gemma_costing_more_per_token_than_the_hosted_api_is_rolled_back(
        api, cluster, namespace, operator, prometheus, notifications: Receiver, secrets, tmp_path) -> None:
    v1m = hosted()
    # At this test's traffic an L4 by the hour costs far more per token than the API's list price.
    v2m = challenger(prometheus, {"name": "cost", "template": "costPerMillionTokens", "maxRatioToStable": 3.0,
                                  "minSamples": 5}, duration="5m")
    v1, v2 = revision(v1m), revision(v2m)
    with Harness(api, namespace, "chat", prometheus, tmp_path, users=USERS, provider_key=PROVIDER_KEY) as h:
        given_v1_then_v2(api, cluster, namespace, v1m, v2m, h)
        obj = wait_phase(api, namespace, "chat", "RolledBack", timeout=120)
        assert obj["status"]["stableRevision"] == v1
        assert "cost" in condition(obj, "Degraded")["message"], condition(obj, "Degraded")
        wait_for(lambda: h.requests_to(v1) > 0 and not client.AppsV1Api(api).read_namespaced_deployment(
            v2, namespace).spec.replicas, timeout=60, what="Gemma scaled down")
    h.assert_no_outage()
    (rolled_back,) = [b for b in notified(notifications, namespace, "rolledback")
                      if b["data"]["kind"] == "rolledback"]
    assert rolled_back["subject"] == v2 and "cost" in rolled_back["data"]["message"] \
        and "maxRatioToStable 3" in rolled_back["data"]["message"], rolled_back["data"]["message"]
    # The verdict in numbers: dollars per million tokens, Gemma's against the API's.
    cost = rolled_back["data"]["analysis"]["cost"]
    assert cost["verdict"] == "Failed" and cost["value"] > 3 * cost["stableValue"] > 0, cost
    print(f"cost per million output tokens: Gemma ${cost['value']:.2f}, the API ${cost['stableValue']:.2f}")


def test_a_shadow_step_catches_a_failing_revision_before_any_user_reaches_it(
        api, cluster, namespace, operator, prometheus, notifications: Receiver, tmp_path) -> None:
    v1m = canary(prometheus)
    v1m["spec"]["rollout"]["canary"]["steps"] = [{"mirror": {"percent": 50, "duration": "30s"}},
                                                  {"setWeight": 20}, {"pause": {"duration": "5s"}}]
    v2m = with_changes(v1m, "spec.model.source", "gs://models/gemma-2-9b-it-v2/")
    v1, v2 = revision(v1m), revision(v2m)
    with Harness(api, namespace, "chat", prometheus, tmp_path, failing={v2}) as h:
        given_v1_then_v2(api, cluster, namespace, v1m, v2m, h)
        obj = wait_phase(api, namespace, "chat", "RolledBack", timeout=120)
        assert obj["status"]["stableRevision"] == v1
        assert "error-rate" in condition(obj, "Degraded")["message"]
    h.assert_no_outage()
    # The shadow answered copies of real requests (and failed them) ...
    shadowed = prometheus.query(f'sum(max_over_time(modelops_gateway_requests_total{{revision="{v2}"}}[10m]))')
    assert shadowed and float(shadowed[0]["value"][1]) >= 5, shadowed
    # ... while no user was ever sent to it: every request users made was answered by v1.
    assert h.requests_to(v2) == 0 and h.requests_to(v1) > 0, h.summary()
    kinds = [b["data"]["kind"] for b in notified(notifications, namespace, "rolledback") if b["subject"] == v2]
    assert kinds[0] == "started" and kinds[-1] == "rolledback", kinds


def test_a_revision_whose_answers_stop_being_json_is_rolled_back_on_invalid_json_rate(
        api, cluster, namespace, operator, prometheus, notifications: Receiver, tmp_path) -> None:
    """Clients ask for JSON (``response_format``); v2's engine answers plain text anyway (a model or
    engine setting that drops JSON mode): the gateway judges every answer, and the canary is rolled
    back on ``invalidJsonRate`` while v1's answers, judged the same way, are all valid."""
    v1m = canary(prometheus)
    v1m["spec"]["rollout"]["analysis"]["metrics"].append(
        {"name": "invalid-json", "template": "invalidJsonRate", "max": 0.02, "minSamples": 5})
    v2m = with_changes(v1m, "spec.model.source", "gs://models/gemma-2-9b-it-v2/")
    v1, v2 = revision(v1m), revision(v2m)
    with Harness(api, namespace, "chat", prometheus, tmp_path, json_answers=True) as h:
        h.garble(v2)
        given_v1_then_v2(api, cluster, namespace, v1m, v2m, h)
        obj = wait_phase(api, namespace, "chat", "RolledBack", timeout=120)
        assert obj["status"]["stableRevision"] == v1
        assert "invalid-json" in condition(obj, "Degraded")["message"], condition(obj, "Degraded")
        keeps_serving(h)
    h.assert_no_outage()  # answers that are not JSON are still answers: users got them
    assert h.requests_to(v2) > 0, h.summary()

    def judged(rev: str, result: str) -> float:
        got = prometheus.query(f'sum(max_over_time(modelops_gateway_structured_output_total{{revision="{rev}",'
                               f'result="{result}"}}[10m]))')
        return float(got[0]["value"][1]) if got else 0.0

    assert judged(v1, "valid") > 0 and judged(v1, "invalid_json") == 0
    assert judged(v2, "invalid_json") > 0 and judged(v2, "valid") == 0
    (rolled_back,) = [b for b in notified(notifications, namespace, "rolledback")
                      if b["data"]["kind"] == "rolledback"]
    assert "invalid-json" in rolled_back["data"]["message"] and "above max 0.02" in rolled_back["data"]["message"]


def test_a_revision_whose_pods_never_come_up_fails_its_deadline_and_receivers_are_told(
        api, cluster, namespace, operator, prometheus, notifications: Receiver, tmp_path) -> None:
    """The ``failed`` notification: v2's pods can never be created (its ServiceAccount does not
    exist, so the ReplicaSet is refused), so the rollout fails its progressDeadline; v1 serves on."""
    v1m = canary(prometheus)
    v1m["spec"]["rollout"]["progressDeadline"] = "15s"
    v2m = with_changes(v1m, "spec.serviceAccountName", "no-such-account")
    v1, v2 = revision(v1m), revision(v2m)
    with Harness(api, namespace, "chat", prometheus, tmp_path) as h:
        given_v1_then_v2(api, cluster, namespace, v1m, v2m, h)
        obj = wait_phase(api, namespace, "chat", "Failed", timeout=120)
        assert obj["status"]["stableRevision"] == v1
        keeps_serving(h)
    h.assert_no_outage()
    assert h.requests_to(v2) == 0
    (failed,) = [b for b in notified(notifications, namespace, "failed") if b["data"]["kind"] == "failed"]
    assert failed["subject"] == v2 and "progressDeadline 15s" in failed["data"]["message"], failed["data"]
