"""An apiserver stand-in for the operator's lightkube client: httpx2's MockTransport records every
request and answers it (the written object with a new resourceVersion, a list, or a failure as
the apiserver sends it: a JSON Status, or plain text for an API group that is not served)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import httpx2
import yaml

from modelops.adapters import apiclient

USER_AGENT = "modelops-operator/0.1.0 (modelops-0)"


def write_kubeconfig(path: Path, server: str, token: str = "t0ken") -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "test", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": "ml"}}]}))
    return path


def status(code: int, reason: str, message: str = "") -> httpx2.Response:
    """A failure as the apiserver sends it: a JSON Status."""
    return httpx2.Response(code, json={"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                       "message": message or reason, "reason": reason, "code": code})


def plain(code: int, text: str) -> httpx2.Response:
    """A failure that is not a Status, e.g. the apiserver's "404 page not found" for an unserved group."""
    return httpx2.Response(code, text=text, headers={"Content-Type": "text/plain; charset=utf-8"})


@dataclass
class Sent:
    method: str
    path: str
    params: dict[str, str]
    headers: httpx2.Headers
    body: Any
    timeout: dict[str, float]

    @property
    def line(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.method} {self.path}{'?' + query if query else ''}"


class FakeApi:
    """``answers[(method, path)]``: a response, or a function of the request's body giving one.
    Unanswered writes echo their body with ``metadata.resourceVersion`` "42"; unanswered lists are empty."""

    def __init__(self, answers: dict[tuple[str, str], httpx2.Response | Callable[[Any], httpx2.Response]]
                 | None = None) -> None:
        self.answers = answers or {}
        self.sent: list[Sent] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content) if request.content else None
        self.sent.append(Sent(request.method, request.url.path, dict(request.url.params), request.headers, body,
                              request.extensions.get("timeout", {})))
        answer = self.answers.get((request.method, request.url.path))
        if callable(answer):
            return answer(body)
        if answer is not None:
            return answer
        if request.method == "GET":
            return httpx2.Response(200, json={"kind": "List", "apiVersion": "v1", "metadata": {}, "items": []})
        if request.method == "DELETE":
            return httpx2.Response(200, json={"kind": "Status", "apiVersion": "v1", "status": "Success"})
        out = dict(body or {})
        out["metadata"] = {**(out.get("metadata") or {}), "resourceVersion": "42"}
        return httpx2.Response(200, json=out)

    def client(self, timeout: float = 30.0, user_agent: str | None = USER_AGENT,
               kubeconfig: Path | None = None):  # type: ignore[no-untyped-def]
        from lightkube import KubeConfig

        config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_dict({
            "current-context": "test", "clusters": [{"name": "test", "cluster": {"server": "https://apiserver"}}],
            "users": [{"name": "test", "user": {"token": "t0ken"}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}]})
        return apiclient.connect(config, timeout=timeout, user_agent=user_agent, transport=httpx2.MockTransport(self))
