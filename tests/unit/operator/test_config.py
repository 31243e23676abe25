"""OperatorConfig is where settings are read: the environment (MODELOPS_*, and the Google client's own
names), the command line over it, and the adapters get their settings from it as arguments."""

from __future__ import annotations

import argparse
import doctest
import json
from pathlib import Path

import httpx
import pytest

from modelops.__main__ import operator_config, parser
from modelops.adapters import golden as golden_adapter
from modelops.adapters.golden import Golden, service_url
from modelops.adapters.prometheus import Prometheus
from modelops.adapters.registry import Registry
from modelops.config import OperatorConfig
from modelops.planning.analysis import GoldenRequest
from tests.support.operator_main import revision_urls_from

SETTINGS = ["MODELOPS_PROMETHEUS_TOKEN", "MODELOPS_METADATA_POLL_SECONDS", "MODELOPS_STORAGE_EMULATOR_HOST",
            "STORAGE_EMULATOR_HOST", "MODELOPS_GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_PROJECT", "MODELOPS_LEADER_ELECTION",
            "MODELOPS_LEADER_ELECTION_NAMESPACE", "POD_NAMESPACE", "MODELOPS_IDENTITY", "POD_NAME",
            "MODELOPS_NAMESPACES", "MODELOPS_LEASE_DURATION_SECONDS", "MODELOPS_RENEW_DEADLINE_SECONDS",
            "MODELOPS_RETRY_PERIOD_SECONDS"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)


def run_args(*argv: str) -> argparse.Namespace:
    """``python -m modelops run`` with these arguments, parsed (nothing starts)."""
    return parser().parse_args(["run", *argv])


def test_defaults() -> None:
    cfg = OperatorConfig()
    assert cfg.prometheus_token is None and cfg.metadata_poll_seconds == 60
    assert cfg.storage_emulator_host is None and cfg.google_cloud_project is None
    assert cfg.leader_election is False and cfg.identity == "" and cfg.lease_namespace == "default"
    # client-go's defaults (controller-runtime, Argo Rollouts use the same)
    assert (cfg.lease_duration_seconds, cfg.renew_deadline_seconds, cfg.retry_period_seconds) == (15, 10, 2)
    assert cfg.max_concurrent_reconciles == 8 and cfg.api_timeout_seconds == 30


def environment(monkeypatch: pytest.MonkeyPatch, **variables: str) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def test_the_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    environment(monkeypatch, MODELOPS_PROMETHEUS_TOKEN="s3cret", MODELOPS_METADATA_POLL_SECONDS="1",
                STORAGE_EMULATOR_HOST="http://127.0.0.1:4443", GOOGLE_CLOUD_PROJECT="test",
                MODELOPS_LEADER_ELECTION="true", POD_NAME="modelops-6f7d-abcde",
                MODELOPS_NAMESPACES='["ml", "demo"]')
    cfg = OperatorConfig()
    assert cfg.prometheus_token is not None and cfg.prometheus_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(cfg) and "s3cret" not in str(cfg.model_dump())
    assert cfg.metadata_poll_seconds == 1.0
    assert (cfg.storage_emulator_host, cfg.google_cloud_project) == ("http://127.0.0.1:4443", "test")
    assert (cfg.leader_election, cfg.identity) == (True, "modelops-6f7d-abcde")
    assert cfg.lease_namespace == "ml"  # no POD_NAMESPACE: the first watched namespace
    environment(monkeypatch, POD_NAMESPACE="modelops-system")
    assert OperatorConfig().lease_namespace == "modelops-system"


def test_the_prefixed_names_win_over_the_google_clients_own(monkeypatch: pytest.MonkeyPatch) -> None:
    environment(monkeypatch, STORAGE_EMULATOR_HOST="http://127.0.0.1:1",
                MODELOPS_STORAGE_EMULATOR_HOST="http://127.0.0.1:2", GOOGLE_CLOUD_PROJECT="theirs",
                MODELOPS_GOOGLE_CLOUD_PROJECT="ours", POD_NAME="pod", MODELOPS_IDENTITY="me",
                POD_NAMESPACE="theirs", MODELOPS_LEADER_ELECTION_NAMESPACE="ours")
    cfg = OperatorConfig()
    assert (cfg.storage_emulator_host, cfg.google_cloud_project, cfg.identity) == ("http://127.0.0.1:2", "ours", "me")
    assert cfg.lease_namespace == "ours"


def test_fields_can_be_given_by_name() -> None:
    cfg = OperatorConfig(storage_emulator_host="http://h:1", google_cloud_project="p", identity="me")
    assert (cfg.storage_emulator_host, cfg.google_cloud_project, cfg.identity) == ("http://h:1", "p", "me")


def test_the_command_line_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELOPS_NAMESPACES", '["demo"]')
    monkeypatch.setenv("POD_NAME", "modelops-0")
    cfg = operator_config(run_args("-n", "ml", "--leader-elect"))
    assert (cfg.namespaces, cfg.leader_election, cfg.identity) == (["ml"], True, "modelops-0")
    cfg = operator_config(run_args())
    assert (cfg.namespaces, cfg.leader_election) == (["demo"], False)


