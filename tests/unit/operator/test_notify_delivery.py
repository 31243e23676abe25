"""Notification delivery (adapters/notify.py) against a real HTTP receiver on 127.0.0.1, started
here: the payloads as received, retries with backoff, a hung receiver that blocks nothing, the
queue bound, the metrics by receiver and result, and no token in any log line."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from modelops import metrics
from modelops.adapters.notify import Notifier
from modelops.config import OperatorConfig
from modelops.planning.contract import Event, Owner, Plan
from tests.support.receiver import Receiver as HttpReceiver, serving
from tests.support.wait import wait_for

TOKEN = "xoxb-s3cr3t-T0K3N"
SPEC = {"model": {"name": "gemma", "source": "gs://models/gemma/"}}
ROLLED_BACK = Event("Warning", "RolledBack", "rollout of chat-2 aborted: error-rate = 0.2 is above max 0.05 "
                                             "(1 failed measurements, failureLimit 0); change the spec to try again",
                    "chat-2")
STATUS = {"phase": "RolledBack", "stableRevision": "chat-1",
          "analysis": {"error-rate": {"verdict": "Failed", "value": 0.2}}}


class Receiver(HttpReceiver):
    def url(self, path: str = f"/hooks/{TOKEN}") -> str:  # a token in the path and the query, as Slack's URLs
        return f"http://127.0.0.1:{self.port}{path}?token={TOKEN}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving(Receiver()) as rec:
        yield rec


def owner(*names: str) -> Owner:
    return Owner("chat", "ml", "uid-1", 3, {**SPEC, "rollout": {"notify": list(names)}}, {})


def count(receiver: str, result: str) -> float:
    return metrics.REGISTRY.get_sample_value("modelops_notifications_total",
                                             {"receiver": receiver, "result": result}) or 0.0


def notifier(receivers: dict, **settings) -> Notifier:
    cfg = OperatorConfig(notify_receivers=receivers, notify_backoff_seconds=settings.pop("backoff", 0.05),
                         **{f"notify_{k}": v for k, v in settings.items()})
    return Notifier.from_config(cfg)


def wait_until(check, timeout: float = 10.0) -> None:
    wait_for(check, timeout=timeout, what="the notifier's counters", interval=0.01)


def test_a_webhook_receives_a_structured_cloudevent(receiver: Receiver) -> None:
    n = notifier({"wh-shape": {"type": "webhook", "url": receiver.url(), "headers": {"X-Team": "ml"}}})
    try:
        n.notify(owner("wh-shape"), Plan(events=[ROLLED_BACK], status=STATUS))
        (req,) = receiver.wait_for(1)
    finally:
        n.close()
    assert req["path"] == f"/hooks/{TOKEN}?token={TOKEN}"
    assert req["headers"]["Content-Type"] == "application/cloudevents+json; charset=utf-8"
    assert req["headers"]["X-Team"] == "ml" and req["headers"]["User-Agent"].startswith("modelops-operator/")
    ce = req["body"]
    assert set(ce) == {"specversion", "id", "type", "source", "subject", "time", "datacontenttype", "data"}
    assert (ce["specversion"], ce["type"], ce["subject"]) == ("1.0", "dev.modelops.rollout.rolledback", "chat-2")
    assert ce["source"] == "/apis/modelops.dev/v1alpha1/namespaces/ml/modeldeployments/chat"
    assert abs(dt.datetime.fromisoformat(ce["time"]) - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(seconds=10)
    data = ce["data"]
    assert data["message"] == ROLLED_BACK.message and data["reason"] == "RolledBack"
    assert data["analysis"] == STATUS["analysis"] and data["stableRevision"] == "chat-1"
    assert data["model"] == {"name": "gemma", "source": "gs://models/gemma/"}
    assert count("wh-shape", "delivered") == 1


def test_a_slack_receiver_gets_the_verdict_in_words(receiver: Receiver) -> None:
    n = notifier({"slack-shape": {"type": "slack", "url": receiver.url()}})
    try:
        n.notify(owner("slack-shape"), Plan(events=[Event("Normal", "Superseded", "not notified"), ROLLED_BACK]))
        (req,) = receiver.wait_for(1)
    finally:
        n.close()
    assert req["headers"]["Content-Type"] == "application/json"
    assert req["body"] == {"text": ":rewind: *ml/chat* rolled back: " + ROLLED_BACK.message}


def test_retries_with_backoff_after_500s_then_delivers_once(receiver: Receiver) -> None:
    receiver.statuses = [500, 503, 200]
    n = notifier({"flaky": {"type": "webhook", "url": receiver.url()}}, backoff=0.1)
    try:
        n.notify(owner("flaky"), Plan(events=[ROLLED_BACK]))
        reqs = receiver.wait_for(3)
        wait_until(lambda: count("flaky", "delivered") == 1)
    finally:
        n.close()
    assert len({r["body"]["id"] for r in reqs}) == 1  # the same event each time: a receiver can de-duplicate
    gaps = [b["at"] - a["at"] for a, b in zip(reqs, reqs[1:])]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2, gaps  # doubled
    assert count("flaky", "failed") == 0 and count("flaky", "dropped") == 0


def test_gives_up_after_the_attempts_and_at_once_on_a_4xx(receiver: Receiver) -> None:
    receiver.statuses = [500] * 3 + [400]
    n = notifier({"down": {"type": "webhook", "url": receiver.url()}}, attempts=3)
    try:
        n.notify(owner("down"), Plan(events=[ROLLED_BACK]))
        wait_until(lambda: count("down", "failed") == 1)
        n.notify(owner("down"), Plan(events=[ROLLED_BACK]))
        wait_until(lambda: count("down", "failed") == 2)
    finally:
        n.close()
    assert len(receiver.requests) == 4  # 3 attempts, then 1: a 400 is not retried
    assert count("down", "delivered") == 0


def test_a_hung_receiver_never_blocks_notify_and_the_queue_bound_drops_and_counts(receiver: Receiver) -> None:
    receiver.hang.set()
    n = notifier({"hung": {"type": "webhook", "url": receiver.url()}}, queue_size=2, timeout_seconds=30)
    try:
        n.notify(owner("hung"), Plan(events=[ROLLED_BACK]))
        receiver.wait_for(1)  # the lane's thread is now stuck in that request
        started = time.monotonic()
        for _ in range(10):
            n.notify(owner("hung"), Plan(events=[ROLLED_BACK]))
        assert time.monotonic() - started < 0.5, "notify() waited for the receiver"
        assert count("hung", "dropped") == 8  # 2 queued, 8 dropped
        assert metrics.REGISTRY.get_sample_value("modelops_notification_queue_depth", {"receiver": "hung"}) == 2
    finally:
        receiver.release.set()
        n.close()
    # once released, the hung one and the 2 queued are delivered
    assert count("hung", "delivered") == 3


def test_one_slow_receiver_does_not_delay_another(receiver: Receiver) -> None:
    receiver.hang.set()
    n = notifier({"slow-one": {"type": "webhook", "url": receiver.url("/slow")},
                  "quick-one": {"type": "webhook", "url": receiver.url("/quick")}}, timeout_seconds=30)
    try:
        n.notify(owner("slow-one"), Plan(events=[ROLLED_BACK]))
        receiver.wait_for(1)
        receiver.hang.clear()
        n.notify(owner("quick-one"), Plan(events=[ROLLED_BACK]))
        wait_until(lambda: count("quick-one", "delivered") == 1, timeout=5)
    finally:
        receiver.release.set()
        n.close()


def test_receivers_filter_kinds_and_unknown_names_are_skipped(receiver: Receiver) -> None:
    n = notifier({"pipeline": {"type": "webhook", "url": receiver.url("/retrain"), "events": ["degraded"]}})
    degraded = Event("Warning", "DegradedDuringBake", "revision chat-2 degraded during bakeTime: ...", "chat-2")
    try:
        n.notify(owner("pipeline", "not-configured"), Plan(events=[ROLLED_BACK, degraded]))
        # A receiver gets its notifications in order: once a later one has arrived, a rolled-back
        # one let through by mistake would have arrived before it.
        n.notify(owner("pipeline"), Plan(events=[degraded]))
        req, _ = receiver.wait_for(2)
    finally:
        n.close()
    assert req["body"]["type"] == "dev.modelops.rollout.degraded" and len(receiver.requests) == 2


def test_close_gives_what_is_queued_one_try_and_drops_the_rest(receiver: Receiver) -> None:
    receiver.hang.set()
    n = notifier({"closing": {"type": "webhook", "url": receiver.url()}}, timeout_seconds=30)
    n.notify(owner("closing"), Plan(events=[ROLLED_BACK]))
    receiver.wait_for(1)
    for _ in range(3):
        n.notify(owner("closing"), Plan(events=[ROLLED_BACK]))
    threading.Timer(0.5, receiver.release.set).start()  # the hung request ends after the close deadline
    started = time.monotonic()
    n.close(timeout=0.2)
    assert time.monotonic() - started < 3
    wait_until(lambda: count("closing", "delivered") == 1 and count("closing", "dropped") == 3)
    n.notify(owner("closing"), Plan(events=[ROLLED_BACK]))  # after close: dropped at once
    assert count("closing", "dropped") == 4


def test_no_receiver_url_or_header_secret_reaches_a_log_line(receiver: Receiver, caplog: pytest.LogCaptureFixture,
                                                              tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)
    (tmp_path / "url").write_text(receiver.url() + "\n")
    (tmp_path / "headers").write_text(f"Authorization: Bearer {TOKEN}-header\n")
    receiver.statuses = [500, 500, 200]
    receivers = {"secret-wh": {"type": "webhook", "urlFile": str(tmp_path / "url"),
                               "headersFile": str(tmp_path / "headers")},
                 # nothing listens there: connection errors, whose text would hold the URL
                 "secret-dead": {"type": "slack", "url": f"http://127.0.0.1:1/services/{TOKEN}"}}
    n = notifier(receivers, attempts=3)
    try:
        n.notify(owner("secret-wh", "secret-dead"), Plan(events=[ROLLED_BACK]))
        (*_, req) = receiver.wait_for(3)
        wait_until(lambda: count("secret-wh", "delivered") == 1 and count("secret-dead", "failed") == 1)
    finally:
        n.close()
    assert req["headers"]["Authorization"] == f"Bearer {TOKEN}-header"
    assert TOKEN not in caplog.text
    assert "secret-wh" in caplog.text and "secret-dead" in caplog.text  # the receivers are named
    assert "HTTP Request: POST" in caplog.text  # httpx logged its requests: redacted, not silenced
    assert TOKEN not in repr(OperatorConfig(notify_receivers=receivers))


# --------------------------------------------------------------------------- the reconcile's one call
class _Kube:
    """Stands in for adapters.kube.Kube: executes nothing, or fails like a replica that lost the Lease."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def execute(self, owner, plan, observed, expect=None):
        from modelops.adapters.kube import ExecutionResult

        if self.fail:
            raise RuntimeError("not the leader any more")
        return ExecutionResult([], [], [], plan.status is not None)


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Owner, Plan]] = []

    def notify(self, owner: Owner, plan: Plan) -> None:
        self.calls.append((owner, plan))


