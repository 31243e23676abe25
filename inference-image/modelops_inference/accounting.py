"""PURE: token accounting over what the engine sends back, without changing a byte of it.

``StreamTally`` watches an OpenAI-style SSE stream chunk by chunk (events may be
split across chunks anywhere) and ``BodyTally`` keeps the head of a JSON body. Both
report output and prompt tokens: the engine's ``usage`` when it sends one (vLLM and
Ollama with ``stream_options.include_usage``, every non-streaming response), else
one token per streamed chunk that carries content (vLLM, Ollama and llama.cpp
send one token per chunk). A stream that carries an ``error`` event is noted.

``estimate_prompt_tokens`` guesses a request's prompt tokens from its text, for the one
thing that needs a number when the engine reports no usage: a hosted price per prompt token.
"""

from __future__ import annotations

import json
import re
from typing import Any


# A chunk that carries text: "content" (chat) or "text" (completions) with a non-empty string.
_HAS_TEXT = re.compile(rb'"(?:content|text)"\s*:\s*"(?!")')
# The same test on every whole `data:` line of a buffer at once, in one pass of the regex
# engine: after a newline (the literal prefix keeps the engine off other bytes), greedy to the
# line's end, then back to its last text field, so at most one match per line.
_TEXT_LINES = re.compile(rb'\ndata:[^\n]*"(?:content|text)"[ \t\r]*:[ \t\r]*"(?!")')


# An estimate, not a tokenizer: about 4 characters a token (OpenAI's rule of thumb for English),
# plus a few tokens per chat message for its role and delimiters (OpenAI's cookbook counts 3-4).
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4


