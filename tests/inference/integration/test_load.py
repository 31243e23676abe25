"""Load: 200 concurrent streaming requests for 60 s through the gateway to a fast stub engine.

Bounded in count and time, loopback only. A user would check: no errors, every stream
complete, and afterwards nothing left behind: no request in flight, no engine
connection streaming, no growth in the gateway's tasks, file descriptors or memory.
MODELOPS_LOAD_SECONDS shortens it for a quick local run.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Callable

import aiohttp
import pytest

from tests.components.servers import Gateway, StubEngine
from tests.inference.helpers import value
from tests.support.procfs import rss_mib
from tests.support.wait import wait_for

STREAMS = 200
SECONDS = float(os.environ.get("MODELOPS_LOAD_SECONDS", "60"))
MAX_REQUESTS = 2_000_000  # a hard cap on the loop, whatever the machine's speed


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def drive(url: str, seconds: float, pid: int) -> dict:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    stats = {"ok": 0, "errors": [], "samples": []}
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=STREAMS)

    async def sampler() -> None:
        while time.monotonic() < deadline:
            await asyncio.sleep(seconds / 8)
            stats["samples"].append((time.monotonic(), rss_mib(pid), open_fds(pid)))

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline and stats["ok"] + len(stats["errors"]) < MAX_REQUESTS:
            try:
                async with session.post(url, json=body) as r:
                    raw = await r.read()
                if r.status != 200 or not raw.rstrip().endswith(b"data: [DONE]"):
                    stats["errors"].append(f"{r.status}: {raw[-200:]!r}")
                else:
                    stats["ok"] += 1
            except Exception as exc:  # noqa: BLE001 - every failure is reported
                stats["errors"].append(repr(exc))

    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(sampler(), *(worker(session) for _ in range(STREAMS)))
    return stats


@pytest.mark.load
def test_200_concurrent_streams_for_a_minute(start_gateway: Callable[..., Gateway],
                                            start_stub: Callable[..., StubEngine]) -> None:
    engine = start_stub(tokens=16, token_delay=0.01)  # each stream lasts >= 160 ms: 200 really in flight
    gw = start_gateway({"MODELOPS_ENGINE": "openai", "MODELOPS_ENGINE_URL": engine.url, "MODELOPS_MODEL": "chat",
                        "MODELOPS_ENGINE_MODEL": engine.model, "MODELOPS_LOG_LEVEL": "warning"})
    pid = gw.proc.pid
    tasks_before = value(gw.metrics(), "modelops_gateway_event_loop_tasks")

    stats = asyncio.run(drive(f"{gw.url}/v1/chat/completions", SECONDS, pid))

    assert stats["errors"] == [], stats["errors"][:5]
    assert stats["ok"] >= STREAMS * 5, stats["ok"]
    # Afterwards nothing is left behind.
    wait_for(lambda: value(gw.metrics(), "modelops_gateway_inflight_requests") == 0, timeout=10,
             what="no request in flight")
    wait_for(lambda: engine.stats()["active"] == 0, timeout=10, what="no engine stream open")
    wait_for(lambda: value(gw.metrics(), "modelops_gateway_event_loop_tasks") <= tasks_before + 2, timeout=10,
             what="the gateway's tasks back to where they were")
    m = gw.metrics()
    assert value(m, "modelops_gateway_requests_total", code="200") == stats["ok"]
    assert value(m, "modelops_gateway_upstream_errors_total") == 0
    # Flat under steady load: compare the second quarter with the end.
    samples = stats["samples"]
    assert len(samples) >= 6
    _, rss_early, fds_early = samples[1]
    _, rss_late, fds_late = samples[-1]
    assert rss_late - rss_early < max(16.0, 0.15 * rss_early), samples
    assert fds_late <= fds_early + 20, samples
    assert open_fds(pid) <= fds_early + 20
    print(f"\nload: {stats['ok']} streams in {SECONDS:.0f}s ({stats['ok'] / SECONDS:.0f}/s) at {STREAMS} concurrent; "
          f"gateway RSS {rss_early:.1f} -> {rss_late:.1f} MiB, fds {fds_early} -> {fds_late}")