def test_the_identity_is_resolved_once() -> None:
    a, b = operator_config(run_args()), operator_config(run_args())
    assert a.identity and a.identity == b.identity  # <hostname>-<pid>: the same process here


def test_lease_timings_must_nest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The leader must give up before a standby may take over: lease > renew deadline > retry."""
    with pytest.raises(ValueError, match="lease_duration_seconds > renew_deadline_seconds"):
        OperatorConfig(lease_duration_seconds=10, renew_deadline_seconds=10)
    with pytest.raises(ValueError):
        OperatorConfig(renew_deadline_seconds=2, retry_period_seconds=2)


def test_prometheus_sends_the_token_it_is_given() -> None:
    with_token, without = Prometheus(bearer_token="s3cret"), Prometheus()
    try:
        assert with_token.client.headers["Authorization"] == "Bearer s3cret"
        assert "Authorization" not in without.client.headers
    finally:
        with_token.close()
        without.close()


def test_the_registry_reaches_the_emulator_it_is_given() -> None:
    """Whichever variable named it: the client goes to the configured address (no request is made here)."""
    registry = Registry(poll_seconds=1, emulator_host="127.0.0.1:4443", project="test")
    client = registry.client()
    assert client.api_endpoint == "http://127.0.0.1:4443" and client.project == "test"
    assert registry.poll_seconds == 1


def request(revision: str = "chat-5b6a21") -> GoldenRequest:
    return GoldenRequest(revision, revision, "ml", "gemma", ["Reply with the word ok."])


def chat(seen: list[str]) -> httpx.Client:
    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(str(req.url))
        return httpx.Response(200, json={"choices": [{"message": {"content": "ok"}}]})

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_golden_prompts_go_to_the_revisions_service_by_default() -> None:
    seen: list[str] = []
    [answer] = Golden().ask(request(), client=chat(seen))
    assert seen == ["http://chat-5b6a21.ml.svc/v1/chat/completions"]  # :80 is http's default
    assert answer.status == 200 and answer.text == "ok"
    assert doctest.testmod(golden_adapter).failed == 0


def test_golden_prompts_go_where_the_injected_resolver_says() -> None:
    seen: list[str] = []
    Golden(revision_url=lambda r: f"http://127.0.0.1:9/{r.revision}/").ask(request(), client=chat(seen))
    assert seen == ["http://127.0.0.1:9/chat-5b6a21/v1/chat/completions"]


def test_the_test_entry_points_resolver_reads_the_harness_file_at_each_call(tmp_path: Path) -> None:
    urls = tmp_path / "revision-urls.json"
    resolve = revision_urls_from(urls)
    assert resolve(request()) == service_url(request())  # no file yet
    urls.write_text(json.dumps({"chat-5b6a21": "http://127.0.0.1:40001/"}))
    assert resolve(request()) == "http://127.0.0.1:40001"
    assert resolve(request("chat-other")) == "http://chat-other.ml.svc:80"


def test_startup_builds_the_adapters_from_the_config_and_the_memo(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    """What ``python -m modelops`` puts in kopf's memo is what the adapters are built from."""
    import asyncio
    import logging

    import kopf

    from modelops.adapters import apiclient
    from modelops.handlers import modeldeployment
    from tests.unit.operator.fakeapi import write_kubeconfig

    # No cluster needed: building the clients sends nothing.
    monkeypatch.setattr(apiclient, "SERVICE_ACCOUNT", str(tmp_path / "no-serviceaccount"))
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:1")))
    cfg = OperatorConfig(metrics_port=0, prometheus_token="s3cret", metadata_poll_seconds=2,
                         storage_emulator_host="http://127.0.0.1:4443", google_cloud_project="test",
                         identity="modelops-0")
    resolver = revision_urls_from(Path("/nonexistent/revision-urls.json"))

    async def start_and_stop(memo: kopf.Memo) -> kopf.Memo:
        await modeldeployment.startup(settings=kopf.OperatorSettings(), memo=memo, logger=logging.getLogger("t"))
        await modeldeployment.cleanup(memo=memo)
        return memo

    memo = asyncio.run(start_and_stop(kopf.Memo(config=cfg, revision_url=resolver)))
    assert memo.config is cfg and memo.leadership is None and memo.elector is None  # no leader election
    assert memo.kube.api.config.cluster.server == "https://127.0.0.1:1"
    assert memo.executor._max_workers == cfg.max_concurrent_reconciles
    assert memo.golden.revision_url is resolver
    assert memo.prometheus.client.headers["Authorization"] == "Bearer s3cret"
    assert (memo.registry.poll_seconds, memo.registry.emulator_host, memo.registry.project) == \
        (2, "http://127.0.0.1:4443", "test")
    production = asyncio.run(start_and_stop(kopf.Memo(config=cfg)))
    assert production.golden.revision_url is service_url
