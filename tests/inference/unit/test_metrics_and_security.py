"""The metric names the operator's analysis templates rely on, and the optional protections."""

from __future__ import annotations

import time
from pathlib import Path

from modelops_inference.metrics import GatewayMetrics
from modelops_inference.security import RateLimiter, TokenFile
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
