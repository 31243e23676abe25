"""Send golden prompts to a revision before it gets traffic (the pre-promotion quality gate).

A revision is reached through its Service, ``http://<service>.<namespace>.svc:80``
(``service_url``). Where to reach it is a parameter of ``Golden``: the test entry point
(``tests/support/operator_main.py``) passes one that finds the processes standing in
for a revision's pods (kwok pods run no containers); production code has no other way.
"""

from __future__ import annotations

import time
from typing import Callable

import httpx

from modelops.domain.golden import GoldenAnswer
from modelops.planning.analysis import GoldenRequest

TIMEOUT = httpx.Timeout(60.0, connect=5.0)

RevisionUrl = Callable[[GoldenRequest], str]
"""Where a revision's gateway answers: a base URL, without the path."""


def service_url(request: GoldenRequest) -> str:
    """The revision's Service in the cluster.

    >>> service_url(GoldenRequest("chat-5b6a21", "chat-5b6a21", "ml", "gemma", []))
    'http://chat-5b6a21.ml.svc:80'
    """
    return f"http://{request.service}.{request.namespace}.svc:80"


class Golden:
    """Asks a revision the golden prompts, one chat completion each."""

    def __init__(self, revision_url: RevisionUrl | None = None) -> None:
        self.revision_url = revision_url or service_url

    def ask(self, request: GoldenRequest, client: httpx.Client | None = None) -> list[GoldenAnswer]:
        http = client or httpx.Client(timeout=TIMEOUT)
        url = self.revision_url(request).rstrip("/") + "/v1/chat/completions"
        answers = []
        try:
            for prompt in request.prompts:
                started = time.monotonic()
                try:
                    resp = http.post(url, json={"model": request.model, "max_tokens": 256,
                                                "messages": [{"role": "user", "content": prompt}]})
                except httpx.HTTPError as exc:
                    answers.append(GoldenAnswer(prompt, None, error=f"{type(exc).__name__}: {exc}"))
                    continue
                latency = time.monotonic() - started
                try:
                    text = resp.json()["choices"][0]["message"]["content"] or ""
                except (ValueError, KeyError, IndexError, TypeError):
                    text = resp.text
                answers.append(GoldenAnswer(prompt, resp.status_code, text, latency))
        finally:
            if client is None:
                http.close()
        return answers
