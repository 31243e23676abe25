"""Rollouts on real pods, under continuous traffic through the ModelDeployment's Service
(kube-proxy), judged by real analysis (Prometheus scraping the pods it discovered).

Router: ``service`` only. The ``gateway-api`` router needs a data plane that splits an
HTTPRoute's weights; none runs here (Envoy-based gateways need an Envoy binary no
reachable registry serves), so its rendering is covered by the stand-in e2e tier.
"""

from __future__ import annotations

import copy
import json
from collections import defaultdict

from kubernetes import client

from tests.e2e.steps import apply, condition, events, get, wait_phase
from tests.support import realpods
from tests.support.wait import wait_for

from .test_serving import healthy, smollm2

ANALYSIS = {"interval": "4s", "window": "20s", "failureLimit": 1,
            "provider": {"prometheus": {"address": realpods.PROMETHEUS_IN_CLUSTER}},
            "metrics": [{"name": "error-rate", "template": "errorRate", "max": 0.05, "minSamples": 5}]}


def canary(steps: list[dict], name: str = "smol", **rollout) -> dict:
    m = smollm2(name)
    m["spec"]["rollout"] = {"strategy": "Canary", "canary": {"steps": steps}, "analysis": copy.deepcopy(ANALYSIS),
                            **rollout}
    return m


def changed(m: dict, num_ctx: int = 2048, **engine) -> dict:
    """The same model with another engine setting: a new revision."""
    out = copy.deepcopy(m)
    out["spec"]["engine"]["ollama"]["numCtx"] = num_ctx
    out["spec"]["engine"].update(engine)
    return out


def stable(api, name: str) -> str:
    return get(api, realpods.NS_MODELS, name).get("status", {}).get("stableRevision", "")


def serving(cluster, api, m: dict) -> str:
    """Given ``m`` applied and Healthy: its stable revision."""
    apply(cluster, realpods.NS_MODELS, m)
    healthy(cluster, api, m["metadata"]["name"])
    return stable(api, m["metadata"]["name"])


def test_canary_promoted_by_real_analysis_under_traffic(cluster, api, infra, models):
    v1 = canary([{"setWeight": 50}, {"pause": {"duration": "20s"}}, {"analysis": {"duration": "12s"}}])
    old = serving(cluster, api, v1)
    with realpods.Traffic(realpods.service_url(api, models, "smol")) as traffic:
        traffic.wait_served(10)
        apply(cluster, models, changed(v1))
        wait_for(lambda: stable(api, "smol") not in ("", old), timeout=400,
                 what=f"the canary promoted\n{realpods.diagnose(cluster, models)}")
        new = stable(api, "smol")
        healthy(cluster, api, "smol")
        traffic.wait_served(10)
    traffic.assert_no_failure()
    served = traffic.by_revision()
    assert served[old] > 0 and served[new] > 0, served  # both revisions answered users during the canary
    analysis = get(api, models, "smol")["status"]["analysis"]["error-rate"]
    assert analysis["successful"] >= 1 and analysis["samples"] >= 5, analysis
    assert any(r == "Promoted" or "promot" in m.lower() for _, r, m in events(api, models, "smol"))


def test_revision_that_cannot_start_fails_and_stable_keeps_serving(cluster, api, infra, models):
    v1 = canary([{"setWeight": 50}, {"pause": {}}], progressDeadline="60s")
    old = serving(cluster, api, v1)
    # A real fault: `ollama serve` refuses an unknown flag, the engine container exits, the pod never gets ready.
    broken = changed(v1, args=["--no-such-flag"])
    with realpods.Traffic(realpods.service_url(api, models, "smol")) as traffic:
        traffic.wait_served(5)
        apply(cluster, models, broken)
        md = wait_phase(api, models, "smol", "Failed", timeout=240)
        assert condition(md, "Progressing")["reason"] == "ProgressDeadlineExceeded", md["status"]
        traffic.wait_served(10)
    traffic.assert_no_failure()
    assert set(traffic.by_revision()) == {old}
    md = get(api, models, "smol")
    assert md["status"]["stableRevision"] == old
    assert client.AppsV1Api(api).read_namespaced_deployment(old, models).status.available_replicas == 1


