"""Fixtures for the inference-image tests: real components, started and stopped by the suite.

Session-scoped (started once, on first use): fake-gcs-server, llama.cpp's server with
SmolLM2, Ollama with SmolLM2, the fast stub engine. Function-scoped factories start
gateways, redis-servers (the shared response cache) and private engines for tests that kill
them; everything a test starts is
stopped when it ends. Nothing is skipped: a missing component fails with the command
that installs it (`python -m tests.components install`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.components.servers import FakeGCS, Gateway, LlamaServer, OllamaServer, RedisServer, StubEngine


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "load: the bounded load test (200 concurrent streams for up to 60 s)")


@pytest.fixture(scope="session")
def component_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where every started process writes its log (kept by pytest's tmp retention)."""
    return tmp_path_factory.mktemp("component-logs")


@pytest.fixture(scope="session")
def fake_gcs(component_logs: Path) -> Iterator[FakeGCS]:
    server = FakeGCS(component_logs).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gcs_client(fake_gcs: FakeGCS) -> Any:
    return fake_gcs.client()


@pytest.fixture
def bucket(gcs_client: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh bucket per test, emptied and deleted afterwards."""
    import re
    import uuid

    name = (re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:6])
    b = gcs_client.create_bucket(name)
    try:
        yield b
    finally:
        for blob in gcs_client.list_blobs(b.name):
            blob.delete()
        b.delete()


@pytest.fixture(scope="session")
def llama(component_logs: Path) -> Iterator[LlamaServer]:
    server = LlamaServer(component_logs).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_llama(component_logs: Path) -> Iterator[Callable[..., LlamaServer]]:
    """A private llama.cpp server, for tests that kill or restart their engine."""
    started: list[LlamaServer] = []

    def start(port: int | None = None) -> LlamaServer:
        server = LlamaServer(component_logs, port=port, name=f"llama-private-{len(started)}-{os.getpid()}").start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def ollama(component_logs: Path) -> Iterator[OllamaServer]:
    server = OllamaServer(component_logs).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def stub(component_logs: Path) -> Iterator[StubEngine]:
    server = StubEngine(component_logs).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_stub(stub: StubEngine) -> StubEngine:
    """The session stub, with its counters and queued faults reset."""
    stub.reset()
    return stub


@pytest.fixture
def start_stub(component_logs: Path) -> Iterator[Callable[..., StubEngine]]:
    """A private stub engine (for tests that kill it or need other settings)."""
    started: list[StubEngine] = []

    def start(**kwargs: Any) -> StubEngine:
        s = StubEngine(component_logs, name=f"stub-{len(started)}-{os.getpid()}", **kwargs).start()
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def start_redis(component_logs: Path) -> Iterator[Callable[..., RedisServer]]:
    """Private redis-servers (in memory only), stopped after the test; ``port`` to restart one in place."""
    started: list[RedisServer] = []

    def start(port: int | None = None) -> RedisServer:
        server = RedisServer(component_logs, port=port, name=f"redis-{len(started)}-{os.getpid()}").start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def start_gateway(component_logs: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Gateway]]:
    """Start gateways with the given MODELOPS_* settings; all are stopped after the test."""
    started: list[Gateway] = []

    def start(env: dict[str, str], *, ready: bool = True, timeout: float = 60, **kwargs: Any) -> Gateway:
        name = f"gateway-{request.node.name[:40]}-{len(started)}"
        gw = Gateway(component_logs, env, name=name, **kwargs)
        started.append(gw)
        return gw.start(ready=ready, timeout=timeout)

    yield start
    for gw in started:
        gw.stop()
