"""Notification delivery: a reconcile enqueues, background threads POST.

``Notifier.notify(owner, plan)`` never blocks and never raises: it turns the plan's Events into
notifications (planning/notifications.py) for the receivers the object names in
``spec.rollout.notify`` and puts them on each receiver's own bounded queue. One thread per
receiver drains its queue in order, with retries and exponential backoff, so a slow or dead
receiver delays only itself; when its queue is full a new notification is dropped and counted.
It is called after ``Kube.execute`` succeeded, so only the replica that leads (and wrote the
Events) notifies.

Delivery is at most once per attempt sequence: a notification is retried on connection errors,
timeouts, 408, 429 and 5xx (``Retry-After`` honoured, within the backoff cap), and given up on
any other 4xx. Every retry of one notification carries the same CloudEvents ``id``, so a receiver
can de-duplicate. Receiver URLs and headers usually carry tokens: they are never logged (log lines
name the receiver, never its URL; httpx's own request log lines are redacted).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import httpx

from modelops import __version__, metrics
from modelops.config import OperatorConfig, Receiver
from modelops.planning import notifications
from modelops.planning.contract import Owner, Plan

log = logging.getLogger("modelops.notify")

RETRYABLE = {408, 429}
RESULTS = ("delivered", "failed", "dropped")


@dataclass(frozen=True)
class _Item:
    kind: str
    what: str  # "ml/chat started" for log lines
    body: bytes
    content_type: str


class _Redact(logging.Filter):
    """Replaces the receivers' secrets (URLs, header values) in httpx's log records."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if any(s in text for s in self.secrets):
            for s in self.secrets:
                text = text.replace(s, "<redacted>")
            record.msg, record.args = text, ()
        return True


class _Lane:
    """One receiver: its queue, its thread, its HTTP client."""

    def __init__(self, name: str, receiver: Receiver, *, queue_size: int, timeout: float, attempts: int,
                 backoff: float, backoff_max: float, stopping: threading.Event,
                 sleep: Callable[[float], bool]) -> None:
        assert receiver.url is not None
        self.name, self.receiver = name, receiver
        self.url = receiver.url.get_secret_value()
        self.attempts, self.backoff, self.backoff_max = attempts, backoff, backoff_max
        self.queue: queue.Queue[_Item] = queue.Queue(maxsize=queue_size)
        self.stopping, self.sleep = stopping, sleep
        self.deadline = float("inf")  # set by close(): after it, what is left is dropped
        headers = {"User-Agent": f"modelops-operator/{__version__}",
                   **{k: v.get_secret_value() for k, v in receiver.headers.items()}}
        self.client = httpx.Client(timeout=timeout, headers=headers, follow_redirects=False)
        self.thread = threading.Thread(target=self._run, name=f"notify-{name}", daemon=True)
        metrics.NOTIFICATION_QUEUE.labels(name).set_function(self.queue.qsize)
        for result in RESULTS:  # every series exists from the start (rate() and alerts see the first one)
            metrics.NOTIFICATIONS.labels(name, result)

    def put(self, item: _Item) -> None:
        if self.stopping.is_set():
            self._count("dropped")
            return
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self._count("dropped")
            log.warning("notification receiver %s: queue full (%d waiting), dropped %s", self.name,
                        self.queue.maxsize, item.what)

    def _run(self) -> None:
        while True:
            try:
                item = self.queue.get(timeout=0.2)
            except queue.Empty:
                if self.stopping.is_set():
                    break
                continue
            if time.monotonic() > self.deadline:
                self._count("dropped")
                continue
            try:
                self._deliver(item)
            except Exception as exc:  # never let one notification stop the lane
                self._count("failed")
                log.error("notification receiver %s: %s not sent (%s)", self.name, item.what, type(exc).__name__)
        self.client.close()

    def _deliver(self, item: _Item) -> None:
        delay = self.backoff
        why = ""
        for attempt in range(1, self.attempts + 1):
            retry_after = None
            try:
                resp = self.client.post(self.url, content=item.body, headers={"Content-Type": item.content_type})
            except httpx.HTTPError as exc:  # str(exc) may hold the URL: only its kind is said
                why = type(exc).__name__
            else:
                if resp.is_success:
                    self._count("delivered")
                    return
                why = f"HTTP {resp.status_code}"
                if resp.status_code < 500 and resp.status_code not in RETRYABLE:
                    break  # refused: sending it again would not help
                retry_after = _seconds(resp.headers.get("Retry-After"))
            if attempt == self.attempts or self.stopping.is_set():
                break
            wait = min(self.backoff_max, retry_after if retry_after is not None else delay)
            log.info("notification receiver %s: %s attempt %d/%d failed (%s), retrying in %.1fs", self.name,
                     item.what, attempt, self.attempts, why, wait)
            if self.sleep(wait):  # stopping: no more retries
                break
            delay = min(self.backoff_max, delay * 2)
        self._count("failed")
        log.warning("notification receiver %s: %s not delivered (%s)", self.name, item.what, why)

    def _count(self, result: str) -> None:
        metrics.NOTIFICATIONS.labels(self.name, result).inc()