def test_degraded_serving_config_is_rolled_back_by_real_analysis_under_traffic(cluster, api, infra, models):
    """A new serving config from GCS (the model-selection workflow's ``best_model_metadata.json``)
    that makes every answer run to 48 tokens (12 times the stable's): the canary's p95 latency against the stable's,
    measured by Prometheus on both pods, rolls it back; users never see an error."""
    fast = infra.upload("models", "configs/fast/best_model_metadata.json",
                        data=json.dumps({"selected_model": "smollm2", "hyperparameters": {"max_tokens": 4}}).encode())
    slow = infra.upload("models", "configs/slow/best_model_metadata.json", data=json.dumps(
        {"selected_model": "smollm2", "hyperparameters": {"max_tokens": 48, "temperature": 1.5}}).encode())
    v1 = canary([{"setWeight": 50}, {"pause": {"duration": "90s"}}])
    v1["spec"]["model"]["metadata"] = fast
    v1["spec"]["rollout"]["analysis"]["metrics"].append(
        {"name": "latency-p95", "template": "latencyP95", "maxRatioToStable": 3, "minSamples": 5})
    old = serving(cluster, api, v1)
    v2 = copy.deepcopy(v1)
    v2["spec"]["model"]["metadata"] = slow
    # Requests leave max_tokens to the serving config, as clients of a managed model do.
    with realpods.Traffic(realpods.service_url(api, models, "smol"), max_tokens=None) as traffic:
        traffic.wait_served(10)
        apply(cluster, models, v2)
        md = wait_phase(api, models, "smol", "RolledBack", timeout=400)
        traffic.wait_served(5)
    traffic.assert_no_failure()
    assert md["status"]["stableRevision"] == old
    verdict = md["status"]["analysis"]["latency-p95"]
    assert verdict["verdict"] == "Failed" and verdict["value"] > 3 * verdict["stableValue"], verdict
    assert len(traffic.by_revision()) == 2  # the degraded revision did serve users before it was rolled back


def test_sticky_ab_split_at_20_percent_through_the_kubelets_configmap_refresh(cluster, api, infra, models):
    m = smollm2()
    old = serving(cluster, api, m)
    ab = changed(m)
    ab["spec"]["rollout"] = {"strategy": "ABTest", "abTest": {"weight": 20, "stickyHeader": "x-user-id"}}
    apply(cluster, models, ab)
    url = realpods.service_url(api, models, "smol")
    with realpods.Traffic(url, users=60) as traffic:
        # The split reaches the stable gateway as a file of its mounted ConfigMap, when the kubelet refreshes it.
        wait_for(lambda: len(traffic.by_revision()) == 2, timeout=300,
                 what=f"the challenger to answer users\n{realpods.diagnose(cluster, models)}")
        start = len(traffic.answers)
        wait_for(lambda: len(traffic.answers) >= start + 180, timeout=300, what="180 more answers")
    traffic.assert_no_failure()
    seen: dict[str, set[str]] = defaultdict(set)
    for a in traffic.answers[start:]:
        seen[a.user].add(a.revision)
    assert all(len(revs) == 1 for revs in seen.values()), {u: r for u, r in seen.items() if len(r) > 1}
    challenger_users = sum(1 for revs in seen.values() if old not in revs)
    share = challenger_users / len(seen)
    assert 0.05 <= share <= 0.40, f"{challenger_users}/{len(seen)} users on the challenger"


def test_leader_operator_pod_killed_mid_rollout_the_rollout_finishes(cluster, api, infra, models):
    """The chart runs two operator replicas; the one holding the Lease is killed mid-canary. The
    standby takes the Lease over and finishes the rollout (the Deployment also replaces the pod)."""
    v1 = canary([{"setWeight": 50}, {"pause": {"duration": "40s"}}])
    old = serving(cluster, api, v1)
    with realpods.Traffic(realpods.service_url(api, models, "smol")) as traffic:
        traffic.wait_served(5)
        apply(cluster, models, changed(v1))
        wait_for(lambda: get(api, models, "smol").get("status", {}).get("currentStep") == 1, timeout=300,
                 what=f"the canary paused at 50 %\n{realpods.diagnose(cluster, models)}")
        wait_for(lambda: realpods.leader_pod(api) is not None, timeout=60, what="an operator pod holding the Lease")
        killed = realpods.leader_pod(api)
        assert killed is not None
        cluster.kubectl("delete", "pod", "-n", realpods.NS_OPERATOR, killed.metadata.name,
                        "--grace-period=0", "--force")
        wait_for(lambda: (p := realpods.leader_pod(api)) is not None and p.metadata.uid != killed.metadata.uid,
                 timeout=120, what="another operator pod to hold the Lease")
        wait_for(lambda: stable(api, "smol") not in ("", old), timeout=300,
                 what=f"the new leader to finish the rollout\n{realpods.diagnose(cluster, models)}")
        healthy(cluster, api, "smol")
        traffic.wait_served(5)
    traffic.assert_no_failure()
