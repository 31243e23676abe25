"""The per-object workers: a bounded number of reconciles at once, so one object whose reconcile hangs
or keeps failing holds one slot and the others go on; per-object backoff; a replica that is not the
leader reconciles nothing; losing the Lease mid-reconcile is not a failure."""

from __future__ import annotations

import asyncio

import pytest

from modelops.adapters.controller import Outcome
from modelops.adapters.leader import NotLeader
from modelops.handlers.workers import Workers

pytestmark = pytest.mark.unit


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


def test_a_hanging_reconcile_holds_one_slot_and_the_others_finish() -> None:
    async def scenario() -> tuple[set[str], int]:
        done: set[str] = set()
        peak = running = 0
        hang = asyncio.Event()  # never set: like a Prometheus query with no answer

        async def reconcile(namespace: str, name: str) -> Outcome:
            nonlocal peak, running
            running += 1
            peak = max(peak, running)
            try:
                if name == "stuck":
                    await hang.wait()
                await asyncio.sleep(0.01)
                done.add(name)
                return Outcome(requeue_after=3600, phase="Healthy")
            finally:
                running -= 1

        workers = Workers(reconcile, concurrency=3)
        workers.poke("ml", "stuck")
        for i in range(30):
            workers.poke("ml", f"m{i}")
        while len(done) < 30:
            await asyncio.sleep(0.01)
        await workers.stop()
        return done, peak

    done, peak = run(scenario())
    assert done == {f"m{i}" for i in range(30)}
    assert peak <= 3


def test_a_failing_object_backs_off_and_does_not_crowd_out_the_others() -> None:
    async def scenario() -> tuple[int, int]:
        attempts = {"bad": 0, "good": 0}

        async def reconcile(namespace: str, name: str) -> Outcome:
            attempts[name] += 1
            if name == "bad":
                raise RuntimeError("HTTP 500 from the apiserver")
            return Outcome(requeue_after=0.05, phase="Healthy")

        workers = Workers(reconcile, concurrency=1)
        workers.poke("ml", "bad")
        workers.poke("ml", "good")
        await asyncio.sleep(2.0)
        await workers.stop()
        return attempts["bad"], attempts["good"]

    bad, good = run(scenario())
    # Backoff 1 s, 2 s, 4 s ...: in 2 s the failing one is tried at most 3 times, the healthy one keeps
    # its own pace (a resync every 0.05 s) through the single slot.
    assert bad <= 3 and good >= 10


def test_a_standby_reconciles_nothing_until_it_leads() -> None:
    async def scenario() -> tuple[int, int]:
        calls = 0

        async def reconcile(namespace: str, name: str) -> Outcome:
            nonlocal calls
            calls += 1
            return Outcome(requeue_after=3600, phase="Healthy")

        workers = Workers(reconcile)
        workers.set_active(False)
        for i in range(5):
            workers.poke("ml", f"m{i}")
        await asyncio.sleep(0.2)
        before = calls
        workers.set_active(True)
        await asyncio.sleep(0.2)
        await workers.stop()
        return before, calls

    before, after = run(scenario())
    assert (before, after) == (0, 5)


def test_losing_the_lease_mid_reconcile_waits_for_leadership_without_backoff() -> None:
    async def scenario() -> list[str]:
        log: list[str] = []
        workers: Workers

        async def reconcile(namespace: str, name: str) -> Outcome:
            if not log:
                log.append("refused")
                workers.set_active(False)  # what the elector's on_change does
                raise NotLeader("lost the Lease")
            log.append("reconciled")
            return Outcome(requeue_after=3600, phase="Healthy")

        workers = Workers(reconcile)
        workers.poke("ml", "chat")
        await asyncio.sleep(0.8)
        assert log == ["refused"]
        workers.set_active(True)
        await asyncio.sleep(0.1)
        await workers.stop()
        return log

    assert run(scenario()) == ["refused", "reconciled"]


def test_first_reconciles_go_before_follow_ups() -> None:
    """A burst of new objects is not queued behind the resyncs of the ones already handled."""
    async def scenario() -> tuple[list[str], int]:
        order: list[str] = []

        async def reconcile(namespace: str, name: str) -> Outcome:
            order.append(name)
            await asyncio.sleep(0.01)
            return Outcome(requeue_after=0 if name.startswith("old") else 3600, phase="Healthy")

        workers = Workers(reconcile, concurrency=1)
        for i in range(3):
            workers.poke("ml", f"old{i}")  # they requeue at once, for ever
        await asyncio.sleep(0.1)
        for i in range(5):
            workers.poke("ml", f"new{i}")
        # What starts next: the olds are waiting already, FIFO would run them first. (The slot may
        # already have been handed to one old whose coroutine has not resumed yet.)
        mark = len(order)
        await asyncio.sleep(0.3)
        await workers.stop()
        return order, mark

    order, mark = run(scenario())
    after = order[mark:]
    if after[0].startswith("old"):
        after = after[1:]
    assert after[:5] == [f"new{i}" for i in range(5)], order[mark - 2:mark + 8]


def test_a_slot_granted_to_a_cancelled_waiter_is_passed_on() -> None:
    from modelops.handlers.workers import Slots

    async def scenario() -> bool:
        slots = Slots(1)
        await slots.acquire(1)
        waiter = asyncio.ensure_future(slots.acquire(1))
        second = asyncio.ensure_future(slots.acquire(1))
        await asyncio.sleep(0)
        slots.release()      # granted to the first waiter ...
        waiter.cancel()      # ... which is cancelled before it runs
        await asyncio.sleep(0)
        await asyncio.wait_for(second, timeout=1)  # the slot reached the next one
        return True

    assert run(scenario())


def test_waiting_for_the_cache_holds_no_slot() -> None:
    """An object whose last writes the watch has not shown yet waits outside the slots: with one
    slot, the others reconcile meanwhile, and it reconciles once it has settled."""
    async def scenario() -> list[str]:
        order: list[str] = []
        settled, all_done = asyncio.Event(), asyncio.Event()

        async def settle(namespace: str, name: str) -> None:
            if name == "lagging":
                await settled.wait()

        async def reconcile(namespace: str, name: str) -> Outcome:
            order.append(name)
            if name == "m2":
                settled.set()  # the watch catches up while the others run
            if len(order) == 4:
                all_done.set()
            return Outcome(requeue_after=3600, phase="Healthy")

        workers = Workers(reconcile, concurrency=1, settle=settle)
        workers.poke("ml", "lagging")
        for i in range(3):
            workers.poke("ml", f"m{i}")
        await asyncio.wait_for(all_done.wait(), timeout=10)
        await workers.stop()
        return order

    order = run(scenario())
    assert order[:3] == ["m0", "m1", "m2"] and order[3] == "lagging"
