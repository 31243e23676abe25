"""Events are posted by a background thread: a reconcile never waits for one, a full queue drops
(counted), a failing post is logged and the next one still goes out."""

from __future__ import annotations

import threading

import pytest

from modelops import metrics
from modelops.adapters.events import EventRecorder
from modelops.planning.contract import Event, Owner

pytestmark = pytest.mark.unit
OWNER = Owner("chat", "ml", "uid-1", 1, {}, {})


def test_record_returns_before_the_event_is_posted_and_every_event_is_posted_in_order() -> None:
    gate, posted = threading.Event(), []

    def post(owner: Owner, event: Event) -> None:
        gate.wait(10)  # an apiserver that answers slowly
        posted.append(event.reason)

    recorder = EventRecorder(post)
    for reason in ("NewRevision", "StepReached", "Promoted"):
        recorder.record(OWNER, Event("Normal", reason, ""))
    assert posted == []  # the reconcile went on
    gate.set()
    assert recorder.flush(10)
    assert posted == ["NewRevision", "StepReached", "Promoted"]
    recorder.close()


def test_a_full_queue_drops_and_counts_and_a_failing_post_does_not_stop_the_others() -> None:
    gate, taken, posted = threading.Event(), threading.Event(), []

    def post(owner: Owner, event: Event) -> None:
        taken.set()
        gate.wait(10)
        if event.reason == "boom":
            raise RuntimeError("403 Forbidden")
        posted.append(event.reason)

    dropped = metrics.EVENTS_DROPPED._value.get()
    recorder = EventRecorder(post, size=2)
    recorder.record(OWNER, Event("Normal", "boom", ""))  # taken by the thread, waits at the gate
    assert taken.wait(10)
    for reason in ("a", "b", "c"):
        recorder.record(OWNER, Event("Normal", reason, ""))
    assert metrics.EVENTS_DROPPED._value.get() == dropped + 1  # "c": the queue held two
    gate.set()
    assert recorder.flush(10)
    assert posted == ["a", "b"]
    recorder.close()

