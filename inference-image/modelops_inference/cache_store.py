"""The response cache's storage: in memory (one LRU per process) or a shared Redis, and its metrics.

``ResponseCache`` is built once per app when ``MODELOPS_CACHE_ENABLED`` (or ``MODELOPS_CACHE_URL``) is
set. For each request the service asks it for a ``Plan`` (``plan``: ``None`` when the request is not
cacheable, see ``cache.py``), looks the answer up (``lookup``) and, on a miss, hands the relay a
``Recorder`` that keeps the engine's chunks and stores them once the answer is whole.

Stores:

- memory (default): ``cache.MemoryLRU``, at most ``MODELOPS_CACHE_MAX_BYTES`` in all, each entry
  kept at most ``MODELOPS_CACHE_TTL_SECONDS``; per process, so each replica has its own;
- Redis (``MODELOPS_CACHE_URL=redis://host:6379/0``, or ``rediss://``): shared by every replica of the
  revision, entries written with ``SET … EX <ttl>``; Redis's own memory policy bounds it. Keys are
  ``modelops:cache:v1:<namespace>:<revision>:<sha256>``: the revision is in the prefix as well as in
  the hash, so revisions sharing one Redis never read each other's answers.

The cache never fails a request. A Redis that does not answer within ``MODELOPS_CACHE_TIMEOUT``
seconds, refuses the connection or returns garbage is counted
(``modelops_gateway_cache_errors_total{operation}``) and the request goes to the engine; after a
failure Redis is left alone for a backoff (1 s, doubling to 30 s; lookups meanwhile are misses,
counted as ``operation="unavailable"``), so a dead Redis costs one timeout per backoff, not one per
request. Writes happen in the background, after the answer has gone out (at most 64 at once; more
are dropped and counted as ``operation="backlog"``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .cache import KEY_VERSION, Entry, MemoryLRU, cache_key, complete, no_cache_directives, uncacheable
from .metrics import GatewayMetrics
from .settings import GatewaySettings

log = logging.getLogger(__name__)

MAX_PENDING_WRITES = 64
REDIS_CONNECTIONS = 64
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0


@dataclass(frozen=True)
class Plan:
    """What the cache does for one request."""

    key: str
    route: str
    stream: bool
    read: bool  # look the answer up (not with Cache-Control: no-cache / no-store, nor for a shadow copy)
    write: bool  # store the engine's answer (not with no-store)

    @property
    def header(self) -> bytes:
        """``x-modelops-cache`` of an answer from the engine."""
        return b"miss" if self.read else b"bypass"


class RedisStore:
    """Entries in Redis under ``prefix``, with a time to live; every call bounded by ``timeout``."""

    def __init__(self, url: str, *, prefix: str, ttl: float, timeout: float, password: str | None = None) -> None:
        import redis.asyncio as aioredis  # only when configured: the in-memory cache needs no client
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.prefix = prefix
        self.ttl_ms = max(1, int(ttl * 1000))
        self.timeout = timeout
        extra: dict[str, Any] = {"password": password} if password else {}
        # A blocking pool: a burst waits (within the timeout) for one of a bounded number of connections
        # instead of opening one per request. No retries of its own: the caller counts a failure and
        # goes to the engine.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=REDIS_CONNECTIONS, timeout=timeout, socket_timeout=timeout,
            socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0), **extra)
        self.client = aioredis.Redis(connection_pool=pool)

    async def get(self, key: str) -> bytes | None:
        async with asyncio.timeout(self.timeout):
            return await self.client.get(self.prefix + key)

    async def set(self, key: str, raw: bytes) -> None:
        async with asyncio.timeout(self.timeout):
            await self.client.set(self.prefix + key, raw, px=self.ttl_ms)

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.client.connection_pool.disconnect()


def redis_prefix(namespace: str, revision: str) -> str:
    """
    >>> redis_prefix("ml", "chat-5b6a21")
    'modelops:cache:v1:ml:chat-5b6a21:'
    """
    return f"modelops:cache:v{KEY_VERSION}:{namespace}:{revision}:"


def redacted(url: str) -> str:
    """A Redis URL without its password, for logs.

    >>> redacted("redis://:s3cret@redis.ml.svc:6379/0"), redacted("redis://redis:6379")
    ('redis://***@redis.ml.svc:6379/0', 'redis://redis:6379')
    """
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    return f"{scheme}{sep}***@{rest.rsplit('@', 1)[1]}"


class ResponseCache:
    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        s = settings
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.max_entry_bytes = s.cache_max_entry_bytes
        self.memory: MemoryLRU | None = None
        self.redis: RedisStore | None = None
        if s.cache_url:
            password = s.cache_password_file.read_text().strip() if s.cache_password_file else None
            self.redis = RedisStore(s.cache_url, prefix=redis_prefix(s.namespace, s.revision), ttl=s.cache_ttl_seconds,
                                    timeout=s.cache_timeout, password=password)
            store = "redis"
        else:
            self.memory = MemoryLRU(s.cache_max_bytes, s.cache_ttl_seconds,
                                    on_evict=lambda reason, _: metrics.cache_evicted(reason))
            store = "memory"
        metrics.cache_enabled(store, self.memory)
        self.store_name = store
        self._retry_at = float("-inf")
        self._backoff = 0.0
        self._writes: set[asyncio.Task[None]] = set()
        log.info("response cache on: %s, entries up to %d bytes, kept %g s", (
            f"Redis at {redacted(s.cache_url)}" if s.cache_url else f"in memory, up to {s.cache_max_bytes} bytes"),
            s.cache_max_entry_bytes, s.cache_ttl_seconds)

    # --- per request --------------------------------------------------------------------
    def plan(self, route: str, body: dict[str, Any], headers: Mapping[str, str], *, shadow: bool) -> Plan | None:
        """``None``: the answer must come from the engine (``cache.uncacheable``). ``body``: as the engine gets it.

        A shadow copy (a canary's mirror step) is never answered from the cache: it is there so that the
        new revision's engine serves real traffic and its metrics show it."""
        if uncacheable(route, body) is not None:
            return None
        skip_read, skip_write = no_cache_directives(headers.get("cache-control"))
        s = self.settings
        stream = bool(body.get("stream")) and route != "embeddings"
        key = cache_key(route, body, stream=stream, namespace=s.namespace, revision=s.revision, model=s.model,
                        engine_model=s.upstream_model)
        return Plan(key, route, stream, read=not (skip_read or shadow), write=not skip_write)

    async def lookup(self, plan: Plan) -> Entry | None:
        """The stored answer, counted as a hit, or ``None`` (a miss; a failing store counts an error too)."""
        entry = await self._get(plan.key)
        if entry is None or entry.sse != plan.stream:
            self.metrics.cache_missed(plan.route)
            return None
        self.metrics.cache_hit(plan.route, plan.stream)
        return entry

    async def _get(self, key: str) -> Entry | None:
        if self.memory is not None:
            return self.memory.get(key)
        assert self.redis is not None
        if not self._available():
            self.metrics.cache_error("unavailable")
            return None
        try:
            raw = await self.redis.get(key)
        except Exception as exc:  # noqa: BLE001 - whatever the client raises, the request goes on
            self._failed("get", exc)
            return None
        self._backoff = 0.0
        if raw is None:
            return None
        try:
            return Entry.decode(raw)
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            self.metrics.cache_error("decode")
            log.warning("response cache: unreadable entry %s: %s", key[:12], exc)
            return None

    def recorder(self, plan: Plan) -> "Recorder | None":
        return Recorder(self, plan) if plan.write else None

    def store(self, plan: Plan, entry: Entry) -> None:
        if self.memory is not None:
            if self.memory.put(plan.key, entry):
                self.metrics.cache_stored(plan.route)
            return
        if not self._available():
            self.metrics.cache_error("unavailable")
            return
        if len(self._writes) >= MAX_PENDING_WRITES:
            self.metrics.cache_error("backlog")
            return
        task = asyncio.get_running_loop().create_task(self._set(plan, entry.encode()))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _set(self, plan: Plan, raw: bytes) -> None:
        assert self.redis is not None
        try:
            await self.redis.set(plan.key, raw)
        except Exception as exc:  # noqa: BLE001
            self._failed("set", exc)
            return
        self._backoff = 0.0
        self.metrics.cache_stored(plan.route)

    # --- Redis down -------------------------------------------------------------------------
    def _available(self) -> bool:
        return self.clock() >= self._retry_at

    def _failed(self, operation: str, exc: BaseException) -> None:
        self.metrics.cache_error(operation)
        self._backoff = min(BACKOFF_MAX, self._backoff * 2) if self._backoff else BACKOFF_FIRST
        self._retry_at = self.clock() + self._backoff
        log.warning("response cache: Redis %s failed (%s); serving from the engine, next try in %g s", operation,
                    type(exc).__name__ + (f": {exc}" if str(exc) else ""), self._backoff)

    async def aclose(self) -> None:
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=2)
        if self.redis is not None:
            await self.redis.aclose()


