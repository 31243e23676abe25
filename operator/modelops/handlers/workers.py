"""One worker task per ModelDeployment: a single writer per object, with coalesced triggers.

Watch events (the ModelDeployment's own, or its Deployments') poke the worker; the
worker reconciles, then sleeps until poked again or until the plan's requeue time
(the resync of actual state). Errors back off exponentially. Nothing here is stored
on the object: no finalizers, no annotations, so an idle operator writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from modelops import metrics
from modelops.adapters.controller import Outcome

log = logging.getLogger("modelops.workers")
Key = tuple[str, str]
MAX_BACKOFF = 60.0


class Workers:
    def __init__(self, reconcile: Callable[[str, str], Awaitable[Outcome]]) -> None:
        self._reconcile = reconcile
        self._pokes: dict[Key, asyncio.Event] = {}
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self._phases: dict[Key, str] = {}
        self._active = asyncio.Event()  # set while this replica may reconcile (always, without leader election)
        self._active.set()

    def set_active(self, active: bool) -> None:
        if active:
            self._active.set()
        else:
            self._active.clear()

    def poke(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        if key not in self._pokes:
            self._pokes[key] = asyncio.Event()
        self._pokes[key].set()
        task = self._tasks.get(key)
        if task is None or task.done():
            self._tasks[key] = asyncio.create_task(self._run(key), name=f"reconcile {namespace}/{name}")

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        task = self._tasks.pop(key, None)
        if task:
            task.cancel()
        self._pokes.pop(key, None)
        self._phases.pop(key, None)
        self._export_phases()

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def __len__(self) -> int:
        return len(self._tasks)

    async def _run(self, key: Key) -> None:
        namespace, name = key
        failures = 0
        while True:
            await self._active.wait()  # a standby replica holds its workers here
            poke = self._pokes.setdefault(key, asyncio.Event())
            poke.clear()
            try:
                outcome = await self._reconcile(namespace, name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried with backoff, never fatal
                failures += 1
                delay = min(MAX_BACKOFF, 0.5 * 2 ** failures)
                log.warning("%s/%s: reconcile failed (%s), retrying in %.1fs", namespace, name, exc, delay)
                await self._sleep(poke, delay)
                continue
            failures = 0
            if outcome.requeue_after is None:  # deleted
                self._tasks.pop(key, None)
                self._pokes.pop(key, None)
                self._phases.pop(key, None)
                self._export_phases()
                return
            if outcome.phase:
                self._phases[key] = outcome.phase
                self._export_phases()
            await self._sleep(poke, outcome.requeue_after)

    @staticmethod
    async def _sleep(poke: asyncio.Event, delay: float) -> None:
        try:
            await asyncio.wait_for(poke.wait(), timeout=delay)
        except asyncio.TimeoutError:
            pass

    def _export_phases(self) -> None:
        counts: dict[str, int] = {}
        for phase in self._phases.values():
            counts[phase] = counts.get(phase, 0) + 1
        for phase in ("Pending", "Progressing", "Paused", "Healthy", "Degraded", "RolledBack", "Failed"):
            metrics.MANAGED.labels(phase).set(counts.get(phase, 0))