def _seconds(value: str | None) -> float | None:
    """A Retry-After given in seconds (an HTTP date is ignored: the backoff applies)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class Notifier:
    """The receivers configured for the operator (``OperatorConfig.notify_receivers``), each with
    its own queue and thread. Kept in kopf's memo; ``close()`` at cleanup."""

    def __init__(self, receivers: dict[str, Receiver], *, queue_size: int = 1000, timeout: float = 5.0,
                 attempts: int = 5, backoff: float = 1.0, backoff_max: float = 30.0) -> None:
        self._stopping = threading.Event()
        self._lanes = {name: _Lane(name, r, queue_size=queue_size, timeout=timeout, attempts=attempts,
                                   backoff=backoff, backoff_max=backoff_max, stopping=self._stopping,
                                   sleep=self._stopping.wait)
                       for name, r in receivers.items()}
        secrets = [s for r in receivers.values() for s in (r.url.get_secret_value() if r.url else "",
                                                           *(v.get_secret_value() for v in r.headers.values()))]
        self._redact = _Redact(secrets)
        logging.getLogger("httpx").addFilter(self._redact)
        for lane in self._lanes.values():
            lane.thread.start()
        if self._lanes:  # names and types only, never a URL
            log.info("notification receivers: %s", ", ".join(f"{n} ({r.type})" for n, r in receivers.items()))

    @classmethod
    def from_config(cls, cfg: OperatorConfig) -> "Notifier":
        return cls(cfg.notify_receivers, queue_size=cfg.notify_queue_size, timeout=cfg.notify_timeout_seconds,
                   attempts=cfg.notify_attempts, backoff=cfg.notify_backoff_seconds,
                   backoff_max=cfg.notify_backoff_max_seconds)

    @property
    def names(self) -> list[str]:
        return list(self._lanes)

    def notify(self, owner: Owner, plan: Plan) -> None:
        """Enqueue the notifications of ``plan``'s Events for the receivers ``owner`` names. Returns
        at once; never raises (a notification is never worth a failed reconcile)."""
        if not plan.events or not self._lanes:
            return
        try:
            names = [n for n in notifications.receivers(owner) if n in self._lanes]  # unknown: in status
            if not names:
                return
            now = dt.datetime.now(dt.timezone.utc)
            for n in notifications.notifications(owner, plan.events, plan.status, now):
                event_id = str(uuid.uuid4())
                what = f"{n.namespace}/{n.name} {n.kind}"
                for name in names:
                    lane = self._lanes[name]
                    if not lane.receiver.wants(n.kind):
                        continue
                    if lane.receiver.type == "slack":
                        item = _Item(n.kind, what, _json(notifications.slack(n)), "application/json")
                    else:
                        item = _Item(n.kind, what, _json(notifications.cloudevent(n, event_id)),
                                     "application/cloudevents+json; charset=utf-8")
                    lane.put(item)
        except Exception as exc:
            log.error("%s/%s: notifications not queued (%s)", owner.namespace, owner.name, type(exc).__name__)

    def close(self, timeout: float = 5.0) -> None:
        """Stop: what is queued gets one attempt each (no retries) within ``timeout`` seconds; what
        is left after that is dropped and counted. New notifications are dropped at once."""
        deadline = time.monotonic() + timeout
        for lane in self._lanes.values():
            lane.deadline = deadline
        self._stopping.set()
        for lane in self._lanes.values():
            lane.thread.join(max(0.0, deadline - time.monotonic()) + 0.5)
        logging.getLogger("httpx").removeFilter(self._redact)


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), default=str).encode()
