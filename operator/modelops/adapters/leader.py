"""Leader election through a Lease (``coordination.k8s.io/v1``), the way client-go does it.

Every replica runs this loop. A candidate reads the Lease every retry period; it takes the
Lease over only when the holder has not renewed it for a whole lease duration *as measured
on the candidate's own clock* (the time it last saw the record change, not the timestamps in
it, so clock skew between nodes does not matter). The holder renews every retry period and
stops writing as soon as it has gone a renew deadline without a successful renewal; since
the renew deadline is shorter than the lease duration, the old leader has stood down before
a standby may act. Writes are fenced by ``may_write()``, which reads the clock itself: a
leader that was paused (or partitioned) refuses to write the moment it wakes up, before its
renew loop has even run.

Unlike client-go the holder renews without a GET first: it updates the Lease with the
resourceVersion its own last update returned, and reads the Lease again only on a conflict,
so a leader costs one request per retry period, a standby one GET.

The Lease's requests go through a client of their own (``request_timeout``: each must end well
inside the renew deadline), so they never wait behind the reconciles' requests either.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from dataclasses import dataclass
from typing import Callable

from lightkube import Client
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from .apiclient import ApiFailure, status_of

log = logging.getLogger("modelops.leader")


class NotLeader(Exception):
    """A write was refused: this replica does not hold the Lease (or could not renew it in time)."""


@dataclass(frozen=True)
class Record:
    """The parts of a Lease's spec that election reads."""

    holder: str | None
    renew_time: str | None
    duration: float
    transitions: int = 0
    acquire_time: str | None = None


def may_acquire(record: Record | None, me: str, observed_at: float, now: float) -> bool:
    """May ``me`` take (or keep) the Lease? ``observed_at``: when this replica last saw the record
    change (its own monotonic clock).

    >>> may_acquire(None, "a", 0, 0)                                     # no Lease yet
    True
    >>> may_acquire(Record("b", "t1", 15), "a", observed_at=100, now=110)  # b renewed 10 s ago
    False
    >>> may_acquire(Record("b", "t1", 15), "a", observed_at=100, now=115)  # b silent a lease duration
    True
    >>> may_acquire(Record("a", "t1", 15), "a", observed_at=100, now=101)  # ours: renew
    True
    >>> may_acquire(Record("", "t1", 15), "a", observed_at=100, now=101)   # released
    True
    """
    if record is None or not record.holder or record.holder == me:
        return True
    return now >= observed_at + record.duration


def request_timeout(renew_deadline: float, retry_period: float) -> float:
    """The timeout of the Lease's requests: a request must end well inside the renew deadline, or a
    hung call would outlive it.

    >>> request_timeout(renew_deadline=10, retry_period=2)
    5.0
    """
    return max(retry_period, renew_deadline / 2)


