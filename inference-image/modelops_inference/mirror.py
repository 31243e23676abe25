"""Shadow traffic: copies of real requests sent in the background to a new revision, answers discarded.

During a canary's mirror step the operator writes ``{"stable": …, "mirror": {"revision", "url",
"percent"}}`` to the split file (split.py). The stable revision's gateway answers every request
itself, as always, and for ``percent`` of them (drawn per request) also hands the request's body —
the bytes it already read, not a copy — to ``Mirror.send``, which returns at once: the copy is
posted by a background task to the new revision's Service with ``x-modelops-shadow: 1``, its answer
read and dropped chunk by chunk. The new revision's gateway serves it like any request (its engine,
serving config and metrics: the canary's analysis sees the shadow's traffic as its own) and counts
it in ``modelops_gateway_shadow_requests_total``; it never forwards or mirrors it again.

Nothing about the copy reaches the user: it is not awaited, its failure is only counted, and it
has resources of its own with fixed bounds, so a shadow that hangs or fails cannot grow the stable
gateway's memory or connections:

- at most ``MODELOPS_MIRROR_MAX_INFLIGHT`` copies in flight, holding at most
  ``MODELOPS_MIRROR_MAX_INFLIGHT_BYTES`` of request bodies between them; beyond either, the copy is
  skipped and counted (``result="skipped"``): shadow traffic is a sample, never a queue;
- its own connection pool, limited to the same number of connections, so copies never wait for,
  or take, the connections to the engine;
- ``MODELOPS_MIRROR_TIMEOUT`` seconds per copy, the answer included (``result="timeout"``);
  the connection is then closed, which tells the shadow's gateway to stop its engine.

``modelops_gateway_mirrored_total{shadow, route, result}`` counts every copy: ``sent`` (the
shadow answered, below 500), ``failed`` (a 5xx, a refused or broken connection), ``timeout``,
``skipped``. ``modelops_gateway_mirror_percent{shadow}`` says what the pod applies (one series per
pod; ``shadow=""`` and 0 when it mirrors nothing): the operator starts a mirror step's clock when
every stable pod reports the step's share.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Iterator, Mapping

import aiohttp
from prometheus_client.core import GaugeMetricFamily

from .metrics import PREFIX, GatewayMetrics
from .split import SHADOW_HEADER, MirrorTarget

log = logging.getLogger(__name__)

RESULTS = ("sent", "failed", "timeout", "skipped")


class Mirror:
    """Fire-and-forget copies to the shadow, bounded in number, bytes, connections and time."""

    def __init__(self, metrics: GatewayMetrics, *, max_inflight: int, max_bytes: int, timeout: float,
                 connect_timeout: float, target: Callable[[], MirrorTarget | None] = lambda: None) -> None:
        self.metrics = metrics
        self.max_inflight = max_inflight
        self.max_bytes = max_bytes
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(connect_timeout, timeout))
        self.inflight = 0
        self.inflight_bytes = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        metrics.registry.register(_MirrorCollector(self, metrics, target))

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # created on first use, inside the event loop
            connector = aiohttp.TCPConnector(limit=self.max_inflight, limit_per_host=self.max_inflight,
                                             keepalive_timeout=30, enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                                  cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    def send(self, target: MirrorTarget, route: str, path: str, body: bytes,
             headers: Callable[[], Mapping[str, str]]) -> bool:
        """Start a copy of the request (``body`` is kept by reference, never copied; ``headers`` are
        built only for a copy that is sent); never waits, never raises. ``False``: skipped, because
        the bounds are reached."""
        if self.inflight >= self.max_inflight or self.inflight_bytes + len(body) > self.max_bytes:
            self.metrics.mirrored(route, target.revision, "skipped")
            return False
        self.inflight += 1
        self.inflight_bytes += len(body)
        sent = {"Content-Type": "application/json", "Accept-Encoding": "identity", **headers(), SHADOW_HEADER: "1"}
        task = asyncio.get_running_loop().create_task(self._copy(target, route, target.url + path, body, sent))
        self._tasks.add(task)  # a reference until it is done (the loop keeps only weak ones)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _copy(self, target: MirrorTarget, route: str, url: str, body: bytes, headers: dict[str, str]) -> None:
        result = "failed"
        try:
            async with self._client().post(url, data=body, headers=headers, timeout=self.timeout) as resp:
                async for _ in resp.content.iter_any():
                    pass  # discarded as it comes: an answer is never held
                result = "sent" if resp.status < 500 else "failed"
        except asyncio.TimeoutError:
            result = "timeout"
        except (aiohttp.ClientError, OSError) as exc:
            log.debug("shadow copy to %s failed: %r", url, exc)
        finally:  # cancelled at shutdown: counted as failed
            self.inflight -= 1
            self.inflight_bytes -= len(body)
            self.metrics.mirrored(route, target.revision, result)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


class _MirrorCollector:
    """``modelops_gateway_mirror_percent`` and ``_mirror_inflight``, read when scraped (the split file
    is looked at then too, so the operator sees the pod apply a split before any request comes)."""

    def __init__(self, mirror: Mirror, metrics: GatewayMetrics, target: Callable[[], MirrorTarget | None]) -> None:
        self.mirror, self.target = mirror, target
        self.labels = ("namespace", "model", "revision")
        self.values = (metrics.namespace, metrics.model, metrics.revision)

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (GaugeMetricFamily(f"{PREFIX}_mirror_percent", "Percent of requests this (stable) revision's gateway "
                                  "copies to a shadow revision (a canary's mirror step); shadow is empty and the "
                                  "value 0 when it mirrors nothing", labels=[*self.labels, "shadow"]),
                GaugeMetricFamily(f"{PREFIX}_mirror_inflight", "Shadow copies in flight (bounded by "
                                  "MODELOPS_MIRROR_MAX_INFLIGHT)", labels=list(self.labels)))

    def describe(self) -> Iterator[Any]:
        yield from self._families()

    def collect(self) -> Iterator[Any]:
        percent, inflight = self._families()
        target = self.target()
        percent.add_metric([*self.values, target.revision if target else ""], target.percent if target else 0.0)
        inflight.add_metric(list(self.values), float(self.mirror.inflight))
        yield percent
        yield inflight
