"""Settings from MODELOPS_* variables, and the gateway CLI's handling of bad ones."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from modelops_inference.settings import GatewaySettings


def test_defaults_suit_a_pod_with_one_engine_beside_the_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in [k for k in __import__("os").environ if k.startswith("MODELOPS_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("MODELOPS_MODEL", "chat")
    s = GatewaySettings()
    assert (s.engine, s.engine_url, s.port, s.upstream_model, s.metadata_uri) == (
        "vllm", "http://127.0.0.1:8000", 8080, "chat", None)
    assert s.rate_limit_rps == 0 and s.auth_token_file is None  # protections off by default
    assert s.trusted_proxies == ()  # X-Forwarded-For is not believed unless configured


def test_trusted_proxies_are_a_comma_separated_list_of_cidrs(monkeypatch: pytest.MonkeyPatch) -> None:
    from ipaddress import ip_network

    monkeypatch.setenv("MODELOPS_TRUSTED_PROXIES", " 10.0.0.0/8, 192.168.1.7,fd00::/8 ")
    s = GatewaySettings(model="m")
    assert s.trusted_proxies == (ip_network("10.0.0.0/8"), ip_network("192.168.1.7/32"), ip_network("fd00::/8"))
    assert '"10.0.0.0/8"' in s.model_dump_json()  # what --check prints


def test_the_operators_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"MODELOPS_ENGINE": "ollama", "MODELOPS_ENGINE_URL": "http://127.0.0.1:11434/",
           "MODELOPS_MODEL": "gemma-3n", "MODELOPS_ENGINE_MODEL": "gemma3n:e2b", "MODELOPS_REVISION": "chat-5b6a21",
           "MODELOPS_METADATA_URI": "gs://models/", "MODELOPS_PORT": "9000",
           "MODELOPS_FALLBACK_URL": "https://api.example.invalid/v1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = GatewaySettings()
    assert s.engine_url == "http://127.0.0.1:11434"  # trailing slash dropped
    assert (s.upstream_model, s.revision, s.port, s.metadata_uri) == ("gemma3n:e2b", "chat-5b6a21", 9000,
                                                                      "gs://models/")
    assert s.fallback_url == "https://api.example.invalid/v1" and s.fallback_upstream_model == "gemma-3n"


@pytest.mark.parametrize("field, value", [
    ("engine", "tgi"), ("engine_url", "localhost:8000"), ("metadata_uri", "s3://x/y"), ("port", "0"),
    ("trusted_proxies", "10.0.0.1/8"), ("trusted_proxies", "ingress"),  # host bits set; not an address
])
def test_bad_values_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(model="m", **{field: value})


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("MODELOPS_")}
    return subprocess.run([sys.executable, "-m", "modelops_inference.gateway", *args], env={**base, **env},
                          capture_output=True, text=True, timeout=60)


def test_cli_names_the_missing_variable_and_exits_2() -> None:
    done = run_cli("--check", env={})
    assert done.returncode == 2
    assert "MODELOPS_MODEL" in done.stderr


def test_cli_check_prints_the_effective_settings() -> None:
    done = run_cli("--check", "--port", "9100", env={"MODELOPS_MODEL": "m", "MODELOPS_ENGINE": "openai"})
    assert done.returncode == 0, done.stderr
    assert '"port": 9100' in done.stdout and '"engine": "openai"' in done.stdout


def test_cli_help_lists_every_setting() -> None:
    done = run_cli("--help", env={})
    assert done.returncode == 0
    for name in GatewaySettings.model_fields:
        assert f"MODELOPS_{name.upper()}" in done.stdout
