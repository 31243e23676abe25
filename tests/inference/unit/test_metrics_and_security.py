"""The metric names the operator's analysis templates rely on, and the optional protections."""

from __future__ import annotations

import time
from ipaddress import ip_network
from pathlib import Path

import pytest

from modelops_inference.metrics import GatewayMetrics
from modelops_inference.security import RateLimiter, TokenFile, client_address
from tests.inference.helpers import samples, value


def test_the_contract_metric_names_and_labels_exist() -> None:
    m = GatewayMetrics("chat", "chat-5b6a21", "vllm")
    m.request_started()
    m.request_finished("chat", 200, 0.8, ttft=0.05, stream=True, output_tokens=12, prompt_tokens=4)
    m.request_started()
    m.request_finished("chat", 503, 0.01)
    m.upstream_error("connect", "engine")
    m.metadata_loaded("gs://b/m/20251201T120000_abc/best_model_metadata.json", 1700000000123456, "v1")
    text = m.exposition()[0].decode()
    rev = {"model": "chat", "revision": "chat-5b6a21"}
    assert value(text, "modelops_gateway_requests_total", route="chat", code="200", **rev) == 1
    assert value(text, "modelops_gateway_requests_total", code="503", **rev) == 1
    assert value(text, "modelops_gateway_request_duration_seconds_count", **rev) == 2
    assert samples(text, "modelops_gateway_request_duration_seconds_bucket", le="600.0", **rev)
    assert value(text, "modelops_gateway_time_to_first_token_seconds_bucket", le="0.05", **rev) == 1
    assert value(text, "modelops_gateway_output_tokens_total", **rev) == 12
    assert value(text, "modelops_gateway_inflight_requests", **rev) == 0
    assert value(text, "modelops_gateway_upstream_errors_total", kind="connect", **rev) == 1
    assert "modelops_gateway_fallback_requests_total" in text or "modelops_gateway_fallback_requests" in text
    assert value(text, "modelops_gateway_metadata_generation", **rev) == 1700000000123456
    assert value(text, "modelops_gateway_metadata_info", generation="1700000000123456", version="v1", **rev) == 1


def test_the_error_rate_the_operator_computes() -> None:
    m = GatewayMetrics("chat", "r1", "vllm")
    for code in [200] * 18 + [502, 503]:
        m.request_started()
        m.request_finished("chat", code, 0.1)
    m.request_rejected("chat", 400, 0.0)  # client errors are requests, not server errors
    text = m.exposition()[0].decode()
    errors = sum(v for labels, v in samples(text, "modelops_gateway_requests_total", revision="r1")
                 if labels["code"].startswith("5"))
    total = value(text, "modelops_gateway_requests_total", revision="r1")
    assert errors / total == 2 / 21


def test_two_apps_do_not_share_metrics() -> None:
    a, b = GatewayMetrics("m", "a", "vllm"), GatewayMetrics("m", "b", "vllm")
    a.request_started()
    a.request_finished("chat", 200, 0.1)
    assert value(b.exposition()[0].decode(), "modelops_gateway_requests_total") == 0


def test_rate_limiter_keeps_a_bounded_number_of_clients() -> None:
    now = [0.0]
    rl = RateLimiter(rate=1, burst=1, max_clients=100, clock=lambda: now[0])
    for i in range(1000):
        rl.allow(f"client-{i}")
    assert len(rl._buckets) == 100


def test_token_file_rotation_is_picked_up(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("first\n")
    now = [0.0]
    tokens = TokenFile(f, check_every=10, clock=lambda: now[0])
    assert tokens.allows("Bearer first") and not tokens.allows("Bearer second") and not tokens.allows(None)
    f.write_text("second")
    import os

    os.utime(f, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    now[0] = 11.0
    assert tokens.allows("Bearer second") and not tokens.allows("Bearer first")


PROXIES = (ip_network("10.0.0.0/8"), ip_network("fd00::/8"))


@pytest.mark.parametrize("peer, forwarded_for, trusted, expected", [
    # No trusted proxy configured: what the client writes in X-Forwarded-For is never believed.
    ("192.0.2.10", "203.0.113.7", (), "192.0.2.10"),
    ("192.0.2.10", None, PROXIES, "192.0.2.10"),
    # A peer that is not a trusted proxy: its X-Forwarded-For is the client's own claim.
    ("192.0.2.10", "203.0.113.7, 10.0.0.5", PROXIES, "192.0.2.10"),
    # Behind a trusted proxy: its hop (the rightmost) names the client.
    ("10.0.0.9", "203.0.113.7", PROXIES, "203.0.113.7"),
    # A client that writes its own leftmost hop is still the address the proxy saw.
    ("10.0.0.9", "198.51.100.66, 203.0.113.7", PROXIES, "203.0.113.7"),
    # A chain of trusted proxies is walked from the right to the first untrusted hop.
    ("10.0.0.9", "198.51.100.66, 203.0.113.7, 10.1.1.1, 10.2.2.2", PROXIES, "203.0.113.7"),
    # Every hop trusted: the leftmost one (the request started inside the trusted network).
    ("10.0.0.9", "10.3.3.3, 10.1.1.1", PROXIES, "10.3.3.3"),
    # A trusted proxy that sent no X-Forwarded-For, or an empty one: the proxy itself.
    ("10.0.0.9", "", PROXIES, "10.0.0.9"),
    # A hop that is no address stops the walk at the last address a trusted proxy vouched for.
    ("10.0.0.9", "203.0.113.7, garbage", PROXIES, "10.0.0.9"),
    ("10.0.0.9", "garbage, 10.1.1.1", PROXIES, "10.1.1.1"),
    # IPv6, and an IPv4 peer reported as IPv4-mapped IPv6 by a dual-stack socket.
    ("fd00::1", "2001:db8::7", PROXIES, "2001:db8::7"),
    ("::ffff:10.0.0.9", "203.0.113.7", PROXIES, "203.0.113.7"),
    ("::ffff:192.0.2.10", None, (), "192.0.2.10"),
    # No peer (a Unix socket): one bucket for all of them rather than none.
    (None, "203.0.113.7", PROXIES, "unknown"),
])
def test_the_client_address_believes_only_trusted_proxies(peer: str | None, forwarded_for: str | None,
                                                          trusted: tuple, expected: str) -> None:
    assert client_address(peer, forwarded_for, trusted) == expected


def test_client_headers_cannot_pick_a_fresh_bucket() -> None:
    """100 spoofed X-Forwarded-For values from one peer, at burst 1: one request passes."""
    rl = RateLimiter(rate=0.001, burst=1, clock=lambda: 0.0)
    allowed = [rl.allow(client_address("192.0.2.10", f"203.0.113.{i}", ())) for i in range(100)]
    assert allowed.count(True) == 1
