"""``python -m tests.bench.gateway``: gateway overhead and storage-initializer throughput, side by side.

Not a test: it measures and prints. Everything runs on this machine, loopback only,
with bounded request counts.

1. Streaming overhead. A fast OpenAI-compatible stub engine streams fixed tokens
   (so the engine is never the bottleneck); the same requests go
   - direct to the stub,
   - through the gateway (``python -m modelops_inference.gateway``, one uvicorn process),
   - through nginx from Debian (one worker, ``proxy_buffering off``) as a reverse-proxy baseline,
   at 1, 16 and 128 concurrent streams. Reported: time to first chunk (TTFT) p50/p99,
   requests/s, and for each proxy the TTFT added over direct and its share of direct
   throughput. Targets from the issue: <= 1 ms added p50, <= 5 ms added p99, >= 90 %
   of direct throughput. Also reported: the proxy's own CPU time per request (from
   /proc, measured requests only), which does not depend on how busy the machine is,
   and how busy that makes the proxy's CPU.

   Placement (``--placement``). ``pinned`` (the default, the main table): the proxy
   under test (gateway, nginx) runs on its own CPU, the load generator and the stub
   engine on the other CPU(s), as in production where the gateway container has CPU
   of its own; the same placement for all three paths, so "direct" is the load
   generator and stub on their CPU(s) with the proxy CPU idle. ``shared``: every
   process may run on every CPU (a proxy hop then takes CPU from the client and the
   stub). Affinity is set with ``sched_setaffinity`` before each process starts
   (children inherit it) and checked from /proc; the output prints it.
   Each configuration runs ``--rounds`` times, paths interleaved; every figure is the
   median over the rounds.
2. Storage initializer. fake-gcs-server holds a model-like set of files; the
   initializer (parallel slices) is timed against a single-stream download of the
   same files with google-cloud-storage, one file after another.

The storage benchmark's processes share the machine's cores.
``python -m tests.components install nginx`` installs nginx.

``--smoke``: a tiny run (1 and 16 streams, a few requests, one round, pinned only, a small
file set) that only checks the benchmark works, for CI; nginx is left out when it is not
installed. Its figures mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import aiohttp

from tests.components import install
from tests.components.procs import ManagedProcess, free_port
from tests.components.servers import FakeGCS, Gateway, StubEngine

BODY = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}
NGINX_CONF = """
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/client;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  upstream engine {{ server 127.0.0.1:{upstream}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://engine;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
    }}
  }}
}}
"""


@dataclass(frozen=True)
class Placement:
    name: str  # pinned | shared
    proxy: frozenset[int]  # CPUs of the proxy under test
    client: frozenset[int]  # CPUs of the load generator (this process) and the stub engine

    @classmethod
    def make(cls, name: str) -> "Placement":
        cpus = sorted(os.sched_getaffinity(0))
        if name == "shared" or len(cpus) < 2:
            return cls("shared", frozenset(cpus), frozenset(cpus))
        return cls("pinned", frozenset(cpus[-1:]), frozenset(cpus[:-1]))

    def describe(self) -> str:
        if self.name == "shared":
            return f"shared: load generator, stub engine and proxy all on CPUs {_cpus(self.proxy)}"
        return (f"pinned: proxy under test (gateway / nginx) on CPU {_cpus(self.proxy)}; load generator and "
                f"stub engine on CPU {_cpus(self.client)}")


def _cpus(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


@contextlib.contextmanager
def spawning_on(cpus: frozenset[int]) -> Iterator[None]:
    """Processes started inside run on ``cpus`` (affinity is inherited across fork/exec)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def group_affinity(pgid: int) -> str:
    """The CPUs every process of a group may run on, as /proc says (``1`` or ``0-1``)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            status = Path(f"/proc/{entry}/status").read_text()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        found.update(line.split(":", 1)[1].strip() for line in status.splitlines()
                     if line.startswith("Cpus_allowed_list:"))
    return "/".join(sorted(found)) or "?"


def group_cpu_seconds(pgid: int | None) -> float:
    """User + system CPU of every process in a process group (the proxy and its workers)."""
    if pgid is None:
        return 0.0
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[2]) == pgid:  # pgrp
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    path: str
    streams: int
    requests: int
    seconds: float
    ttft: list[float]
    errors: int
    proxy_cpu: float = 0.0  # CPU seconds the proxy process(es) used for the measured requests

    @property
    def cpu_us_per_request(self) -> float:
        return 1e6 * self.proxy_cpu / self.requests if self.requests else 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        s = sorted(self.ttft)
        return s[min(len(s) - 1, int(q * len(s)))] * 1000


async def measure(url: str, streams: int, requests: int, warmup: int,
                  cpu: Callable[[], float] = lambda: 0.0) -> tuple[float, list[float], int, float]:
    """Warm up, then time ``requests`` streams; also returns ``cpu()``'s growth over the timed part."""
    connector = aiohttp.TCPConnector(limit=streams)
    timeout = aiohttp.ClientTimeout(total=60)
    ttfts: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def one(record: bool) -> None:
            nonlocal errors
            started = time.perf_counter()
            async with session.post(url, json=BODY) as r:
                first = await r.content.readany()
                at = time.perf_counter()
                rest = await r.read()
            if r.status != 200 or not (first + rest).rstrip().endswith(b"[DONE]"):
                errors += 1
            elif record:
                ttfts.append(at - started)

        async def worker(n: int, record: bool) -> None:
            for _ in range(n):
                await one(record)

        await asyncio.gather(*(worker(max(1, warmup // streams), False) for _ in range(streams)))
        per = max(1, requests // streams)
        cpu_before = cpu()
        started = time.perf_counter()
        await asyncio.gather(*(worker(per, True) for _ in range(streams)))
        took = time.perf_counter() - started
        cpu_used = cpu() - cpu_before
    return took, ttfts, errors, cpu_used


def start_nginx(upstream_port: int, logs: Path) -> tuple[ManagedProcess, str]:
    binary = install.nginx_binary()
    if binary is None:
        raise SystemExit("nginx is not installed: python -m tests.components install nginx")
    prefix = Path(tempfile.mkdtemp(prefix="modelops-bench-nginx-"))
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, upstream=upstream_port, port=port))
    proc = ManagedProcess("nginx", [str(binary), "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log")],
                          log_dir=logs).start()
    proc.wait_http(f"http://127.0.0.1:{port}/health", timeout=20)
    return proc, f"http://127.0.0.1:{port}"


def bench_gateway(levels: list[int], scale: float, logs: Path, placement: Placement, rounds: int,
                  with_nginx: bool = True) -> list[Run]:
    with spawning_on(placement.client):
        stub = StubEngine(logs, tokens=16).start()
    nginx: ManagedProcess | None = None
    with spawning_on(placement.proxy):
        gw = Gateway(logs, {"MODELOPS_ENGINE": "openai", "MODELOPS_ENGINE_URL": stub.url, "MODELOPS_MODEL": "chat",
                            "MODELOPS_ENGINE_MODEL": stub.model, "MODELOPS_LOG_LEVEL": "warning"}).start()
        if with_nginx:
            nginx, nginx_url = start_nginx(stub.port, logs)
    targets = {"direct": (stub.url, None), "gateway": (gw.url, gw.proc.pid)}
    if nginx is not None:
        targets["nginx"] = (nginx_url, nginx.pid)
    runs: list[Run] = []
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, placement.client)  # the load generator: this process
    try:
        nginx_cpus = f"nginx {group_affinity(nginx.pid)}" if nginx is not None else "nginx left out"
        print(f"placement {placement.describe()} (from /proc: stub {group_affinity(stub.proc.pid)}, "
              f"gateway {group_affinity(gw.proc.pid)}, {nginx_cpus}, "
              f"load generator {_cpus(frozenset(os.sched_getaffinity(0)))})", flush=True)
        for streams in levels:
            requests = int({1: 600, 16: 3200, 128: 6400}.get(streams, 3200) * scale)
            for round_ in range(rounds):
                for name, (base, pgid) in targets.items():
                    took, ttft, errors, cpu = asyncio.run(measure(
                        f"{base}/v1/chat/completions", streams, requests, warmup=max(streams * 2, 50),
                        cpu=lambda pgid=pgid: group_cpu_seconds(pgid)))
                    runs.append(Run(name, streams, len(ttft) + errors, took, ttft, errors, proxy_cpu=cpu))
                    print(f"  {placement.name} {name:8s} {streams:4d} streams, round {round_ + 1}: "
                          f"{runs[-1].rps:7.0f} req/s", file=sys.stderr, flush=True)
    finally:
        os.sched_setaffinity(0, before)
        if nginx is not None:
            nginx.stop()
        gw.stop()
        stub.stop()
    return runs


def print_gateway(runs: list[Run], placement: Placement, rounds: int) -> None:
    med = statistics.median
    print(f"\nStreaming overhead, {placement.describe()}\n(16-token SSE stub; TTFT = time to first chunk; "
          f"median of {rounds} rounds; CPU = the proxy's own CPU time per request and its CPU's load)\n")
    print("| streams | path | TTFT p50 | TTFT p99 | req/s | added p50 | added p99 | throughput vs direct "
          "| proxy CPU per request | proxy CPU load |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    ratios: dict[str, list[str]] = {}
    for streams in sorted({r.streams for r in runs}):
        rows = {}
        for path in ("direct", "gateway", "nginx"):
            mine = [r for r in runs if r.streams == streams and r.path == path]
            if mine:
                rows[path] = (med(r.pct(0.5) for r in mine), med(r.pct(0.99) for r in mine),
                              med(r.rps for r in mine), med(r.cpu_us_per_request for r in mine),
                              med(100 * r.proxy_cpu / r.seconds for r in mine), sum(r.errors for r in mine))
        d50, d99, drps = rows["direct"][:3]
        for path, (p50, p99, rps, cpu, load, errors) in rows.items():
            direct = path == "direct"
            added = "" if direct else f"{p50 - d50:+.2f} ms"
            added99 = "" if direct else f"{p99 - d99:+.2f} ms"
            ratio = "" if direct else f"{100 * rps / drps:.0f} %"
            err = f" ({errors} errors)" if errors else ""
            cpu_text = "" if direct else f"{cpu:.0f} µs"
            load_text = "" if direct else f"{load:.0f} %"
            print(f"| {streams} | {path}{err} | {p50:.2f} ms | {p99:.2f} ms | {rps:,.0f} | "
                  f"{added} | {added99} | {ratio} | {cpu_text} | {load_text} |")
            if not direct:
                ratios.setdefault(path, []).append(f"{streams} streams {rps / drps:.2f}")
    print()
    for path, parts in ratios.items():
        print(f"ratio {path} / direct throughput ({placement.name}): " + ", ".join(parts))


def bench_storage(total_mib: int, logs: Path, rounds: int = 3) -> dict[str, float]:
    gcs = FakeGCS(logs).start()
    try:
        client = gcs.client()
        bucket = client.create_bucket("bench")
        files = 8
        size = total_mib * 1024 * 1024 // files
        blob_data = os.urandom(size)
        for i in range(files):
            bucket.blob(f"model/model-{i:05d}-of-{files:05d}.safetensors").upload_from_string(
                blob_data[:-1] + bytes([i]))
        env = dict(os.environ, **gcs.env())
        single_s, init_s, init_wall = [], [], []
        for _ in range(rounds):  # alternate the two, several rounds: the machine is shared and noisy
            with tempfile.TemporaryDirectory(prefix="modelops-bench-") as tmp:
                single = Path(tmp) / "single"
                single.mkdir()
                started = time.perf_counter()
                for blob in client.list_blobs("bench", prefix="model/"):
                    blob.download_to_filename(str(single / blob.name.split("/")[-1]))
                single_s.append(time.perf_counter() - started)
                started = time.perf_counter()
                done = subprocess.run([sys.executable, "-m", "modelops_inference.storage_init", "gs://bench/model/",
                                       str(Path(tmp) / "init"), "--json"], env=env, capture_output=True, text=True)
                init_wall.append(time.perf_counter() - started)
                if done.returncode != 0:
                    raise SystemExit(f"storage initializer failed: {done.stderr[-2000:]}")
                init_s.append(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])
        mb = files * size / 1e6
        med = statistics.median
        return {"mb": mb, "files": files, "rounds": rounds, "single_mb_s": mb / med(single_s),
                "init_mb_s": mb / med(init_s), "init_wall_mb_s": mb / med(init_wall)}
    finally:
        gcs.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.gateway", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="1,16,128", help="concurrency levels (default 1,16,128)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply request counts (0.25 for a quick look)")
    parser.add_argument("--placement", default="pinned,shared",
                        help="pinned (proxy on its own CPU), shared (all on all CPUs), or both (default pinned,shared)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per configuration; figures are medians")
    parser.add_argument("--storage-mib", type=int, default=256, help="size of the storage benchmark's file set")
    parser.add_argument("--storage-rounds", type=int, default=3, help="storage benchmark rounds (median)")
    parser.add_argument("--skip-storage", action="store_true")
    parser.add_argument("--skip-gateway", action="store_true")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny run that only checks the benchmark works (CI): --streams 1,16 --scale 0.05 "
                             "--rounds 1 --placement pinned --storage-mib 16 --storage-rounds 1, nginx only if "
                             "installed; its figures mean nothing")
    args = parser.parse_args(argv)
    with_nginx = True
    if args.smoke:
        args.streams, args.scale, args.rounds, args.placement = "1,16", 0.05, 1, "pinned"
        args.storage_mib, args.storage_rounds = 16, 1
        with_nginx = install.nginx_binary() is not None
    logs = Path(tempfile.mkdtemp(prefix="modelops-bench-logs-"))
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; logs in {logs}"
          f"{' (smoke run)' if args.smoke else ''}")
    if not with_nginx:
        print("nginx is not installed: the nginx baseline is left out (python -m tests.components install nginx)")
    if not args.skip_gateway:
        for name in args.placement.split(","):
            placement = Placement.make(name)
            runs = bench_gateway([int(s) for s in args.streams.split(",")], args.scale, logs, placement, args.rounds,
                                 with_nginx=with_nginx)
            print_gateway(runs, placement, args.rounds)
    if not args.skip_storage:
        s = bench_storage(args.storage_mib, logs, rounds=args.storage_rounds)
        print(f"\nStorage initializer vs single stream ({s['files']} files, {s['mb']:.0f} MB, fake-gcs-server, "
              f"median of {s['rounds']} rounds)\n")
        print("| method | MB/s |")
        print("| --- | ---: |")
        print(f"| single stream (google-cloud-storage, one file after another) | {s['single_mb_s']:.0f} |")
        print(f"| storage initializer (8 workers, 32 MiB slices, verified; its own clock) | {s['init_mb_s']:.0f} |")
        print(f"| storage initializer, wall clock incl. process start and listing | {s['init_wall_mb_s']:.0f} |")
        print(f"\nratio storage initializer / single stream throughput: {s['init_mb_s'] / s['single_mb_s']:.2f} "
              f"(wall clock {s['init_wall_mb_s'] / s['single_mb_s']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
