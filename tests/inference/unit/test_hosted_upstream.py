"""The pure parts of a hosted upstream: where requests go, and that its key is never shown."""

from __future__ import annotations

from modelops_inference.proxy import Upstream
from modelops_inference.settings import GatewaySettings

KEY = "sk-secret-123"


def test_a_hosted_apis_base_url_takes_the_paths_without_v1() -> None:
    hosted = Upstream("engine", "https://generativelanguage.googleapis.com/v1beta/openai", "gemini-2.0-flash",
                      {"Authorization": f"Bearer {KEY}"}, api_base=True)
    assert hosted.url("/v1/chat/completions") == "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions"
    assert hosted.url("/v1/completions").endswith("/openai/completions")
    local = Upstream("engine", "http://127.0.0.1:8000", "m")
    assert local.url("/v1/chat/completions") == "http://127.0.0.1:8000/v1/chat/completions"


def test_the_key_is_not_in_an_upstreams_repr() -> None:
    hosted = Upstream("engine", "https://api.example.com/v1", "m", {"Authorization": f"Bearer {KEY}"}, api_base=True)
    assert KEY not in repr(hosted) and KEY not in str(hosted)


def test_only_upstreams_the_gateway_authenticates_to_are_credentialed() -> None:
    assert Upstream("engine", "https://api.example.com/v1", "m", {"Authorization": "Bearer k"}).credentialed
    assert not Upstream("engine", "http://127.0.0.1:8000", "m").credentialed
    # the A/B challenger gets the client's own token: its 401 is the client's to see
    assert not Upstream("challenger", "http://chat-2.ml.svc:80", "m", {"authorization": "Bearer t"}).credentialed


def test_hosted_is_an_engine_kind() -> None:
    s = GatewaySettings(engine="hosted", engine_url="https://api.example.com/v1/", model="chat",
                        engine_model="gpt-4o-mini")
    assert (s.engine, s.engine_url, s.upstream_model) == ("hosted", "https://api.example.com/v1", "gpt-4o-mini")