def _snapshot():
    from modelops.adapters import cache

    md = {"apiVersion": "modelops.dev/v1alpha1", "kind": "ModelDeployment",
          "metadata": {"name": "chat", "namespace": "ml", "uid": "uid-1", "generation": 1, "resourceVersion": "1"},
          "spec": {**SPEC, "rollout": {"notify": ["ml-oncall"]}},
          "status": {"phase": "Pending"}}  # past its first pass (which creates only the Deployment)
    return cache.fresh(md, {})


def test_a_reconcile_notifies_once_its_writes_succeeded_and_not_when_they_failed() -> None:
    from modelops.adapters.controller import reconcile_once

    cfg = OperatorConfig(notify_receivers={"ml-oncall": {"type": "slack", "url": "http://127.0.0.1:1/x"}})
    rec = _Recorder()
    reconcile_once(_Kube(), cfg, _snapshot(), notifier=rec)  # type: ignore[arg-type]
    ((owner_, plan),) = rec.calls
    assert owner_.name == "chat" and "NewRevision" in [e.reason for e in plan.events]
    rec.calls.clear()
    with pytest.raises(RuntimeError):
        reconcile_once(_Kube(fail=True), cfg, _snapshot(), notifier=rec)  # type: ignore[arg-type]
    assert rec.calls == []
