"""Notifications, the pure half: which planner Events become which notification, the payloads
(CloudEvents, Slack), the Events the planner emits for them (StepReached, DegradedDuringBake),
and spec.rollout.notify naming a receiver the operator does not know."""

from __future__ import annotations

import datetime as dt
import doctest

import pytest

from modelops.config import OperatorConfig
from modelops.domain.notifications import KIND_BY_REASON, KINDS
from modelops.domain.spec import ModelDeploymentSpec
from modelops.planning import notifications, reconcile
from modelops.planning.contract import Event, Owner

from .sim import Sim, healthy, measure
from .test_rollout import ANALYSIS, STEPS, UP, rev, spec, started

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
RECEIVERS = {"ml-oncall": {"type": "slack", "url": "https://hooks.example/T/B/x"},
             "retrain": {"type": "webhook", "url": "https://ci.example/hook", "events": ["degraded"]}}


def kinds(sim: Sim) -> list[str]:
    """The notification kinds of every plan so far, in order."""
    owner = Owner("chat", "ml", "uid-1", 1, sim.spec, {})
    return [n.kind for p in sim.plans for n in notifications.notifications(owner, p.events, p.status, NOW)]


def events(sim: Sim, reason: str) -> list[Event]:
    return [e for p in sim.plans for e in p.events if e.reason == reason]


def test_the_docstring_examples() -> None:
    result = doctest.testmod(notifications)
    assert result.failed == 0 and result.attempted >= 3


def test_every_kind_comes_from_one_reason_and_has_words() -> None:
    assert sorted(KINDS) == sorted(set(KINDS)) == sorted(notifications.WORDS)
    assert set(KIND_BY_REASON) == {"NewRevision", "StepReached", "Paused", "Promoted", "RolledBack",
                                   "ProgressDeadlineExceeded", "DegradedDuringBake"}


def test_a_canary_notifies_started_each_step_the_pause_and_the_promotion() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}, analysis=ANALYSIS))
    sim.plans.clear()
    sim.step()
    sim.step(UP)  # 10 %
    sim.step(31, measurements=healthy())
    sim.step(31, measurements=healthy())  # the timed pause is over: 50 %, then the open pause
    sim.step(60, measurements=healthy())
    sim.annotate("promote")
    sim.step(measurements=healthy())
    sim.settle()
    assert sim.status["stableRevision"] == v2
    assert kinds(sim) == ["started", "step", "step", "paused", "step", "promoted"]
    steps = [e.message for e in events(sim, "StepReached")]
    assert steps == [f"step 1/4 (setWeight 10) completed: 10% to {v2}; now at step 2/4 (pause 1m)",
                     f"step 3/4 (setWeight 50) completed: 50% to {v2}; now at step 4/4 (pause until promoted)",
                     f"step 4/4 (pause until promoted) completed: 50% to {v2}; every step completed"]
    assert {e.revision for p in sim.plans for e in p.events if e.reason in KIND_BY_REASON} == {v2}
    (paused,) = events(sim, "Paused")
    assert "(PauseStep)" in paused.message  # and why


def test_degradation_during_the_bake_is_its_own_notification_before_the_rollback() -> None:
    sim, v1, v2 = started(spec(canary={"steps": [{"setWeight": 50}]}, analysis={**ANALYSIS, "bakeTime": "10m"}))
    sim.step()
    sim.step(UP, measurements=healthy())
    sim.step(10, measurements=healthy())
    sim.step(UP)
    assert sim.status["stableRevision"] == v2
    sim.plans.clear()
    sim.step(60, measurements=[measure("error-rate", value=0.3, samples=200)])
    assert sim.phase == "RolledBack"
    assert [e.reason for e in sim.plans[-1].events] == ["DegradedDuringBake", "RolledBack"]
    owner = Owner("chat", "ml", "uid-1", 2, sim.spec, {})
    degraded, rolled_back = notifications.notifications(owner, sim.plans[-1].events, sim.plans[-1].status, NOW)
    assert (degraded.kind, degraded.revision, rolled_back.kind) == ("degraded", v2, "rolledback")
    assert "error-rate = 0.3 is above max 0.05" in degraded.message
    body = notifications.cloudevent(degraded, "id-1")
    assert body["type"] == "dev.modelops.rollout.degraded" and body["subject"] == v2
    data = body["data"]
    assert (data["namespace"], data["name"], data["revision"], data["stableRevision"]) == ("ml", "chat", v2, v1)
    assert data["model"] == {"name": "gemma", "source": "gs://models/gemma-v2/"}
    assert data["analysis"]["error-rate"]["verdict"] == "Failed" and data["analysis"]["error-rate"]["value"] == 0.3
    assert data["phase"] == "RolledBack"