class Recorder:
    """The engine's chunks of one cacheable answer, kept while they are relayed (at most the entry cap)."""

    __slots__ = ("cache", "plan", "chunks", "size", "content_type", "cache_control")

    def __init__(self, cache: ResponseCache, plan: Plan) -> None:
        self.cache = cache
        self.plan = plan
        self.chunks: list[bytes] | None = []
        self.size = 0
        self.content_type = ""
        self.cache_control: str | None = None

    def begin(self, content_type: str, headers: list[tuple[bytes, bytes]]) -> None:
        self.content_type = content_type
        self.cache_control = next((v.decode("latin-1") for k, v in headers if k == b"cache-control"), None)

    def add(self, chunk: bytes) -> None:
        if self.chunks is None:
            return
        self.size += len(chunk)
        if self.size > self.cache.max_entry_bytes:
            self.chunks = None  # too large to keep: relayed, not stored
            return
        self.chunks.append(chunk)

    def finish(self) -> None:
        """The answer went out whole (200, not broken off, not left): store it if it is complete."""
        if self.chunks is None or not self.chunks:
            return
        if not complete(self.plan.route, self.plan.stream, self.content_type, self.chunks):
            return
        entry = Entry(tuple(self.chunks), self.content_type, self.cache_control)
        self.chunks = None
        self.cache.store(self.plan, entry)
