"""The quality gate before promotion: golden prompts and what their answers must satisfy.

Pure: an answer (status, text, latency) and its expectations in, a verdict with a reason
a person understands out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import jsonschema

from modelops.domain.durations import seconds
from modelops.domain.spec import GoldenExpect

EXCERPT = 160


@dataclass(frozen=True)
class GoldenAnswer:
    prompt: str
    status: int | None  # None: no HTTP answer at all
    text: str = ""
    latency: float = 0.0
    error: str | None = None


def check(expect: GoldenExpect, answer: GoldenAnswer) -> str | None:
    """None when the answer satisfies every expectation, else why not.

    >>> check(GoldenExpect(regex="(?i)ok"), GoldenAnswer("Say ok", 200, "OK!", 0.2)) is None
    True
    >>> check(GoldenExpect(regex="(?i)ok", max_latency="1s"), GoldenAnswer("Say ok", 200, "ok", 2.5))
    'answered in 2.50s, more than maxLatency 1s'
    """
    if answer.error or answer.status is None:
        return f"no answer: {answer.error}"
    if answer.status != expect.status:
        return f"HTTP {answer.status}, expected {expect.status}"
    if expect.max_latency and answer.latency > seconds(expect.max_latency):
        return f"answered in {answer.latency:.2f}s, more than maxLatency {expect.max_latency}"
    if expect.regex and not re.search(expect.regex, answer.text):
        return f"the answer does not match /{expect.regex}/"
    if expect.json_schema is not None:
        try:
            jsonschema.validate(json.loads(answer.text), expect.json_schema)
        except json.JSONDecodeError:
            return "the answer is not JSON"
        except jsonschema.ValidationError as exc:
            return f"the answer's JSON is not valid against the schema: {exc.message}"
    return None


def excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT else flat[: EXCERPT - 1] + "…"
