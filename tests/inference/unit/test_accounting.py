"""Token accounting over engine responses, however the bytes are split."""

from __future__ import annotations

import json

import pytest

from modelops_inference.accounting import TOKENS_PER_MESSAGE, BodyTally, StreamTally, estimate_prompt_tokens


def chunk(text: str | None = None, finish: str | None = None) -> dict:
    delta = {"content": text} if text is not None else {}
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def sse(objs: list, sep: bytes = b"\n\n") -> bytes:
    return b"".join(b"data: " + json.dumps(o).encode() + sep for o in objs) + b"data: [DONE]" + sep


STREAM = [chunk("Hel"), chunk("lo"), chunk(" world"), chunk("", "stop")]


@pytest.mark.parametrize("sep", [b"\n\n", b"\r\n\r\n"])
def test_every_split_point_gives_the_same_count(sep: bytes) -> None:
    raw = sse(STREAM, sep)
    for cut in range(len(raw) + 1):
        t = StreamTally()
        t.feed(raw[:cut])
        t.feed(raw[cut:])
        assert (t.output_tokens, t.done) == (3, True), cut


def test_byte_by_byte_feeding_counts_the_same() -> None:
    t = StreamTally()
    for b in sse(STREAM):
        t.feed(bytes([b]))
    assert t.output_tokens == 3


def test_usage_reported_by_the_engine_wins_over_counting_chunks() -> None:
    t = StreamTally()
    t.feed(sse([chunk("a"), {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7}}]))
    assert (t.output_tokens, t.prompt_tokens) == (7, 11)


def test_completion_streams_count_text_chunks() -> None:
    t = StreamTally()
    t.feed(sse([{"choices": [{"text": "a"}]}, {"choices": [{"text": ""}]}, {"choices": [{"text": "b"}]}]))
    assert t.output_tokens == 2


def test_an_error_event_inside_a_stream_is_noticed() -> None:
    t = StreamTally()
    t.feed(sse([chunk("a"), {"error": {"message": "engine fell over", "type": "server_error"}}]))
    assert t.error == "engine fell over" and t.output_tokens == 1


def test_garbage_does_not_break_counting() -> None:
    t = StreamTally()
    t.feed(b": keep-alive comment\n\ndata: {not json\n\nevent: ping\n\n" + sse([chunk("x")]))
    assert t.output_tokens == 1


def test_json_bodies_report_usage() -> None:
    b = BodyTally()
    body = json.dumps({"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": 4,
                                                                              "completion_tokens": 2}}).encode()
    for i in range(0, len(body), 7):
        b.feed(body[i:i + 7])
    assert (b.output_tokens, b.prompt_tokens) == (2, 4)


def test_large_bodies_are_not_kept_and_count_nothing() -> None:
    b = BodyTally(limit=10)
    b.feed(b'{"usage": {"completion_tokens": 5}, "pad": "' + b"x" * 100 + b'"}')
    assert b.output_tokens == 0


@pytest.mark.parametrize("body, tokens", [
    ({"messages": [{"role": "user", "content": "x" * 40}]}, TOKENS_PER_MESSAGE + 10),
    ({"messages": [{"role": "system", "content": "abc"},  # parts: text counted, an image not
                   {"role": "user", "content": [{"type": "text", "text": "x" * 8},
                                                {"type": "image_url", "image_url": {"url": "data:..."}}]},
                   {"role": "assistant", "content": None, "tool_calls": []}]}, 3 * TOKENS_PER_MESSAGE + 1 + 2),
    ({"prompt": "x" * 9}, 3),
    ({"prompt": [[1, 2, 3], [4]]}, 4),  # token ids are counted exactly
    ({"input": ["ab", "cd"]}, 2),
    ({"messages": "not a list"}, 0),
    ({}, 0),
])
def test_a_prompt_is_estimated_from_its_text(body: dict, tokens: int) -> None:
    assert estimate_prompt_tokens(body) == tokens