def _text_tokens(value: Any) -> int:
    """Estimated tokens of a prompt or content field: a string, text parts, or token ids (counted exactly)."""
    if isinstance(value, str):
        return -(-len(value) // CHARS_PER_TOKEN)
    if isinstance(value, int) and not isinstance(value, bool):
        return 1  # a token id (completions and embeddings accept token arrays)
    if isinstance(value, list):
        return sum(_text_tokens(v) for v in value)
    if isinstance(value, dict):  # a content part: {"type": "text", "text": ...}; images and audio are not counted
        return _text_tokens(value.get("text"))
    return 0


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """An ESTIMATE of the prompt tokens of a request as sent to the engine, from its text: chat
    ``messages`` (string content or text parts), completions' ``prompt``, embeddings' ``input``.
    Tool definitions, images and audio are not counted. Used only when the engine reports no usage.

    >>> estimate_prompt_tokens({"messages": [{"role": "user", "content": "What is 2 + 2?"}]})
    8
    >>> estimate_prompt_tokens({"prompt": ["Once upon", [1, 2, 3]]}), estimate_prompt_tokens({})
    (6, 0)
    """
    messages = body.get("messages")
    if isinstance(messages, list):
        return sum(TOKENS_PER_MESSAGE + _text_tokens(m.get("content")) for m in messages if isinstance(m, dict))
    return _text_tokens(body.get("prompt", body.get("input")))


def _usage_numbers(usage: Any) -> tuple[int, int] | None:
    if not isinstance(usage, dict):
        return None
    out = usage.get("completion_tokens", 0) or 0
    prompt = usage.get("prompt_tokens", 0) or 0
    if not isinstance(out, int) or not isinstance(prompt, int):
        return None
    return out, prompt


class StreamTally:
    """Counts tokens in a ``text/event-stream`` of OpenAI chunks.

    >>> t = StreamTally()
    >>> t.feed(b'data: {"choices":[{"delta":{"content":"Hel"}}]}\\n\\ndata: {"choices":[{"delta":{"con')
    >>> t.feed(b'tent":"lo"}}]}\\n\\ndata: {"choices":[{"delta":{},"finish_reason":"stop"}]}\\n\\ndata: [DONE]\\n\\n')
    >>> (t.output_tokens, t.prompt_tokens, t.done, t.error)
    (2, 0, True, None)
    >>> t.feed(b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3}}\\n\\n')
    >>> (t.output_tokens, t.prompt_tokens)
    (3, 5)
    """

    __slots__ = ("_buf", "chunks", "usage", "done", "error")

    MAX_EVENT = 1 << 20  # a line longer than this is not a token chunk: stop looking at it

    def __init__(self) -> None:
        self._buf = b""
        self.chunks = 0
        self.usage: tuple[int, int] | None = None
        self.done = False
        self.error: str | None = None

    def feed(self, chunk: bytes) -> None:
        # Line by line: OpenAI streams put each JSON chunk on one `data:` line, and
        # servers end events with "\n\n" or "\r\n\r\n" (sse-starlette).
        buf = self._buf + chunk if self._buf else chunk
        if b'"usage"' not in buf and b'"error"' not in buf:
            self._fast(b"\n" + buf)
            return
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            if buf.startswith(b"data:", start):
                self._data(buf[start + 5:end].strip())
            start = end + 1
        self._keep(buf[start:])

    def _fast(self, buf: bytes) -> None:
        """The common case, token chunks and the end: what ``_data`` would find, for all lines at once."""
        end = buf.rfind(b"\n") + 1  # ``buf`` starts with a newline: 1 or more
        self.chunks += len(_TEXT_LINES.findall(buf, 0, end))
        at = buf.find(b"[DONE]", 0, end)
        while at >= 0:  # `data: [DONE]` on a line of its own ends the stream
            line = buf.rfind(b"\n", 0, at) + 1
            stop = buf.find(b"\n", at)
            if buf.startswith(b"data:", line) and buf[line + 5:stop].strip() == b"[DONE]":
                self.done = True
            at = buf.find(b"[DONE]", stop, end)
        self._keep(buf[end:])

    def _keep(self, rest: bytes) -> None:
        self._buf = rest if len(rest) <= self.MAX_EVENT else b""

    def _data(self, payload: bytes) -> None:
        if payload == b"[DONE]":
            self.done = True
            return
        if b'"usage"' not in payload and b'"error"' not in payload:
            # The common chunk: one token of text. Checked on the bytes, without parsing.
            if _HAS_TEXT.search(payload):
                self.chunks += 1
            return
        try:
            obj = json.loads(payload)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        if obj.get("error"):
            err = obj["error"]
            self.error = str(err.get("message", err)) if isinstance(err, dict) else str(err)
            return
        usage = _usage_numbers(obj.get("usage"))
        if usage is not None and (usage[0] or usage[1]):
            self.usage = usage
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            if text:
                self.chunks += 1

    @property
    def output_tokens(self) -> int:
        return self.usage[0] if self.usage else self.chunks

    @property
    def prompt_tokens(self) -> int:
        return self.usage[1] if self.usage else 0


class BodyTally:
    """Keeps up to ``limit`` bytes of a JSON body and reads ``usage`` from it at the end.

    >>> b = BodyTally()
    >>> b.feed(b'{"choices":[{"message":{"content":"hi"}}],')
    >>> b.feed(b'"usage":{"prompt_tokens":4,"completion_tokens":1}}')
    >>> (b.output_tokens, b.prompt_tokens)
    (1, 4)
    """

    __slots__ = ("_parts", "_size", "limit", "_parsed")

    def __init__(self, limit: int = 1 << 20) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self.limit = limit
        self._parsed: dict[str, Any] | None | bool = False

    def feed(self, chunk: bytes) -> None:
        if self._size <= self.limit:
            self._parts.append(chunk)
        self._size += len(chunk)

    def json(self) -> dict[str, Any] | None:
        if self._parsed is False:
            self._parsed = None
            if self._size <= self.limit:
                try:
                    obj = json.loads(b"".join(self._parts))
                    self._parsed = obj if isinstance(obj, dict) else None
                except ValueError:
                    self._parsed = None
        return self._parsed  # type: ignore[return-value]

    @property
    def over_limit(self) -> bool:
        """More than ``limit`` bytes came: ``json()`` is ``None`` for that reason, not for bad JSON."""
        return self._size > self.limit

    def _usage(self) -> tuple[int, int]:
        obj = self.json()
        numbers = _usage_numbers(obj.get("usage")) if obj else None
        return numbers or (0, 0)

    @property
    def output_tokens(self) -> int:
        return self._usage()[0]

    @property
    def prompt_tokens(self) -> int:
        return self._usage()[1]
