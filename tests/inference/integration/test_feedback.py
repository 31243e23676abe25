"""User ratings (POST /v1/feedback) counted for the revision that served the answer, between real gateways.

Two revisions, each a real gateway in front of its own stub engine, each with its own id
key (a Secret per revision: they need not share one). The stable gateway splits users
to the challenger as the operator's ConfigMap says (split.py). Everything is checked as
a user or an operator would: the answer's ``id``, the feedback endpoint's answers, and
each gateway's /metrics.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from tests.components.servers import Gateway, StubEngine
from tests.inference.helpers import sse_events, value
from tests.support.wait import wait_for

STABLE, CHALLENGER = "chat-aaaa", "chat-bbbb"
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def key_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.key"
    path.write_text(secrets.token_hex(32))
    return path


def ratings(gw: Gateway, revision: str, rating: str) -> float:
    return value(gw.metrics(), "modelops_gateway_feedback_total", revision=revision, rating=rating)


def rate(gw: Gateway, response_id: str, rating: Any, **extra: Any) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/feedback", json={"id": response_id, "rating": rating, **extra}, timeout=10)


def ask(gw: Gateway, user: str, **extra: Any) -> httpx.Response:
    r = httpx.post(f"{gw.url}/v1/chat/completions", json={**CHAT, **extra}, headers={"x-user-id": user}, timeout=10)
    assert r.status_code == 200, r.text
    return r


class Pair:
    def __init__(self, stable: Gateway, challenger: Gateway, split_file: Path) -> None:
        self.stable, self.challenger, self.split_file = stable, challenger, split_file

    def split(self, percent: float) -> None:
        tmp = self.split_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"stable": STABLE, "challenger": CHALLENGER, "url": self.challenger.url,
                                   "percent": percent, "header": "x-user-id"}))
        tmp.replace(self.split_file)
        wait_for(lambda: ask(self.stable, "probe").headers["x-modelops-revision"] == (
            CHALLENGER if percent == 100 else STABLE), timeout=10, interval=0.2, what="the split to be applied")


@pytest.fixture
def pair(start_gateway: Callable[..., Gateway], start_stub: Callable[..., StubEngine], tmp_path: Path) -> Pair:
    engines = start_stub(tokens=2), start_stub(tokens=2)
    split_file = tmp_path / "split.json"
    common = {"MODELOPS_ENGINE": "openai", "MODELOPS_MODEL": "chat", "MODELOPS_RETRIES": "0",
              "MODELOPS_SPLIT_FILE": str(split_file)}
    challenger = start_gateway({**common, "MODELOPS_ENGINE_URL": engines[1].url,
                                "MODELOPS_ENGINE_MODEL": engines[1].model, "MODELOPS_REVISION": CHALLENGER,
                                "MODELOPS_FEEDBACK_KEY_FILE": str(key_file(tmp_path, "challenger"))})
    stable = start_gateway({**common, "MODELOPS_ENGINE_URL": engines[0].url, "MODELOPS_ENGINE_MODEL": engines[0].model,
                            "MODELOPS_REVISION": STABLE, "MODELOPS_FEEDBACK_KEY_FILE": str(key_file(tmp_path, "stable"))})
    return Pair(stable, challenger, split_file)


def test_a_rating_is_counted_for_the_revision_that_answered_also_across_the_ab_forward(pair: Pair) -> None:
    own = ask(pair.stable, "u1").json()["id"]  # no split yet: the stable revision answers
    pair.split(100)
    answered = ask(pair.stable, "u1")  # now forwarded to the challenger, through the stable gateway
    assert answered.headers["x-modelops-revision"] == CHALLENGER
    forwarded = answered.json()["id"]
    with httpx.stream("POST", f"{pair.stable.url}/v1/chat/completions", json={**CHAT, "stream": True},
                      headers={"x-user-id": "u1"}, timeout=10) as r:
        events = [json.loads(e) for e in sse_events(r.read()) if e != "[DONE]"]
    streamed = events[0]["id"]
    assert {e["id"] for e in events} == {streamed}, "every chunk of a stream carries the same id"

    for response_id, rating in ((own, "down"), (forwarded, "up"), (streamed, 1.0)):
        r = rate(pair.stable, response_id, rating, user="u1")  # every rating goes to the stable gateway
        assert r.status_code == 200, r.text
    assert r.headers["x-modelops-revision"] == CHALLENGER and r.json()["revision"] == CHALLENGER

    assert ratings(pair.challenger, CHALLENGER, "positive") == 2
    assert ratings(pair.challenger, CHALLENGER, "negative") == 0
    assert ratings(pair.stable, STABLE, "negative") == 1 and ratings(pair.stable, STABLE, "positive") == 0
    assert value(pair.stable.metrics(), "modelops_gateway_feedback_total", revision=CHALLENGER) == 0
    assert value(pair.stable.metrics(), "modelops_gateway_ab_forwarded_total", route="feedback",
                 challenger=CHALLENGER, code="200") == 2
    assert value(pair.challenger.metrics(), "modelops_gateway_feedback_score_total", revision=CHALLENGER) == 2.0


def test_ids_cannot_be_made_up_moved_to_another_revision_or_rated_twice(pair: Pair) -> None:
    pair.split(100)
    challenger_id = ask(pair.stable, "u2").json()["id"]
    pair.split(0)
    stable_id = ask(pair.stable, "u2").json()["id"]
    assert stable_id.count(STABLE) == 1 and challenger_id.count(CHALLENGER) == 1
    forged = [
        challenger_id.replace(CHALLENGER, STABLE),  # a challenger's answer passed off as the stable's
        stable_id[:-3] + ("AAA" if not stable_id.endswith("AAA") else "BBB"),  # the signature altered
        "chatcmpl-made-up",  # no signature at all
        stable_id.replace(STABLE, "chat-cccc"),  # a revision nobody here serves
    ]
    for response_id in forged:
        r = rate(pair.stable, response_id, "up")
        assert r.status_code == 400 and r.json()["error"]["param"] == "id", r.text
    assert rate(pair.stable, stable_id, "up").status_code == 200
    again = rate(pair.stable, stable_id, "down")
    assert again.status_code == 409 and again.json()["error"]["param"] == "id"

    m = pair.stable.metrics()
    assert value(m, "modelops_gateway_feedback_total", revision=STABLE, rating="positive") == 1
    assert value(m, "modelops_gateway_feedback_total", revision=STABLE, rating="negative") == 0
    assert value(m, "modelops_gateway_feedback_rejected_total", reason="duplicate") == 1
    assert value(m, "modelops_gateway_feedback_rejected_total") == len(forged) + 1


@pytest.mark.parametrize("body, field", [
    ({"rating": "up"}, "id"),
    ({"id": 7, "rating": "up"}, "id"),
    ({"id": "x"}, "rating"),
    ({"id": "x", "rating": "meh"}, "rating"),
    ({"id": "x", "rating": 1.5}, "rating"),
    ({"id": "x", "rating": True, "user": 5}, "user"),
    ({"id": "x", "rating": True, "comment": "great"}, "comment"),
])
def test_invalid_feedback_gets_a_400_naming_the_field(pair: Pair, body: dict[str, Any], field: str) -> None:
    r = httpx.post(f"{pair.stable.url}/v1/feedback", json=body, timeout=10)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == field and field in err["message"]
    assert value(pair.stable.metrics(), "modelops_gateway_feedback_rejected_total", reason="invalid") == 1


def test_predict_answers_carry_an_id_that_can_be_rated(pair: Pair) -> None:
    p = httpx.post(f"{pair.stable.url}/predict", json={"query": "sky?"}, timeout=10)
    assert p.status_code == 200, p.text
    assert rate(pair.stable, p.json()["id"], 0.8).status_code == 200
    assert ratings(pair.stable, STABLE, "positive") == 1
    assert value(pair.stable.metrics(), "modelops_gateway_feedback_score_total", revision=STABLE) == pytest.approx(0.8)


def test_replicas_of_a_revision_verify_each_others_ids_with_the_shared_key(
        start_gateway: Callable[..., Gateway], fresh_stub: StubEngine, tmp_path: Path) -> None:
    env = {"MODELOPS_ENGINE": "openai", "MODELOPS_ENGINE_URL": fresh_stub.url, "MODELOPS_MODEL": "chat",
           "MODELOPS_ENGINE_MODEL": fresh_stub.model, "MODELOPS_REVISION": STABLE}
    shared = str(key_file(tmp_path, "shared"))
    a = start_gateway({**env, "MODELOPS_FEEDBACK_KEY_FILE": shared})
    b = start_gateway({**env, "MODELOPS_FEEDBACK_KEY_FILE": shared})
    lone = start_gateway(env)  # no key file: a key of its own process
    assert rate(b, ask(a, "u").json()["id"], "up").status_code == 200  # answered by one replica, rated at another
    assert ratings(b, STABLE, "positive") == 1
    r = rate(b, ask(lone, "u").json()["id"], "up")
    assert r.status_code == 400 and r.json()["error"]["param"] == "id"
    assert "MODELOPS_FEEDBACK_KEY_FILE" in lone.log()
