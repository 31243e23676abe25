"""One worker task per ModelDeployment: a single writer per object, with coalesced triggers.

Watch events (the ModelDeployment's own, or of the objects it owns) poke the worker; the
worker reconciles, then sleeps until poked again or until the plan's requeue time (the
resync of actual state, from the cache: no request). Errors back off exponentially per
object. At most ``concurrency`` reconciles run at once, so one object whose reconcile hangs
or keeps failing holds one slot, never the others; an object's first reconcile takes a free
slot before the follow-ups of objects already handled (a burst of new objects gets its
Deployments first). Nothing here is stored on the object: no finalizers, no annotations, so
an idle operator writes nothing.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from typing import Awaitable, Callable

from modelops import metrics
from modelops.adapters.controller import Outcome
from modelops.adapters.leader import NotLeader

log = logging.getLogger("modelops.workers")
Key = tuple[str, str]
MAX_BACKOFF = 60.0
NOT_LEADER_PAUSE = 0.5


class Slots:
    """A semaphore whose waiters are served by priority (lower first), then in arrival order."""

    def __init__(self, n: int) -> None:
        self._free = n
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def acquire(self, priority: int) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release()  # granted just as we were cancelled: pass the slot on
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, waiter = heapq.heappop(self._waiters)
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


FIRST, FOLLOW_UP = 0, 1  # slot priorities


class Workers:
    def __init__(self, reconcile: Callable[[str, str], Awaitable[Outcome]], concurrency: int = 8,
                 settle: Callable[[str, str], Awaitable[None]] | None = None) -> None:
        self._reconcile = reconcile
        self._settle = settle  # awaited before a slot is taken (e.g. until the cache shows our writes)
        self._pokes: dict[Key, asyncio.Event] = {}
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self._phases: dict[Key, str] = {}
        self._active = asyncio.Event()  # set while this replica may reconcile (always, without leader election)
        self._active.set()
        self._slots = Slots(concurrency)
        self._waiting: set[Key] = set()  # due (poked or requeued), not yet running: the work queue
        self._running = 0

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
        priority = FIRST
        while True:
            self._queued(key, True)
            try:
                await self._active.wait()  # a standby replica holds its workers here
                if self._settle is not None:
                    await self._settle(namespace, name)
                await self._slots.acquire(priority)
                try:
                    await self._active.wait()
                    self._queued(key, False)
                    poke = self._pokes.setdefault(key, asyncio.Event())
                    poke.clear()
                    self._in_flight(+1)
                    try:
                        outcome = await self._reconcile(namespace, name)
                    finally:
                        self._in_flight(-1)
                finally:
                    self._slots.release()
            except asyncio.CancelledError:
                self._queued(key, False)
                raise
            except NotLeader:  # the Lease was lost mid-reconcile: nothing more was written; wait to lead
                await asyncio.sleep(NOT_LEADER_PAUSE)  # until the elector's loop has paused the workers
                continue
            except Exception as exc:  # noqa: BLE001 - retried with backoff, never fatal
                failures += 1
                delay = min(MAX_BACKOFF, 0.5 * 2 ** failures)
                log.warning("%s/%s: reconcile failed (%s), retrying in %.1fs", namespace, name, exc, delay)
                await self._sleep(poke, delay)
                continue
            failures = 0
            priority = FOLLOW_UP
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

    def _queued(self, key: Key, due: bool) -> None:
        (self._waiting.add if due else self._waiting.discard)(key)
        metrics.QUEUE_DEPTH.set(len(self._waiting))

    def _in_flight(self, delta: int) -> None:
        self._running += delta
        metrics.IN_FLIGHT.set(self._running)

    def keys(self) -> list[Key]:
        return list(self._tasks)

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
