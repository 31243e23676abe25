"""Shadow traffic (mirror.py) between real gateway processes.

Two revisions, each a real gateway in front of its own stub engine: the stable one reads the split
file the operator's ConfigMap would put in its pod and copies a share of requests to the shadow's
"Service" (its loopback address here). Users must only ever see the stable revision: every answer,
its latency, and the stable gateway's memory and connections, whatever the shadow does.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import aiohttp
import httpx
import pytest

from tests.components.servers import Gateway, StubEngine
from tests.inference.helpers import samples, value
from tests.support.procfs import connections_to, rss_mib
from tests.support.wait import wait_for

STABLE, SHADOW = "chat-aaaa", "chat-bbbb"
BODY = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


class Pair:
    def __init__(self, stable: Gateway, shadow: Gateway, stable_engine: StubEngine, shadow_engine: StubEngine,
                 split_file: Path) -> None:
        self.stable, self.shadow = stable, shadow
        self.stable_engine, self.shadow_engine = stable_engine, shadow_engine
        self.split_file = split_file

    def mirror(self, percent: float | None) -> None:
        doc: dict[str, Any] = {} if percent is None else {
            "stable": STABLE, "mirror": {"revision": SHADOW, "url": self.shadow.url, "percent": percent}}
        tmp = self.split_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.split_file)  # like the kubelet's atomic ..data swap
        want = [({"shadow": SHADOW}, float(percent))] if percent else [({"shadow": ""}, 0.0)]
        # What the operator's probe reads: the pod reports the share it applies, before any request.
        wait_for(lambda: reported(self.stable) == want, timeout=10, interval=0.2,
                 what=f"the stable gateway to report mirroring {percent or 0}%")

    def mirrored(self, result: str | None = None) -> float:
        labels = {"result": result} if result else {}
        return value(self.stable.metrics(), "modelops_gateway_mirrored_total", shadow=SHADOW, **labels)


def reported(gateway: Gateway) -> list[tuple[dict[str, str], float]]:
    """``modelops_gateway_mirror_percent`` as the pod exports it: one series, the shadow and the share."""
    return [({"shadow": labels["shadow"]}, v) for labels, v in
            samples(gateway.metrics(), "modelops_gateway_mirror_percent")]


def start_pair(start_gateway: Callable[..., Gateway], start_stub: Callable[..., StubEngine], tmp_path: Path,
               **stable_env: str) -> Pair:
    engines = start_stub(tokens=4), start_stub(tokens=4)
    split_file = tmp_path / "split" / "split.json"
    split_file.parent.mkdir()
    common = {"MODELOPS_ENGINE": "openai", "MODELOPS_MODEL": "chat", "MODELOPS_RETRIES": "0",
              "MODELOPS_SPLIT_FILE": str(split_file)}
    shadow = start_gateway({**common, "MODELOPS_ENGINE_URL": engines[1].url, "MODELOPS_ENGINE_MODEL": engines[1].model,
                            "MODELOPS_REVISION": SHADOW})
    stable = start_gateway({**common, "MODELOPS_ENGINE_URL": engines[0].url, "MODELOPS_ENGINE_MODEL": engines[0].model,
                            "MODELOPS_REVISION": STABLE, **stable_env})
    for e in engines:
        e.reset()  # forget the warm-up requests
    return Pair(stable, shadow, engines[0], engines[1], split_file)


@pytest.fixture
def pair(start_gateway: Callable[..., Gateway], start_stub: Callable[..., StubEngine], tmp_path: Path) -> Pair:
    return start_pair(start_gateway, start_stub, tmp_path)


def ask(pair: Pair, *, stream: bool = False, path: str = "/v1/chat/completions", body: dict | None = None) -> str:
    r = httpx.post(pair.stable.url + path, json=body or dict(BODY, stream=stream), timeout=10)
    assert r.status_code == 200, r.text
    return r.headers["x-modelops-revision"]


async def drive(url: str, n: int, concurrency: int, stream: bool = True) -> list[float]:
    """``n`` requests, ``concurrency`` at a time; each one's time to its first byte (the user's TTFT).
    Every answer must be 200 from the stable revision."""
    latencies: list[float] = []
    queue = iter(range(n))

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in queue:
            started = time.perf_counter()
            async with session.post(url + "/v1/chat/completions", json=dict(BODY, stream=stream)) as resp:
                await resp.content.readany()
                latencies.append(time.perf_counter() - started)
                await resp.read()
                assert resp.status == 200 and resp.headers["x-modelops-revision"] == STABLE

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return latencies


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def test_the_stable_gateway_copies_its_share_and_users_get_only_the_stable_answers(pair: Pair) -> None:
    for _ in range(20):
        assert ask(pair) == STABLE  # no mirror yet: nothing is copied
    assert pair.shadow_engine.stats()["requests"] == 0
    assert reported(pair.stable) == [({"shadow": ""}, 0.0)]
    pair.mirror(30)
    n = 300
    for i in range(n):
        assert ask(pair, stream=i % 2 == 0) == STABLE
    assert pair.stable_engine.stats()["requests"] == n + 20  # the stable answered every request itself
    wait_for(lambda: value(pair.stable.metrics(), "modelops_gateway_mirror_inflight") == 0, timeout=10,
             interval=0.1, what="the copies to finish")
    sent = pair.mirrored("sent")
    assert 0.2 * n <= sent <= 0.4 * n, sent  # 30 % of requests, drawn per request
    assert pair.mirrored() == sent  # none failed, timed out or skipped
    # The shadow served them like any request, under its own revision: its analysis sees them as its own.
    sm = pair.shadow.metrics()
    assert value(sm, "modelops_gateway_requests_total", revision=SHADOW, route="chat", code="200") == sent
    assert value(sm, "modelops_gateway_shadow_requests_total", revision=SHADOW, route="chat") == sent
    assert value(sm, "modelops_gateway_time_to_first_token_seconds_count", revision=SHADOW) == sent
    assert pair.shadow_engine.stats()["requests"] == sent
    assert pair.shadow_engine.stats()["last_body"]["max_tokens"] == 4  # the user's request, as sent
    # The stable's own series count only what it served: every request, once.
    assert value(pair.stable.metrics(), "modelops_gateway_requests_total", revision=STABLE, code="200") == n + 20
    # /predict is copied the same way; the shadow's copies are never mirrored again.
    pair.mirror(100)
    assert ask(pair, path="/predict", body={"query": "sky?"}) == STABLE
    wait_for(lambda: value(pair.shadow.metrics(), "modelops_gateway_shadow_requests_total", route="predict") == 1,
             timeout=10, interval=0.1, what="the /predict copy")
    assert value(pair.shadow.metrics(), "modelops_gateway_mirrored_total") == 0
    pair.mirror(None)  # the step is over: {} means no mirror
    before = pair.mirrored()
    for _ in range(10):
        ask(pair)
    assert pair.mirrored() == before


def test_a_hanging_shadow_adds_no_latency_and_the_bounds_hold(start_gateway: Callable[..., Gateway],
                                                              start_stub: Callable[..., StubEngine],
                                                              tmp_path: Path) -> None:
    bound = 8
    pair = start_pair(start_gateway, start_stub, tmp_path, MODELOPS_MIRROR_MAX_INFLIGHT=str(bound),
                      MODELOPS_MIRROR_TIMEOUT="2")
    pid, shadow_port = pair.stable.proc.pid, pair.shadow.port
    asyncio.run(drive(pair.stable.url, 100, 16))  # warm up both paths
    baseline = asyncio.run(drive(pair.stable.url, 600, 16))
    rss_before = rss_mib(pid)
    pair.shadow_engine.hang(3600, count=100_000)  # the shadow accepts every copy and never answers
    pair.mirror(100)
    peaks = {"inflight": 0.0, "connections": 0}

    async def load_with_sampler() -> list[float]:
        done = asyncio.Event()

        async def sampler() -> None:
            async with aiohttp.ClientSession() as session:
                while not done.is_set():
                    async with session.get(pair.stable.url + "/metrics") as resp:
                        text = await resp.text()
                    peaks["inflight"] = max(peaks["inflight"], value(text, "modelops_gateway_mirror_inflight"))
                    peaks["connections"] = max(peaks["connections"], connections_to(pid, {shadow_port}))
                    await asyncio.sleep(0.05)

        task = asyncio.create_task(sampler())
        try:
            out = []
            for _ in range(3):  # past the per-copy timeout: copies time out, slots free, new ones hang
                out += await drive(pair.stable.url, 600, 16)
            return out
        finally:
            done.set()
            await task

    hanging = asyncio.run(load_with_sampler())
    rss_after = rss_mib(pid)
    base50, base95 = p(baseline, 50), p(baseline, 95)
    hang50, hang95 = p(hanging, 50), p(hanging, 95)
    print(f"user TTFT p50/p95 no mirror {base50 * 1e3:.2f}/{base95 * 1e3:.2f} ms, hanging shadow "
          f"{hang50 * 1e3:.2f}/{hang95 * 1e3:.2f} ms; mirror in flight peak {peaks['inflight']:.0f}, connections "
          f"to the shadow peak {peaks['connections']}; RSS {rss_before:.1f} -> {rss_after:.1f} MiB")
    # The user's request never waits for the copy: not one comes near the copy's timeout (2 s, while the
    # shadow hangs for an hour), and the typical one costs no more than noise on a shared machine.
    assert max(hanging) < 1.0, max(hanging)
    assert hang50 <= base50 * 2 + 0.010, (base50, hang50)
    assert hang95 <= base95 * 3 + 0.020, (base95, hang95)
    # Bounded: copies in flight and connections to the shadow never pass the bound; memory does not grow.
    assert 0 < peaks["inflight"] <= bound and 0 < peaks["connections"] <= bound, peaks
    assert rss_after - rss_before < 20, (rss_before, rss_after)
    wait_for(lambda: value(pair.stable.metrics(), "modelops_gateway_mirror_inflight") == 0, timeout=10,
             interval=0.2, what="the hanging copies to time out")
    skipped, timeout = pair.mirrored("skipped"), pair.mirrored("timeout")
    assert skipped > 0 and timeout > 0 and pair.mirrored("sent") == 0
    assert pair.mirrored() == len(hanging)  # every request was drawn (100 %): each copy counted once
    assert connections_to(pid, {shadow_port}) == 0  # a timed-out copy closes its connection
    assert pair.stable_engine.stats()["requests"] == 100 + 600 + len(hanging)


def test_a_failing_or_unreachable_shadow_changes_nothing_for_users(pair: Pair) -> None:
    pair.shadow_engine.fail(500, count=1000)
    pair.mirror(100)
    for i in range(30):
        assert ask(pair, stream=i % 2 == 0) == STABLE
    wait_for(lambda: pair.mirrored("failed") == 30, timeout=10, interval=0.1, what="the failed copies")
    # The shadow's own metrics show its errors: what the canary's errorRate analysis reads.
    assert value(pair.shadow.metrics(), "modelops_gateway_requests_total", revision=SHADOW, code="500") == 30
    pair.shadow.stop()  # scaled down (an abort) before the kubelet refreshed the split file
    for _ in range(20):
        assert ask(pair) == STABLE
    wait_for(lambda: pair.mirrored("failed") == 50, timeout=10, interval=0.1, what="the refused copies")
    m = pair.stable.metrics()
    assert value(m, "modelops_gateway_requests_total", revision=STABLE, code="200") == 50
    assert value(m, "modelops_gateway_engine_ready", revision=STABLE) == 1  # the stable engine is not suspected
    assert value(m, "modelops_gateway_upstream_errors_total") == 0  # copies are not the stable's upstream


def test_only_the_stable_revision_mirrors(pair: Pair) -> None:
    pair.mirror(100)
    # The shadow reads the same file but never mirrors (it is not the stable revision named there).
    r = httpx.post(pair.shadow.url + "/v1/chat/completions", json=BODY, timeout=10)
    assert r.status_code == 200 and r.headers["x-modelops-revision"] == SHADOW
    assert reported(pair.shadow) == [({"shadow": ""}, 0.0)]
    # A request already forwarded to an A/B challenger is not copied either.
    r = httpx.post(pair.stable.url + "/v1/chat/completions", json=BODY, headers={"x-modelops-variant": "challenger"},
                   timeout=10)
    assert r.status_code == 200
    pair.split_file.write_text("{not json")
    wait_for(lambda: reported(pair.stable) == [({"shadow": ""}, 0.0)], timeout=10, interval=0.2,
             what="a bad file to mean no mirror")
    assert pair.mirrored() == 0
