"""Kubernetes Events, posted by one background thread, as client-go's event broadcaster does.

A reconcile hands its Events over and goes on: posting one is a request the next write (or the
next object's first Deployment) need not wait for. The queue is bounded; when it is full the
Event is dropped and counted, never the reconcile delayed (client-go drops as well). Events are
best effort anyway: the status says the same, and is what the planner reads.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

from modelops import metrics
from modelops.planning.contract import Event, Owner

log = logging.getLogger(__name__)
QUEUE_SIZE = 1000  # client-go's broadcaster buffers as many


class EventRecorder:
    def __init__(self, post: Callable[[Owner, Event], None], size: int = QUEUE_SIZE) -> None:
        self._post = post
        self._queue: queue.Queue[tuple[Owner, Event] | None] = queue.Queue(size)
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        self._thread.start()

    def record(self, owner: Owner, event: Event) -> None:
        """Queue ``event`` for posting; returns at once."""
        try:
            self._queue.put_nowait((owner, event))
        except queue.Full:
            metrics.EVENTS_DROPPED.inc()
            log.warning("%s/%s: event %s dropped (%d waiting to be posted)", owner.namespace, owner.name,
                        event.reason, self._queue.qsize())

    def flush(self, timeout: float) -> bool:
        """Wait until every queued Event was posted (or ``timeout``); True when none is left."""
        done = threading.Event()
        threading.Thread(target=lambda: (self._queue.join(), done.set()), daemon=True).start()
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Post what is queued (for up to ``timeout``), then stop the thread."""
        self.flush(timeout)
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass  # the thread is a daemon: it ends with the process

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                try:
                    self._post(*item)
                except Exception as exc:  # noqa: BLE001 - e.g. the Lease was lost: the new leader posts its own
                    log.warning("%s/%s: event %s not posted: %s", item[0].namespace, item[0].name, item[1].reason,
                                exc)
            finally:
                self._queue.task_done()
