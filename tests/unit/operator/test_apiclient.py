"""The operator's API client (lightkube) sends what the kubernetes client sent: the same verbs,
paths, field manager, content types and bodies, with the replica's user agent and a timeout on
every request; failures mean what they meant (404 and 409 where they are expected, the rest
raised and counted by status). kopf logs in with the same credentials, never through the
kubernetes client library. A stand-in apiserver answers (tests/unit/operator/fakeapi.py)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx2
import kopf
import pytest
from lightkube import ApiError

from modelops import metrics
from modelops.adapters import apiclient
from modelops.adapters import controller
from modelops.adapters.apiclient import ApiFailure
from modelops.adapters.cache import Snapshot
from modelops.adapters.controller import reconcile_once
from modelops.adapters.kube import Kube
from modelops.config import OperatorConfig
from modelops.domain.observed import Observed, RevisionState
from modelops.handlers import modeldeployment
from modelops.planning.contract import Event, Owner, Plan

from .fakeapi import USER_AGENT, FakeApi, plain, status, write_kubeconfig

pytestmark = pytest.mark.unit

OWNER = Owner("chat", "ml", "uid-1", 1, {}, {"phase": "Progressing", "message": "step 1/2"})
APPLIED = {"modelops.dev/applied-hash": "h2"}
MD = "/apis/modelops.dev/v1alpha1/namespaces/ml/modeldeployments/chat"
SELECTOR = "modelops.dev/deployment=chat,app.kubernetes.io/managed-by=modelops"


def deployment(name: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "ml", "annotations": APPLIED},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "engine", "image": "vllm:1"}]}}}}


def test_every_request_carries_the_replicas_user_agent_and_a_timeout() -> None:
    api = FakeApi({("GET", MD): status(404, "NotFound")})
    assert Kube(api.client(timeout=7.5)).read_fresh("ml", "chat") is None
    [sent] = api.sent
    assert sent.headers["User-Agent"] == USER_AGENT == "modelops-operator/0.1.0 (modelops-0)"
    assert (sent.headers["Accept"], sent.headers["Authorization"]) == ("application/json", "Bearer t0ken")
    assert sent.timeout == {"connect": 7.5, "read": 7.5, "write": 7.5, "pool": 7.5}


def test_a_plans_writes_are_the_requests_the_kubernetes_client_sent() -> None:
    api = FakeApi()
    kube = Kube(api.client(), field_manager="modelops")
    plan = Plan(apply=[deployment("chat-5b6a21"),
                       {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "chat", "namespace": "ml",
                                                                           "annotations": APPLIED}, "spec": {}},
                       {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "chat-split", "namespace": "ml",
                                                                             "annotations": APPLIED}, "data": {}},
                       {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                        "metadata": {"name": "chat", "namespace": "ml", "annotations": APPLIED}, "spec": {}}],
                replicas={"chat-0ld": 0}, delete=[("Deployment", "chat-01der"), ("Service", "chat-canary"),
                                                  ("HTTPRoute", "chat-canary")],
                status={"phase": "Healthy"}, events=[Event("Normal", "Promoted", "x" * 2000)],
                clear_annotations=["modelops.dev/promote"])
    result = kube.execute(OWNER, plan, Observed(revisions={"chat-0ld": RevisionState("chat-0ld", replicas=2)}))
    apply = "fieldManager=modelops&force=true"
    assert [s.line for s in api.sent] == [
        f"PATCH {MD}",
        f"PATCH {MD}/status",
        f"PATCH /apis/apps/v1/namespaces/ml/deployments/chat-5b6a21?{apply}",
        f"PATCH /api/v1/namespaces/ml/services/chat?{apply}",
        f"PATCH /api/v1/namespaces/ml/configmaps/chat-split?{apply}",
        f"PATCH /apis/gateway.networking.k8s.io/v1/namespaces/ml/httproutes/chat?{apply}",
        "PATCH /apis/apps/v1/namespaces/ml/deployments/chat-0ld/scale",
        "DELETE /apis/apps/v1/namespaces/ml/deployments/chat-01der?propagationPolicy=Background",
        "DELETE /api/v1/namespaces/ml/services/chat-canary",
        "DELETE /apis/gateway.networking.k8s.io/v1/namespaces/ml/httproutes/chat-canary",
        "POST /api/v1/namespaces/ml/events"]
    content = [s.headers.get("Content-Type") for s in api.sent]
    assert content == ["application/merge-patch+json"] * 2 + ["application/apply-patch+yaml"] * 4 + [
        "application/merge-patch+json", None, None, None, "application/json"]
    annotations, status_patch, applied, scale = api.sent[0], api.sent[1], api.sent[2], api.sent[6]
    assert annotations.body == {"metadata": {"annotations": {"modelops.dev/promote": None}}}
    assert status_patch.body == {"status": {"phase": "Healthy", "message": None}}  # a merge patch of our fields
    assert applied.body == deployment("chat-5b6a21")  # the object as planned, nothing added
    assert scale.body == {"spec": {"replicas": 0}}
    event = api.sent[-1].body
    assert event["involvedObject"] == {"apiVersion": "modelops.dev/v1alpha1", "kind": "ModelDeployment",
                                       "name": "chat", "namespace": "ml", "uid": "uid-1"}
    assert event["metadata"]["name"].startswith("chat.") and event["metadata"]["namespace"] == "ml"
    assert (event["reason"], event["type"], len(event["message"]), event["count"]) == ("Promoted", "Normal", 1024, 1)
    assert event["source"] == {"component": "modelops-operator"}
    assert (event["reportingComponent"], event["reportingInstance"]) == ("modelops.dev/operator", "modelops-operator")
    assert event["firstTimestamp"] == event["lastTimestamp"] and event["firstTimestamp"].endswith("Z")
    # Only applies name a field manager: the merge patches are recorded under the user agent's name.
    assert [s for s in api.sent if "fieldManager" in s.params] == api.sent[2:6]
    assert result.applied == ["Deployment/chat-5b6a21", "Service/chat", "ConfigMap/chat-split", "HTTPRoute/chat"]
    assert (result.scaled, result.deleted) == (["chat-0ld=0"], ["Deployment/chat-01der", "Service/chat-canary",
                                                                 "HTTPRoute/chat-canary"])
    assert [str(e) for e in result.expectations] == [
        "ModelDeployment ml/chat@42", "ModelDeployment ml/chat@42", "Deployment ml/chat-5b6a21@42",
        "Service ml/chat@42", "ConfigMap ml/chat-split@42", "HTTPRoute ml/chat@42", "Deployment ml/chat-0ld@42",
        "Deployment ml/chat-01der@deleted", "Service ml/chat-canary@deleted", "HTTPRoute ml/chat-canary@deleted"]


def test_what_is_already_gone_is_not_an_error() -> None:
    """NotFound on scale and delete is success (a JSON Status, or the plain "404 page not found"
    of an API group that is not served): the write is not counted, the watch must show it gone."""
    api = FakeApi({("PATCH", "/apis/apps/v1/namespaces/ml/deployments/chat-0ld/scale"): status(404, "NotFound"),
                   ("DELETE", "/apis/apps/v1/namespaces/ml/deployments/chat-01der"): status(404, "NotFound"),
                   ("DELETE", "/apis/gateway.networking.k8s.io/v1/namespaces/ml/httproutes/chat"):
                       plain(404, "404 page not found\n")})
    plan = Plan(replicas={"chat-0ld": 0}, delete=[("Deployment", "chat-01der"), ("HTTPRoute", "chat")])
    result = Kube(api.client()).execute(OWNER, plan, Observed(revisions={"chat-0ld": RevisionState("chat-0ld", 2)}))
    assert (result.scaled, result.deleted) == ([], [])
    assert [str(e) for e in result.expectations] == ["Deployment ml/chat-01der@deleted", "HTTPRoute ml/chat@deleted"]


@pytest.mark.parametrize("answer", [status(403, "Forbidden"), status(409, "Conflict"), status(410, "Gone"),
                                    status(422, "Invalid"), status(500, "InternalError"),
                                    plain(503, "upstream connect error")])
def test_any_other_failure_fails_the_reconcile_and_is_counted_by_status(
        answer: httpx2.Response, monkeypatch: pytest.MonkeyPatch) -> None:
    code = answer.status_code
    api = FakeApi({("PATCH", "/apis/apps/v1/namespaces/ml/deployments/chat-5b6a21"): answer})
    monkeypatch.setattr(controller.reconcile, "plan", lambda *_, **__: Plan(apply=[deployment("chat-5b6a21")]))
    md = {"metadata": {"name": "chat", "namespace": "ml", "uid": "uid-1"}, "spec": {}, "status": {}}
    counted = metrics.API_ERRORS.labels(str(code))._value.get()
    with pytest.raises(ApiFailure) as raised:
        reconcile_once(Kube(api.client()), OperatorConfig(), Snapshot(md, Observed()))
    assert apiclient.status_of(raised.value) == code
    # lightkube's ApiError when the answer is a Status; the status counts either way.
    assert isinstance(raised.value, ApiError) == (answer.headers["Content-Type"] == "application/json")
    assert metrics.API_ERRORS.labels(str(code))._value.get() == counted + 1


def test_an_event_the_apiserver_refuses_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeApi({("POST", "/api/v1/namespaces/ml/events"): status(403, "Forbidden")})
    with caplog.at_level(logging.WARNING, "modelops.adapters.kube"):
        Kube(api.client()).event(OWNER, Event("Warning", "RolledBack", "error rate"))
    assert "could not post event RolledBack: Forbidden" in caplog.text


def test_the_fallback_read_gives_the_objects_as_the_watch_does() -> None:
    """The JSON, as kopf's watches give it to the cache: the custom resources as sent, the built-in
    kinds back from lightkube's models; an HTTPRoute list of a cluster without Gateway API is empty."""
    md = {"apiVersion": "modelops.dev/v1alpha1", "kind": "ModelDeployment",
          "metadata": {"name": "chat", "namespace": "ml", "uid": "uid-1", "resourceVersion": "5",
                       "generation": 2, "annotations": {"modelops.dev/promote": ""}},
          "spec": {"replicas": 2}, "status": {"phase": "Healthy"}}
    labels = {"modelops.dev/deployment": "chat", "modelops.dev/revision": "chat-5b6a21",
              "app.kubernetes.io/managed-by": "modelops"}
    dep = {**deployment("chat-5b6a21"), "status": {"readyReplicas": 1, "availableReplicas": 1, "updatedReplicas": 1,
                                                   "conditions": [{"type": "Available", "status": "True",
                                                                   "lastTransitionTime": "2025-01-02T03:04:05Z"}]}}
    dep["metadata"] = {**dep["metadata"], "labels": labels, "resourceVersion": "9",
                       "creationTimestamp": "2025-01-02T03:04:05Z"}
    dep["spec"]["template"]["metadata"]["labels"]["modelops.dev/engine"] = "vllm"
    dep["spec"]["replicas"] = 2  # one pod cannot be placed
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "chat-5b6a21-x", "namespace": "ml",
                                                           "labels": labels},
           "spec": {"containers": [{"name": "engine"}]},
           "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                      "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}}

    def listing(*items: dict) -> httpx2.Response:
        return httpx2.Response(200, json={"kind": "List", "apiVersion": "v1", "metadata": {}, "items": list(items)})

    api = FakeApi({("GET", MD): httpx2.Response(200, json=md),
                   ("GET", "/apis/apps/v1/namespaces/ml/deployments"): listing(dep),
                   ("GET", "/api/v1/namespaces/ml/pods"): listing(pod),
                   ("GET", "/apis/gateway.networking.k8s.io/v1/namespaces/ml/httproutes"):
                       plain(404, "404 page not found\n")})
    snapshot = Kube(api.client()).read_fresh("ml", "chat")
    assert [s.line for s in api.sent] == [f"GET {MD}"] + [
        f"GET {path}?labelSelector={SELECTOR}" for path in (
            "/apis/apps/v1/namespaces/ml/deployments", "/api/v1/namespaces/ml/services", "/api/v1/namespaces/ml/pods",
            "/apis/gateway.networking.k8s.io/v1/namespaces/ml/httproutes")]
    assert snapshot is not None
    assert snapshot.body["metadata"]["annotations"] == {"modelops.dev/promote": ""}
    [rev] = snapshot.observed.revisions.values()
    assert (rev.name, rev.replicas, rev.ready, rev.available_condition, rev.created, rev.applied_hash, rev.engine,
            rev.image) == ("chat-5b6a21", 2, 1, True, "2025-01-02T03:04:05Z", "h2", "vllm", "vllm:1")
    assert rev.unschedulable == "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."


