"""Engine readiness: a background probe loop, woken early when a request sees the engine fail.

Ready means: the engine answers, has the model, and a warm-up request succeeded since
it (re)appeared. After the engine goes away, it is warmed up again when it returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable

import aiohttp

from .engines import Engine

log = logging.getLogger(__name__)


@dataclass
class EngineState:
    ready: bool = False
    reason: str = "not probed yet"
    since: float = 0.0
    warmed: bool = False
    probes: int = 0


class EngineMonitor:
    def __init__(self, engine: Engine, session: aiohttp.ClientSession, *, interval: float,
                 unready_interval: float, warmup: bool,
                 on_change: Callable[[bool], None] | None = None) -> None:
        self.engine = engine
        self.session = session
        self.interval = interval
        self.unready_interval = unready_interval
        self.do_warmup = warmup
        self.state = EngineState(since=time.time())
        self._wake = asyncio.Event()
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self.state.ready

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="engine-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def suspect(self, why: str) -> None:
        """A request saw the engine fail: mark unready now and probe at once."""
        if self.state.ready:
            self._set(False, f"request failed: {why}")
        self._wake.set()

    async def check_once(self) -> EngineState:
        probe = await self.engine.probe(self.session)
        self.state.probes += 1
        if not probe.ready:
            self.state.warmed = False
            self._set(False, probe.reason)
            return self.state
        if self.do_warmup and not self.state.warmed:
            warm = await self.engine.warmup(self.session)
            if not warm.ready:
                self._set(False, warm.reason)
                return self.state
            self.state.warmed = True
        self._set(True, probe.reason if not self.do_warmup else "model loaded and warmed up")
        return self.state

    async def _run(self) -> None:
        while True:
            try:
                await self.check_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a probe bug must not kill readiness forever
                log.exception("engine probe failed")
                self._set(False, f"probe error: {exc}")
            wait = self.interval if self.state.ready else self.unready_interval
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            except asyncio.TimeoutError:
                pass

    def _set(self, ready: bool, reason: str) -> None:
        changed = ready != self.state.ready
        self.state.reason = reason
        if changed:
            self.state.ready = ready
            self.state.since = time.time()
            if not ready:
                self.state.warmed = False
            log.log(logging.INFO if ready else logging.WARNING, "engine %s: %s",
                    "ready" if ready else "NOT ready", reason)
            if self._on_change:
                self._on_change(ready)
