"""Response ids that name their revision (responseid.py) and the feedback body (feedback.py)."""

from __future__ import annotations

import json

import pytest

from modelops_inference.feedback import SeenIds, parse_feedback
from modelops_inference.protocol import RequestError
from modelops_inference.responseid import IdStamper, ResponseIds, claimed_revision, claims_revision

KEY = b"0123456789abcdef0123456789abcdef"


def ids(revision: str = "chat-5b6a21", key: bytes = KEY) -> ResponseIds:
    return ResponseIds(key, revision)


# --- ids ---------------------------------------------------------------------------------
def test_an_issued_id_verifies_for_its_revision_and_key_only() -> None:
    a = ids()
    issued = a.issue("chatcmpl-abc")
    assert a.verify(issued) is not None and a.verify(issued).engine_id == "chatcmpl-abc"
    assert ids(key=b"another key").verify(issued) is None
    assert ids("chat-9c0d13").verify(issued) is None  # another revision, same key: still not its id
    assert claims_revision(issued, "chat-5b6a21") and claimed_revision(issued) == "chat-5b6a21"


def test_every_answer_gets_its_own_id_even_when_the_engine_repeats_its_own() -> None:
    a = ids()
    issued = {a.issue("chatcmpl-7") for _ in range(1000)}  # Ollama numbers ids from a small range
    assert len(issued) == 1000 and all(a.verify(i) for i in issued)
    assert len({a.verify(i).tag for i in issued}) == 1000


@pytest.mark.parametrize("change", [
    lambda i: i.replace("chat-5b6a21", "chat-9c0d13"),  # moved to another revision
    lambda i: i.replace("chatcmpl-abc", "chatcmpl-abd"),  # another answer's id
    lambda i: i[:-1] + ("A" if i[-1] != "A" else "B"),  # the tag altered
    lambda i: i[:-2],  # cut short
    lambda i: i + "x",
    lambda i: "chatcmpl-abc",  # no tag
    lambda i: ".chat-5b6a21." + i.rsplit(".", 1)[1],  # no engine id
])
def test_an_altered_id_does_not_verify(change) -> None:
    a = ids()
    assert a.verify(change(a.issue("chatcmpl-abc"))) is None


def test_revision_names_with_dots_and_engine_ids_with_dots_are_no_problem() -> None:
    a = ids("chat.v2-1")
    issued = a.issue("resp.1.2")
    assert a.verify(issued).engine_id == "resp.1.2"
    assert ids("v2-1").verify(issued) is None  # its name ends this one's, but the MAC covers the whole name


# --- stamping a relayed body ----------------------------------------------------------------
def stamped(data: bytes, *, sse: bool, cuts: list[int], limit: int = 1 << 20) -> tuple[bytes, IdStamper]:
    s = IdStamper(ids(), sse=sse, limit=limit)
    out, last = b"", 0
    for cut in [*cuts, len(data)]:
        out += s.feed(data[last:cut])
        last = cut
    return out + s.flush(), s


SSE = b"".join(b"data: " + json.dumps({"id": "chatcmpl-abc", "choices": [{"delta": {"content": t}}]}).encode() +
               b"\n\n" for t in ("a", "b", "c")) + b"data: [DONE]\n\n"


@pytest.mark.parametrize("cut", range(1, len(SSE)))
def test_a_stream_split_anywhere_gets_the_new_id_in_every_event(cut: int) -> None:
    out, s = stamped(SSE, sse=True, cuts=[cut])
    assert s.issued is not None
    assert out == SSE.replace(b'"chatcmpl-abc"', json.dumps(s.issued).encode())


def test_a_stream_is_held_back_only_until_its_first_event_is_complete() -> None:
    s = IdStamper(ids(), sse=True)
    first, rest = SSE.split(b"\n\n", 1)
    assert s.feed(first[:20]) == b""  # the id is not known yet
    out = s.feed(first[20:] + b"\n\n")
    assert s.issued is not None and out.endswith(b"\n\n")
    assert s.feed(rest) == rest.replace(b'"chatcmpl-abc"', json.dumps(s.issued).encode())  # nothing held


def test_a_json_body_with_its_id_after_the_choices_is_rewritten_whole() -> None:
    body = json.dumps({"choices": [{"message": {"content": "hi", "tool_calls": [{"id": "call_1"}]}}],
                       "id": "chatcmpl-abc", "usage": {"prompt_tokens": 1}}).encode()
    for cut in range(1, len(body), 7):
        out, s = stamped(body, sse=False, cuts=[cut])
        doc = json.loads(out)
        assert doc["id"] == s.issued and ids().verify(doc["id"]) is not None
        assert doc["choices"][0]["message"]["tool_calls"][0]["id"] == "call_1"  # only the response's id


@pytest.mark.parametrize("data, sse", [
    (b'data: {"choices":[{"delta":{"content":"a"}}]}\n\ndata: [DONE]\n\n', True),  # no id
    (b'data: {"id": "chat\\u0063mpl-1", "choices": []}\n\n', True),  # escaped: not found as written
    (b'{"object": "list", "data": []}', False),
    (b'{"id": "cmpl-1", "choices": [', False),  # cut short
])
def test_a_body_without_a_plain_id_passes_unchanged(data: bytes, sse: bool) -> None:
    out, s = stamped(data, sse=sse, cuts=[len(data) // 2])
    assert out == data and s.issued is None


def test_a_body_larger_than_the_limit_passes_unchanged_without_being_held() -> None:
    body = json.dumps({"choices": [{"message": {"content": "x" * 5000}}], "id": "chatcmpl-abc"}).encode()
    s = IdStamper(ids(), sse=False, limit=1000)
    out = b"".join(s.feed(body[i:i + 600]) for i in range(0, len(body), 600)) + s.flush()
    assert out == body and s.issued is None


# --- the feedback body ----------------------------------------------------------------------
@pytest.mark.parametrize("rating, score, side", [
    ("up", 1.0, "positive"), ("DOWN", 0.0, "negative"), (True, 1.0, "positive"), (False, 0.0, "negative"),
    (0, 0.0, "negative"), (1, 1.0, "positive"), (0.5, 0.5, "positive"), (0.49, 0.49, "negative"),
])
def test_ratings_become_a_score_and_a_side(rating, score: float, side: str) -> None:
    fb = parse_feedback({"id": "x", "rating": rating})
    assert (fb.score, fb.rating) == (score, side)


@pytest.mark.parametrize("body, field", [
    ({"rating": "up"}, "id"), ({"id": "", "rating": "up"}, "id"), ({"id": "x" * 600, "rating": "up"}, "id"),
    ({"id": "x"}, "rating"), ({"id": "x", "rating": None}, "rating"), ({"id": "x", "rating": -0.1}, "rating"),
    ({"id": "x", "rating": float("nan")}, "rating"), ({"id": "x", "rating": "5 stars"}, "rating"),
    ({"id": "x", "rating": "up", "user": ["u"]}, "user"), ({"id": "x", "rating": "up", "stars": 5}, "stars"),
])
def test_bad_feedback_names_its_field(body: dict, field: str) -> None:
    with pytest.raises(RequestError) as err:
        parse_feedback(body)
    assert err.value.status == 400 and err.value.param == field


def test_the_rated_ids_are_bounded() -> None:
    seen = SeenIds(size=100)
    assert all(seen.add(f"id-{i}") for i in range(1000))
    assert len(seen) == 100
    assert not seen.add("id-999") and seen.add("id-0")  # the oldest were forgotten, the newest are kept
