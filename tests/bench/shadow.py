"""``python -m tests.bench.shadow``: what shadow traffic (a canary's mirror step) costs the user.

Not a test: it measures and prints. Everything runs on this machine, loopback only, with
bounded request counts. The stable revision is a real gateway in front of a fast 16-token SSE
stub engine; it mirrors to a second real gateway (the shadow) in front of its own stub. The same
streamed requests go through the stable gateway in three configurations, interleaved round by
round:

- ``no mirror``: the split file says nothing (``{}``);
- ``fast shadow``: ``--percent`` (default 100) of requests copied to a shadow that answers at once;
- ``hanging shadow``: the same copies to a shadow whose engine accepts every request and never
  answers, with the gateway's default bound of 64 copies in flight (``MODELOPS_MIRROR_MAX_INFLIGHT``)
  and a per-copy timeout of 5 s (``MODELOPS_MIRROR_TIMEOUT``, 60 s by default; shorter here so
  that the hanging copies are gone before the next round): 64 copies hang, the rest are skipped
  and counted.

Each configuration runs twice: **paced** (``--rate`` requests/s offered, at most ``--streams``
at once: the gateway below saturation, as with LLM traffic, where each request takes seconds),
which gives the user's time to first token (TTFT, first chunk) p50 and p99; and **saturating**
(``--streams`` back-to-back streams), which gives the most requests/s the stable gateway serves,
since a copy costs it CPU (an HTTP request of its own) even though no user waits for it.
Also reported: the stable gateway's own CPU time per request (from /proc), its RSS and the
connections it holds to the shadows at the end, and what became of the copies
(``modelops_gateway_mirrored_total`` by result). Placement: with two CPUs or more the stable
gateway runs on a CPU of its own and everything else (load generator, stubs, shadow gateway) on
the others, as in production where the gateway container has CPU of its own. Every figure is the
median over ``--rounds`` rounds.

``--smoke``: a tiny run (few requests, one round) that only checks the benchmark works, for CI;
its figures mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.bench.gateway.__main__ import Placement, group_cpu_seconds, spawning_on
from tests.components.servers import Gateway, StubEngine
from tests.inference.helpers import samples, value
from tests.support.procfs import connections_to, rss_mib
from tests.support.wait import wait_for

STABLE, FAST, HANGING = "chat-stable", "chat-fast", "chat-hanging"
BODY = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}
SCENARIOS = ("no mirror", "fast shadow", "hanging shadow")


@dataclass
class Result:
    ttft: list[float] = field(default_factory=list)  # paced
    seconds: float = 0.0  # saturating: time for ``saturated`` requests
    saturated: int = 0
    cpu: float = 0.0
    rss: float = 0.0
    connections: int = 0
    copies: dict[str, float] = field(default_factory=dict)

    def pct(self, q: float) -> float:
        s = sorted(self.ttft)
        return s[min(len(s) - 1, int(q * len(s)))] * 1000





async def measure(url: str, streams: int, requests: int, warmup: int,
                  rate: float | None = None) -> tuple[float, list[float]]:
    """``requests`` streams after a warm-up: back to back on ``streams`` connections, or paced at
    ``rate`` per second (at most ``streams`` at once). Returns the time taken and each TTFT."""
    ttfts: list[float] = []
    slots = asyncio.Semaphore(streams)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=streams),
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def one(record: bool) -> None:
            async with slots:
                started = time.perf_counter()
                async with session.post(url + "/v1/chat/completions", json=BODY) as r:
                    await r.content.readany()
                    at = time.perf_counter()
                    await r.read()
            if r.status != 200 or r.headers.get("x-modelops-revision") != STABLE:
                raise SystemExit(f"a user got {r.status} from {r.headers.get('x-modelops-revision')}")
            if record:
                ttfts.append(at - started)

        async def worker(n: int, record: bool) -> None:
            for _ in range(n):
                await one(record)

        await asyncio.gather(*(worker(max(1, warmup // streams), False) for _ in range(streams)))
        started = time.perf_counter()
        if rate is None:
            await asyncio.gather(*(worker(max(1, requests // streams), True) for _ in range(streams)))
        else:
            tasks = []
            for i in range(requests):
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(True)))
            await asyncio.gather(*tasks)
        return time.perf_counter() - started, ttfts


def write_split(path: Path, stable: Gateway, shadow: tuple[str, Gateway] | None, percent: int) -> None:
    doc = {} if shadow is None else {"stable": STABLE, "mirror": {"revision": shadow[0], "url": shadow[1].url,
                                                                  "percent": percent}}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)
    want = [(shadow[0] if shadow else "", float(percent) if shadow else 0.0)]
    wait_for(lambda: [(labels["shadow"], v) for labels, v in
                      samples(stable.metrics(), "modelops_gateway_mirror_percent")] == want,
             timeout=15, interval=0.1, what="the stable gateway to apply the split")


def copies(stable: Gateway) -> dict[str, float]:
    text = stable.metrics()
    return {r: value(text, "modelops_gateway_mirrored_total", result=r) for r in ("sent", "failed", "timeout",
                                                                                   "skipped")}


def run(streams: int, requests: int, rounds: int, percent: int, rate: float, logs: Path) -> dict[str, list[Result]]:
    placement = Placement.make("pinned")
    split = logs / "split.json"
    split.write_text("{}")
    common = {"MODELOPS_ENGINE": "openai", "MODELOPS_MODEL": "chat", "MODELOPS_LOG_LEVEL": "warning",
              "MODELOPS_SPLIT_FILE": str(split)}
    with spawning_on(placement.client):  # the shadows too: in production they are other pods
        engines = {STABLE: StubEngine(logs, tokens=16, name=f"stub-{STABLE}").start()}
        engines.update({name: StubEngine(logs, tokens=16, name=f"stub-{name}").start() for name in (FAST, HANGING)})
        shadows = {name: Gateway(logs, {**common, "MODELOPS_ENGINE_URL": engines[name].url, "MODELOPS_REVISION": name,
                                        "MODELOPS_ENGINE_MODEL": engines[name].model}, name=f"gateway-{name}").start()
                   for name in (FAST, HANGING)}
    with spawning_on(placement.proxy):
        stable = Gateway(logs, {**common, "MODELOPS_ENGINE_URL": engines[STABLE].url, "MODELOPS_REVISION": STABLE,
                                "MODELOPS_ENGINE_MODEL": engines[STABLE].model, "MODELOPS_MIRROR_TIMEOUT": "5"},
                         name="gateway-stable").start()
    engines[HANGING].hang(3600, count=1_000_000)  # accepts every copy, never answers
    ports = {g.port for g in shadows.values()}
    results: dict[str, list[Result]] = {s: [] for s in SCENARIOS}
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, placement.client)
    print(f"placement {placement.describe().replace('proxy under test (gateway / nginx)', 'stable gateway')}; "
          f"{requests} requests per run paced at {rate:g}/s (at most {streams} at once), then {requests} back to "
          f"back on {streams} streams; {percent}% mirrored", flush=True)
    try:
        for round_ in range(rounds):
            for scenario in SCENARIOS:
                target = {"no mirror": None, "fast shadow": (FAST, shadows[FAST]),
                          "hanging shadow": (HANGING, shadows[HANGING])}[scenario]
                write_split(split, stable, target, percent)
                wait_for(lambda: value(stable.metrics(), "modelops_gateway_mirror_inflight") == 0, timeout=30,
                         interval=0.2, what="the last configuration's copies to end")
                copies_before = copies(stable)
                warmup = max(50, streams * 2)
                _, ttft = asyncio.run(measure(stable.url, streams, requests, warmup=warmup, rate=rate))
                cpu_before = group_cpu_seconds(stable.proc.pid)
                took, done = asyncio.run(measure(stable.url, streams, requests, warmup=warmup))
                cpu = group_cpu_seconds(stable.proc.pid) - cpu_before
                after = copies(stable)
                results[scenario].append(Result(
                    ttft=ttft, seconds=took, saturated=len(done), cpu=cpu, rss=rss_mib(stable.proc.pid),
                    connections=connections_to(stable.proc.pid, ports),
                    copies={k: after[k] - copies_before[k] for k in after}))
                print(f"  round {round_ + 1} {scenario:15s} paced p50 {results[scenario][-1].pct(0.5):6.2f} ms, "
                      f"saturating {len(done) / took:7.0f} req/s", file=sys.stderr, flush=True)
    finally:
        os.sched_setaffinity(0, before)
        stable.stop()
        for g in shadows.values():
            g.stop()
        for e in engines.values():
            e.stop()
    return results


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def report(results: dict[str, list[Result]], rounds: int, rate: float) -> None:
    print(f"\nUser TTFT through the stable gateway, by what it mirrors (median of {rounds} rounds)\n")
    print(f"| scenario | TTFT p50 (ms) at {rate:g}/s | TTFT p99 (ms) at {rate:g}/s | saturating req/s "
          "| gateway CPU/req (µs) | RSS (MiB) | conns to shadows | copies sent / skipped / timeout / failed "
          "(last round) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    p50, rps = {}, {}
    for scenario, rs in results.items():
        p50[scenario] = med([r.pct(0.5) for r in rs])
        rps[scenario] = med([r.saturated / r.seconds for r in rs])
        c = rs[-1].copies
        print(f"| {scenario} | {p50[scenario]:.2f} | {med([r.pct(0.99) for r in rs]):.2f} | {rps[scenario]:.0f} | "
              f"{med([1e6 * r.cpu / r.saturated for r in rs]):.0f} | {rs[-1].rss:.1f} | {rs[-1].connections} | "
              f"{c['sent']:.0f} / {c['skipped']:.0f} / {c['timeout']:.0f} / {c['failed']:.0f} |")
    base, top = p50["no mirror"], rps["no mirror"]
    print(f"\nratio mirror / no mirror TTFT p50: fast shadow {p50['fast shadow'] / base:.2f}, "
          f"hanging shadow {p50['hanging shadow'] / base:.2f}")
    print(f"ratio mirror / no mirror saturating throughput: fast shadow {rps['fast shadow'] / top:.2f}, "
          f"hanging shadow {rps['hanging shadow'] / top:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.shadow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=16, help="concurrent user streams (default 16)")
    parser.add_argument("--requests", type=int, default=3200, help="timed requests per run (default 3200)")
    parser.add_argument("--rate", type=float, default=200, help="offered requests/s of the paced runs (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, configurations interleaved; figures are medians")
    parser.add_argument("--percent", type=int, default=100, help="share of requests mirrored (default 100)")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that only checks the benchmark works (CI)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.requests, args.rounds = 100, 1
    logs = Path(tempfile.mkdtemp(prefix="modelops-bench-shadow-"))
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; logs in {logs}"
          f"{' (smoke run)' if args.smoke else ''}")
    report(run(args.streams, args.requests, args.rounds, args.percent, args.rate, logs), args.rounds, args.rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
