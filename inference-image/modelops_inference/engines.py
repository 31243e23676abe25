"""What differs between engines: how to tell the model is loaded, and how to warm it up.

Requests themselves always go to the engine's OpenAI-compatible endpoints
(``/v1/chat/completions`` ...), which vLLM, Ollama and llama.cpp all serve.

- vllm: ``GET /health`` is 200 once the engine runs; ``GET /v1/models`` lists the
  served model name; warm-up is a one-token completion.
- ollama: ``GET /api/tags`` lists the pulled models (native API); warm-up is
  ``POST /api/generate`` with no prompt, which loads the model into memory and
  returns when it is loaded (Ollama's documented preload).
- openai: any OpenAI-compatible server (llama.cpp, a hosted API): ``GET /v1/models``
  answers; warm-up is a one-token chat completion.
- hosted: an OpenAI-compatible API outside the pod, at an OpenAI SDK's base URL (the paths
  have no ``/v1``), with the gateway's API key. ``GET <base>/models`` answering anything but
  401/403 and 5xx means reachable (some APIs list no models); 401/403 means the key is refused
  (unready: a revision with a bad key never gets traffic); warm-up is a one-token chat
  completion with the provider's model name, which checks key and model together. Reasons
  never repeat the API's answer to a refused key (providers echo part of it).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp


@dataclass(frozen=True)
class Probe:
    ready: bool
    reason: str


class Engine(Protocol):
    kind: str

    async def probe(self, session: aiohttp.ClientSession) -> Probe: ...

    async def warmup(self, session: aiohttp.ClientSession) -> Probe: ...


class _Base:
    kind = "openai"

    def __init__(self, base_url: str, model: str, *, headers: dict[str, str] | None = None,
                 timeout: float = 5.0, warmup_timeout: float = 300.0, warmup_prompt: str = "Hello") -> None:
        self.base_url = base_url
        self.model = model
        self.headers = headers or {}
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.warmup_timeout = aiohttp.ClientTimeout(total=warmup_timeout)
        self.warmup_prompt = warmup_prompt

    async def _get_json(self, session: aiohttp.ClientSession, path: str) -> tuple[int, Any]:
        async with session.get(self.base_url + path, headers=self.headers, timeout=self.timeout) as resp:
            body = await resp.read()
            try:
                return resp.status, json.loads(body) if body else None
            except ValueError:
                return resp.status, None

    async def _post(self, session: aiohttp.ClientSession, path: str, payload: dict[str, Any]) -> Probe:
        try:
            async with session.post(self.base_url + path, json=payload, headers=self.headers,
                                    timeout=self.warmup_timeout) as resp:
                body = await resp.read()
                if resp.status >= 300:
                    return Probe(False, f"warm-up {path} answered {resp.status}: {body[:200]!r}")
                return Probe(True, "warmed up")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return Probe(False, f"warm-up {path} failed: {type(exc).__name__}: {exc}")

    async def _models_lists(self, session: aiohttp.ClientSession) -> Probe:
        status, body = await self._get_json(session, "/v1/models")
        if status != 200:
            return Probe(False, f"GET /v1/models answered {status}")
        ids = [m.get("id") for m in (body or {}).get("data", []) if isinstance(m, dict)]
        if self.model not in ids:
            return Probe(False, f"engine does not list model {self.model!r} (it lists {ids})")
        return Probe(True, "model listed")

    async def probe(self, session: aiohttp.ClientSession) -> Probe:
        try:
            return await self._probe(session)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return Probe(False, f"engine unreachable: {type(exc).__name__}: {exc or ''}".rstrip(": "))

    async def _probe(self, session: aiohttp.ClientSession) -> Probe:
        raise NotImplementedError

    async def warmup(self, session: aiohttp.ClientSession) -> Probe:
        return await self._post(session, "/v1/chat/completions", {
            "model": self.model, "max_tokens": 1, "stream": False,
            "messages": [{"role": "user", "content": self.warmup_prompt}],
        })


class OpenAIEngine(_Base):
    kind = "openai"

    async def _probe(self, session: aiohttp.ClientSession) -> Probe:
        status, body = await self._get_json(session, "/v1/models")
        if status != 200:
            return Probe(False, f"GET /v1/models answered {status}")
        return Probe(True, "answering")


class VLLMEngine(_Base):
    kind = "vllm"

    async def _probe(self, session: aiohttp.ClientSession) -> Probe:
        status, _ = await self._get_json(session, "/health")
        if status != 200:
            return Probe(False, f"GET /health answered {status}")
        return await self._models_lists(session)

    async def warmup(self, session: aiohttp.ClientSession) -> Probe:
        return await self._post(session, "/v1/completions", {
            "model": self.model, "prompt": self.warmup_prompt, "max_tokens": 1, "stream": False})


class OllamaEngine(_Base):
    kind = "ollama"

    async def _probe(self, session: aiohttp.ClientSession) -> Probe:
        status, body = await self._get_json(session, "/api/tags")
        if status != 200:
            return Probe(False, f"GET /api/tags answered {status}")
        names = {m.get("name") for m in (body or {}).get("models", []) if isinstance(m, dict)}
        names |= {m.get("model") for m in (body or {}).get("models", []) if isinstance(m, dict)}
        wanted = {self.model, self.model + ":latest"} if ":" not in self.model else {self.model}
        if not names & wanted:
            return Probe(False, f"ollama has not pulled {self.model!r} (it has {sorted(n for n in names if n)})")
        return Probe(True, "model pulled")

    async def warmup(self, session: aiohttp.ClientSession) -> Probe:
        return await self._post(session, "/api/generate", {"model": self.model, "keep_alive": -1})


class HostedEngine(_Base):
    kind = "hosted"

    async def _probe(self, session: aiohttp.ClientSession) -> Probe:
        status, _ = await self._get_json(session, "/models")
        if status in (401, 403):
            return Probe(False, f"the API refused the gateway's API key: GET /models answered {status}")
        if status >= 500:
            return Probe(False, f"GET /models answered {status}")
        return Probe(True, "answering")

    async def warmup(self, session: aiohttp.ClientSession) -> Probe:
        payload = {"model": self.model, "max_tokens": 1, "stream": False,
                   "messages": [{"role": "user", "content": self.warmup_prompt}]}
        try:
            async with session.post(self.base_url + "/chat/completions", json=payload, headers=self.headers,
                                    timeout=self.warmup_timeout) as resp:
                body = await resp.read()
                if resp.status in (401, 403):
                    return Probe(False, f"warm-up: the API refused the gateway's API key ({resp.status})")
                if resp.status >= 300:
                    return Probe(False, f"warm-up /chat/completions answered {resp.status}: {body[:200]!r}")
                return Probe(True, "warmed up")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return Probe(False, f"warm-up /chat/completions failed: {type(exc).__name__}: {exc}")


def make_engine(kind: str, base_url: str, model: str, **kwargs: Any) -> _Base:
    cls = {"vllm": VLLMEngine, "ollama": OllamaEngine, "openai": OpenAIEngine, "hosted": HostedEngine}[kind]
    return cls(base_url, model, **kwargs)