def test_a_listing_that_fails_otherwise_fails_the_read() -> None:
    api = FakeApi({("GET", MD): httpx2.Response(200, json={"metadata": {"name": "chat", "namespace": "ml"}}),
                   ("GET", "/api/v1/namespaces/ml/services"): status(403, "Forbidden")})
    with pytest.raises(ApiError) as raised:
        Kube(api.client()).read_fresh("ml", "chat")
    assert apiclient.status_of(raised.value) == 403


# ---------------------------------------------------------------------- where to connect, and kopf's login
@pytest.fixture
def no_pod(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Outside a pod, with a kubeconfig."""
    monkeypatch.setattr(apiclient, "SERVICE_ACCOUNT", str(tmp_path / "no-serviceaccount"))
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:6443")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    return kubeconfig


@pytest.fixture
def in_pod(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_pod: Path) -> Path:
    """In a pod (a kubeconfig too: the ServiceAccount wins, as with the kubernetes client)."""
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text("sa-t0ken")
    (sa / "namespace").write_text("modelops-system")
    (sa / "ca.crt").write_text("")
    monkeypatch.setattr(apiclient, "SERVICE_ACCOUNT", str(sa))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    return sa


def test_outside_a_pod_the_kubeconfig_is_used(no_pod: Path) -> None:
    config = apiclient.load_config().get()
    assert (config.cluster.server, config.user.token, config.namespace) == ("https://127.0.0.1:6443", "t0ken", "ml")


def test_in_a_pod_the_service_account_is_used(in_pod: Path) -> None:
    config = apiclient.load_config().get()
    assert config.cluster.server == "https://10.96.0.1:443"
    assert config.user.token_file == str(in_pod / "token")  # re-read when the kubelet rotates it


def test_a_service_account_without_the_apiservers_address_is_not_in_a_pod(in_pod: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert apiclient.in_cluster_config() is None
    assert apiclient.load_config().get().cluster.server == "https://127.0.0.1:6443"


def test_the_operators_client_is_configured_from_there(no_pod: Path) -> None:
    cfg = OperatorConfig(identity="modelops-0", api_timeout_seconds=12)
    api = modeldeployment._api_client(cfg)
    http = api._client._client
    assert str(http.base_url).rstrip("/") == "https://127.0.0.1:6443"
    assert http.headers["User-Agent"] == USER_AGENT and http.timeout.read == 12
    assert modeldeployment._api_client(cfg, timeout=5)._client._client.timeout.connect == 5  # the Lease's


def login() -> kopf.ConnectionInfo | None:
    return modeldeployment.login(settings=kopf.OperatorSettings(), logger=logging.getLogger("t"), memo=kopf.Memo())


def test_kopf_logs_in_with_the_kubeconfig_outside_a_pod(no_pod: Path) -> None:
    info = login()
    assert info is not None and (info.server, info.token, info.default_namespace) == (
        "https://127.0.0.1:6443", "t0ken", "ml")


def test_kopf_logs_in_with_the_service_account_at_the_address_our_client_uses(
        in_pod: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def service_account(**kwargs) -> kopf.ConnectionInfo:  # type: ignore[no-untyped-def]
        seen.update(kwargs)  # kopf's own: it reads /var/run/secrets/kubernetes.io/serviceaccount
        return kopf.ConnectionInfo(server="https://kubernetes.default.svc", token="sa-t0ken", priority=20)

    monkeypatch.setattr(kopf, "login_with_service_account", service_account)
    info = login()
    assert info is not None and (info.server, info.token) == ("https://10.96.0.1:443", "sa-t0ken")
    assert "settings" in seen


def test_our_login_is_kopfs_only_one() -> None:
    """kopf's fallbacks (the kubernetes client, pykube, its minimal logins) run only when no login
    handler is registered."""
    from kopf._core.intents import causes

    registry = kopf.get_default_registry()
    handlers = registry._activities.get_handlers(activity=causes.Activity.AUTHENTICATION)
    assert [h.fn for h in handlers] == [modeldeployment.login]


def test_closing_the_operator_closes_both_clients(no_pod: Path) -> None:
    cfg = OperatorConfig(metrics_port=0, identity="modelops-0", leader_election=True)

    async def start_and_stop() -> kopf.Memo:
        memo = kopf.Memo(config=cfg)
        await modeldeployment.startup(settings=kopf.OperatorSettings(), memo=memo, logger=logging.getLogger("t"))
        memo.leadership.cancel()  # before it sends anything
        await modeldeployment.cleanup(memo=memo)
        return memo

    memo = asyncio.run(start_and_stop())
    assert memo.elector.api is not memo.kube.api
    assert memo.elector.api._client._client.timeout.read == 5  # request_timeout(10, 2)
    assert memo.kube.api._client._client.is_closed and memo.elector.api._client._client.is_closed
