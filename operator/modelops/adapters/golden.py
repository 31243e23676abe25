"""Send golden prompts to a revision before it gets traffic (the pre-promotion quality gate).

The revision is reached through its Service, ``http://<service>.<namespace>.svc:80``.
Test seam (off in production): ``MODELOPS_REVISION_URLS`` names a JSON file mapping a
revision to a base URL, read at each call, so tests can point the operator at the
processes that stand in for a revision's pods (kwok pods run no containers).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx

from modelops.domain.golden import GoldenAnswer
from modelops.planning.analysis import GoldenRequest

TIMEOUT = httpx.Timeout(60.0, connect=5.0)


def base_url(request: GoldenRequest) -> str:
    overrides = os.environ.get("MODELOPS_REVISION_URLS")
    if overrides and Path(overrides).exists():
        mapped = json.loads(Path(overrides).read_text()).get(request.revision)
        if mapped:
            return mapped.rstrip("/")
    return f"http://{request.service}.{request.namespace}.svc:80"


def ask(request: GoldenRequest, client: httpx.Client | None = None) -> list[GoldenAnswer]:
    http = client or httpx.Client(timeout=TIMEOUT)
    url = base_url(request) + "/v1/chat/completions"
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
