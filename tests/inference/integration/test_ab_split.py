"""Sticky A/B assignment in the stable revision's gateway (split.py), between real gateways.

Two revisions, each a real gateway process in front of its own stub engine. The stable
one reads the split file the operator's ConfigMap would put in its pod; the challenger's
"Service" is simply its loopback address here. Everything is checked as a user or an
operator would: which revision answered (``x-modelops-revision``), what each engine
received, and each gateway's /metrics.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from tests.components.servers import Gateway, StubEngine
from tests.inference.helpers import value
from tests.support.wait import wait_for

STABLE, CHALLENGER = "chat-aaaa", "chat-bbbb"


def chat(user: str | None = None, *, body_user: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], **extra}
    if body_user:
        body["user"] = body_user
    return body


class Pair:
    def __init__(self, stable: Gateway, challenger: Gateway, stable_engine: StubEngine,
                 challenger_engine: StubEngine, split_file: Path) -> None:
        self.stable, self.challenger = stable, challenger
        self.stable_engine, self.challenger_engine = stable_engine, challenger_engine
        self.split_file = split_file

    def write_split(self, **doc: Any) -> None:
        tmp = self.split_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.split_file)  # like the kubelet's atomic ..data swap

    def split(self, percent: float, **extra: Any) -> None:
        self.write_split(stable=STABLE, challenger=CHALLENGER, url=self.challenger.url, percent=percent,
                         header="x-user-id", **extra)

    def served_by(self, user: str | None = None, *, path: str = "/v1/chat/completions",
                  body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> str:
        h = dict(headers or {})
        if user is not None:
            h["x-user-id"] = user
        r = httpx.post(self.stable.url + path, json=body or chat(), headers=h, timeout=10)
        assert r.status_code == 200, r.text
        return r.headers["x-modelops-revision"]


@pytest.fixture
def pair(start_gateway: Callable[..., Gateway], start_stub: Callable[..., StubEngine], tmp_path: Path) -> Pair:
    meta = tmp_path / "best_model_metadata.json"
    meta.write_text(json.dumps({"hyperparameters": {"temperature": 0.1}, "prompt_template": "Q: {query}"}))
    engines = start_stub(tokens=2), start_stub(tokens=2)
    split_file = tmp_path / "split" / "split.json"
    split_file.parent.mkdir()
    common = {"MODELOPS_ENGINE": "openai", "MODELOPS_MODEL": "chat", "MODELOPS_RETRIES": "0",
              "MODELOPS_METADATA_URI": f"file://{meta}", "MODELOPS_SPLIT_FILE": str(split_file)}
    # An A/B test of two models: the challenger serves another name than the one clients send.
    challenger = start_gateway({**common, "MODELOPS_ENGINE_URL": engines[1].url, "MODELOPS_ENGINE_MODEL": engines[1].model,
                                "MODELOPS_REVISION": CHALLENGER, "MODELOPS_MODEL": "chat-challenger"})
    stable = start_gateway({**common, "MODELOPS_ENGINE_URL": engines[0].url, "MODELOPS_ENGINE_MODEL": engines[0].model,
                            "MODELOPS_REVISION": STABLE})
    for e in engines:
        e.reset()  # forget the warm-up requests
    return Pair(stable, challenger, engines[0], engines[1], split_file)


def wait_split_applied(pair: Pair, user: str, revision: str) -> None:
    wait_for(lambda: pair.served_by(user) == revision, timeout=10, interval=0.2,
             what=f"user {user} to be served by {revision}")


def test_users_stick_to_their_variant_and_the_share_holds(pair: Pair) -> None:
    users = [f"user-{i}" for i in range(200)]
    assert {pair.served_by(u) for u in users[:20]} == {STABLE}  # no split file yet: all stable
    pair.split(20)
    wait_for(lambda: any(pair.served_by(u) == CHALLENGER for u in users[:40]), timeout=10, interval=0.3,
             what="the split file to be applied")
    seen: dict[str, set[str]] = defaultdict(set)
    for _ in range(3):
        for u in users:
            seen[u].add(pair.served_by(u))
    assert all(len(v) == 1 for v in seen.values()), {u: v for u, v in seen.items() if len(v) > 1}
    share = sum(v == {CHALLENGER} for v in seen.values()) / len(users)
    assert 0.12 <= share <= 0.28, share  # 20 % of users, by hash (binomial spread for 200 users)

    # The OpenAI `user` field works when the header is absent, with the same assignment.
    for u in users[:30]:
        assert pair.served_by(body=chat(body_user=u)) == next(iter(seen[u]))

    # Each variant's metrics are its own: the challenger counts what it served, the stable one
    # counts only its own answers and the forwards.
    to_challenger = sum(1 for v in seen.values() if v == {CHALLENGER}) * 3
    cm, sm = pair.challenger.metrics(), pair.stable.metrics()
    assert value(cm, "modelops_gateway_requests_total", revision=CHALLENGER, route="chat", code="200") >= to_challenger
    assert value(sm, "modelops_gateway_ab_forwarded_total", challenger=CHALLENGER, code="200") >= to_challenger
    stable_served = value(sm, "modelops_gateway_requests_total", revision=STABLE, route="chat", code="200")
    assert stable_served == pair.stable_engine.stats()["requests"]


def test_the_challenger_gets_the_request_unshaped_and_applies_its_own_config(pair: Pair) -> None:
    pair.split(100)
    wait_split_applied(pair, "someone", CHALLENGER)
    pair.challenger_engine.reset()
    r = httpx.post(pair.stable.url + "/v1/chat/completions", json=chat(stream=True, max_tokens=2),
                   headers={"x-user-id": "someone", "x-request-id": "req-1"}, timeout=10)
    assert r.status_code == 200 and r.headers["x-modelops-revision"] == CHALLENGER
    assert "data: [DONE]" in r.text
    sent = pair.challenger_engine.stats()["last_body"]
    assert sent["temperature"] == 0.1 and sent["max_tokens"] == 2 and sent["stream"] is True
    assert sent["model"] == pair.challenger_engine.model  # the client's "chat" became the challenger's model
    assert pair.stable_engine.stats()["requests"] == 0
    # /predict follows the same assignment (by header) and is answered by the challenger's config.
    p = httpx.post(pair.stable.url + "/predict", json={"query": "sky?"}, headers={"x-user-id": "someone"}, timeout=10)
    assert p.status_code == 200, p.text
    assert p.headers["x-modelops-revision"] == CHALLENGER and p.json()["revision"] == CHALLENGER
    assert pair.challenger_engine.stats()["last_body"]["messages"][-1]["content"] == "Q: sky?"


def test_header_matches_go_to_the_challenger_regardless_of_share(pair: Pair) -> None:
    pair.split(0, match=[{"x-variant": "b"}])
    wait_for(lambda: pair.served_by("u1", headers={"X-Variant": "b"}) == CHALLENGER, timeout=10, interval=0.2,
             what="the header match to be applied")
    assert pair.served_by("u1") == STABLE
    assert pair.served_by("u1", headers={"x-variant": "a"}) == STABLE


def test_an_unreachable_challenger_costs_nothing_but_a_connect(pair: Pair) -> None:
    pair.split(100)
    wait_split_applied(pair, "u2", CHALLENGER)
    pair.challenger.stop()  # scaled down after an abort, before the kubelet refreshed the file
    for _ in range(5):
        assert pair.served_by("u2") == STABLE
    assert pair.served_by("u2", path="/predict", body={"query": "q"}) == STABLE
    m = pair.stable.metrics()
    assert value(m, "modelops_gateway_requests_total", revision=STABLE, code="200") == 6
    assert value(m, "modelops_gateway_upstream_errors_total", upstream="challenger", kind="connect") == 6
    assert value(m, "modelops_gateway_engine_ready", revision=STABLE) == 1  # the stable engine is not suspected


def test_only_the_stable_revision_splits_and_a_bad_file_means_no_split(pair: Pair) -> None:
    pair.split(100)
    wait_split_applied(pair, "u3", CHALLENGER)
    # The challenger reads the same file but never forwards (it is not the stable revision named there).
    r = httpx.post(pair.challenger.url + "/v1/chat/completions", json=chat(model="chat-challenger"),
                   headers={"x-user-id": "u3"}, timeout=10)
    assert r.headers["x-modelops-revision"] == CHALLENGER
    pair.split_file.write_text("{not json")
    wait_split_applied(pair, "u3", STABLE)
    assert "ignoring the A/B split file" in pair.stable.log()
    pair.write_split()  # {}: the operator's "no split"
    assert pair.served_by("u3") == STABLE