def test_an_abort_by_hand_during_the_bake_is_a_rollback_not_a_degradation() -> None:
    sim, v1, v2 = started(spec(canary={"steps": [{"setWeight": 50}]}, analysis={**ANALYSIS, "bakeTime": "10m"}))
    sim.step()
    sim.step(UP, measurements=healthy())
    sim.step(10, measurements=healthy())
    sim.step(UP)
    sim.plans.clear()
    sim.annotate("abort")
    sim.step()
    assert kinds(sim) == ["rolledback"]


def test_an_abort_on_analysis_says_the_failing_verdict_in_words() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}, analysis=ANALYSIS))
    sim.step()
    sim.step(UP)
    sim.plans.clear()
    sim.step(10, measurements=[measure("error-rate", value=0.2, samples=100)])
    owner = Owner("chat", "ml", "uid-1", 2, sim.spec, {})
    (n,) = notifications.notifications(owner, sim.plans[-1].events, sim.plans[-1].status, NOW)
    assert n.kind == "rolledback" and n.severity == "Warning"
    text = notifications.slack(n)["text"]
    assert text.startswith(":rewind: *ml/chat* rolled back: rollout of " + v2 + " aborted: error-rate = 0.2 is "
                           "above max 0.05")


def test_a_revision_that_never_becomes_ready_notifies_failed() -> None:
    sim, v1, v2 = started(spec(canary={"steps": STEPS}, progressDeadline="5m"))
    sim.never_ready.add(v2)
    sim.plans.clear()
    sim.step()
    sim.step(301)
    assert kinds(sim) == ["started", "failed"]


def test_slack_text_escapes_its_control_characters() -> None:
    n = notifications.Notification("rolledback", "ml", "chat", "chat-2", "Warning",
                                   'golden prompt failed: the answer does not match /<ok>&/', NOW)
    assert notifications.slack(n)["text"].endswith("does not match /&lt;ok&gt;&amp;/")


def test_receivers_are_read_from_the_raw_spec_and_tolerate_nonsense() -> None:
    def owner(notify):
        return Owner("chat", "ml", "u", 1, {"rollout": {"notify": notify}}, {})
    assert notifications.receivers(owner(["a", "b", "a"])) == ["a", "b"]
    assert notifications.receivers(owner("a")) == [] and notifications.receivers(owner([1, "a"])) == ["a"]
    assert notifications.receivers(Owner("chat", "ml", "u", 1, {}, {})) == []


# --------------------------------------------------------------------------- spec.rollout.notify
def test_an_unknown_receiver_is_a_warning_in_status_and_one_event_and_nothing_else() -> None:
    cfg = OperatorConfig(resync_seconds=30, notify_receivers=RECEIVERS)
    s = spec(canary={"steps": [{"setWeight": 50}]})
    s["rollout"]["notify"] = ["ml-oncall", "pager"]
    sim = Sim(s, cfg)
    sim.settle()
    assert sim.phase == "Healthy"
    assert sim.status["warnings"] == ['spec.rollout.notify[1]: no receiver "pager" is configured in the operator']
    warned = events(sim, "UnknownReceiver")
    assert [(e.type, e.message) for e in warned] == [("Warning", sim.status["warnings"][0])]  # once, not per pass
    sim.change("rollout.notify", ["ml-oncall"])
    sim.settle()
    assert "warnings" not in sim.status


def test_the_crd_refuses_receiver_names_that_are_not_dns_labels() -> None:
    with pytest.raises(ValueError):
        ModelDeploymentSpec.model_validate({"model": {"name": "m", "source": "hf://a/b"},
                                            "rollout": {"notify": ["ML_oncall"]}})


def test_changing_who_is_notified_never_restarts_a_rollout() -> None:
    base = ModelDeploymentSpec.model_validate(spec(canary={"steps": STEPS}))
    with_notify = base.model_copy(update={"rollout": base.rollout.model_copy(update={"notify": ["ml-oncall"]})})
    assert reconcile.rollout_hash(base) == reconcile.rollout_hash(with_notify)
    # ... and the hash of an object written before the field existed is the one it had then
    doc = base.rollout.model_dump(mode="json")
    assert "notify" in doc  # the field is there, but left out of the hash
    sim, v1, v2 = started(spec(canary={"steps": STEPS}, analysis=ANALYSIS))
    sim.step()
    sim.step(UP)
    assert sim.status["currentStep"] == 1
    sim.change("rollout.notify", ["ml-oncall"])
    sim.step(measurements=healthy())
    assert sim.status["currentStep"] == 1 and sim.status["canaryRevision"] == rev(sim.spec) == v2
    assert "NewRevision" not in [e.reason for e in sim.plans[-1].events]