class LeaderElector:
    """One replica's side of the election. ``on_change(leading)`` is called on every transition.
    ``api``: a client whose requests time out after ``request_timeout`` (apiclient.connect)."""

    def __init__(self, api: Client, *, name: str, namespace: str, identity: str,
                 lease_duration: float, renew_deadline: float, retry_period: float,
                 on_change: Callable[[bool], None]) -> None:
        self.api = api
        self.name, self.namespace, self.identity = name, namespace, identity
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self.on_change = on_change
        self.leading = False
        self._renewed_at = float("-inf")  # monotonic time our last successful renewal was *sent*
        self._lease: Lease | None = None  # our last written Lease (its resourceVersion renews it)
        self._observed: Record | None = None
        self._observed_at = 0.0

    def may_write(self) -> bool:
        return self.leading and time.monotonic() < self._renewed_at + self.renew_deadline

    def check(self) -> None:
        """Raise NotLeader unless this replica may write now (called before every write)."""
        if not self.may_write():
            raise NotLeader(f"{self.identity} does not hold the Lease {self.namespace}/{self.name}")

    async def run(self) -> None:
        try:
            while True:
                started = time.monotonic()
                self.settle(started, await asyncio.to_thread(self.attempt, started))
                # Jitter, as client-go does, so that candidates do not retry in lock-step.
                await asyncio.sleep(self.retry_period * (1 + (0 if self.leading else random.random() * 0.2)))
        finally:
            self._set_leading(False)

    def attempt(self, started: float) -> bool:
        """One try to acquire or renew the Lease (blocking: run it in a thread)."""
        try:
            return self._try_acquire_or_renew(started)
        except Exception as exc:  # noqa: BLE001 - the apiserver unreachable or slow: retry next period
            log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            return False

    def settle(self, started: float, ok: bool) -> None:
        """The verdict after an attempt sent at ``started`` (in the event loop: it calls ``on_change``).
        Still leading while renewals succeed, or fail for less than the renew deadline."""
        if ok:
            self._renewed_at = started
        alive = time.monotonic() < self._renewed_at + self.renew_deadline
        self._set_leading(alive and (ok or self.leading))

    def release(self) -> None:
        """On a clean shutdown: give the Lease up, so that a standby takes over at once."""
        if not self.leading or self._lease is None:
            return
        self._set_leading(False)
        lease = self._lease
        lease.spec.holderIdentity = ""
        lease.spec.renewTime = None
        try:
            self._replace(lease)
        except ApiFailure as exc:  # best effort: otherwise the standby waits one lease duration
            log.warning("lease %s/%s: could not release it: %s", self.namespace, self.name,
                        exc.response.reason_phrase)

    def _set_leading(self, leading: bool) -> None:
        if leading != self.leading:
            self.leading = leading
            log.info("lease %s/%s: %s is %s", self.namespace, self.name, self.identity,
                     "the leader" if leading else "standing by")
            self.on_change(leading)

    def _try_acquire_or_renew(self, now: float) -> bool:
        stamp = _micro_now()
        if self.leading and self._lease is not None and now < self._renewed_at + self.renew_deadline:
            # The fast path: renew what we wrote last; a conflict means someone else wrote it. Past the
            # renew deadline (e.g. the process was frozen) a standby may hold the Lease: read it first.
            self._lease.spec.renewTime = stamp
            try:
                self._lease = self._replace(self._lease)
                return True
            except ApiFailure as exc:
                if status_of(exc) != 409:
                    raise
                self._lease = None
        try:
            lease = self.api.get(Lease, self.name, namespace=self.namespace)
        except ApiFailure as exc:
            if status_of(exc) != 404:
                raise
            return self._create(stamp)
        record = _record(lease)
        if record != self._observed:
            self._observed, self._observed_at = record, now
        if not may_acquire(record, self.identity, self._observed_at, now):
            return False
        if lease.spec is None:
            lease.spec = LeaseSpec()
        spec = lease.spec
        if record.holder != self.identity:
            spec.acquireTime = stamp
            spec.leaseTransitions = (spec.leaseTransitions or 0) + 1
        spec.holderIdentity = self.identity
        spec.leaseDurationSeconds = int(self.lease_duration)
        spec.renewTime = stamp
        try:
            self._lease = self._replace(lease)
        except ApiFailure as exc:
            if status_of(exc) == 409:  # another candidate won this round
                return False
            raise
        return True

    def _create(self, stamp: dt.datetime) -> bool:
        body = Lease(
            metadata=ObjectMeta(name=self.name, namespace=self.namespace),
            spec=LeaseSpec(holderIdentity=self.identity, leaseDurationSeconds=int(self.lease_duration),
                           acquireTime=stamp, renewTime=stamp, leaseTransitions=0))
        try:
            self._lease = self.api.create(_sendable(body), namespace=self.namespace)
        except ApiFailure as exc:
            if status_of(exc) == 409:  # created by another candidate just now
                return False
            raise
        return True

    def _replace(self, lease: Lease) -> Lease:
        """Update the Lease (a PUT with the resourceVersion it carries: 409 if someone wrote since)."""
        return self.api.replace(_sendable(lease), namespace=self.namespace)


def _record(lease: Lease) -> Record:
    spec = lease.spec or LeaseSpec()
    # MicroTime, compared at full precision: every renewal changes the record.
    return Record(holder=spec.holderIdentity, renew_time=_micro(spec.renewTime), duration=float(
        spec.leaseDurationSeconds or 15), transitions=spec.leaseTransitions or 0, acquire_time=_micro(spec.acquireTime))


def _micro_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _micro(t: dt.datetime | str | None) -> str | None:
    """A MicroTime as the apiserver parses it (RFC 3339, always six fractional digits: isoformat()
    and msgspec leave them out when they are zero, and the apiserver then answers 400).

    >>> _micro(dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc))
    '2025-01-02T03:04:05.000000Z'
    >>> _micro(dt.datetime(2025, 1, 2, 3, 4, 5, 60, tzinfo=dt.timezone(dt.timedelta(hours=2))))
    '2025-01-02T01:04:05.000060Z'
    """
    if t is None or isinstance(t, str):
        return t
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _sendable(lease: Lease) -> Lease:
    """The Lease with its MicroTimes as strings the apiserver parses (msgspec encodes a str field as it is)."""
    if lease.spec is not None:
        lease.spec.acquireTime = _micro(lease.spec.acquireTime)  # type: ignore[assignment]
        lease.spec.renewTime = _micro(lease.spec.renewTime)  # type: ignore[assignment]
    return lease
