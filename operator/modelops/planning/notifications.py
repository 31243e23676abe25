"""Notifications from a plan's Events: which ones are sent, and the payloads receivers get.

Pure: the adapter (adapters/notify.py) hands in the object, the Events the reconcile posted, the
new status, the time and an id, and POSTs what comes out. Two payloads:

- ``cloudevent``: a CloudEvents 1.0 event in structured mode (``application/cloudevents+json``),
  ``type`` ``dev.modelops.rollout.<kind>``, ``source`` the ModelDeployment's API path, ``subject``
  the revision it is about, ``data`` what a pipeline needs to act (model, revisions, the verdict
  in words, the last analysis values);
- ``slack``: an incoming webhook's ``{"text": ...}``, the verdict in words.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Iterable

from modelops.domain.notifications import KIND_BY_REASON, TYPE_PREFIX
from modelops.domain.spec import GROUP, PLURAL, VERSION
from modelops.domain.timestamps import iso

from .contract import Event, Owner

# How each kind reads in a chat message.
WORDS = {"started": ("rollout started", ":rocket:"), "step": ("step reached", ":arrow_forward:"),
         "paused": ("paused", ":double_vertical_bar:"), "promoted": ("promoted", ":white_check_mark:"),
         "rolledback": ("rolled back", ":rewind:"), "failed": ("rollout failed", ":x:"),
         "degraded": ("degraded during bake", ":rotating_light:")}


@dataclass(frozen=True)
class Notification:
    kind: str  # started | step | paused | promoted | rolledback | failed | degraded
    namespace: str
    name: str
    revision: str
    severity: str  # the Event's type: Normal | Warning
    message: str  # the Event's message: the verdict in words
    time: dt.datetime
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return TYPE_PREFIX + self.kind

    @property
    def source(self) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}/{self.name}"


def receivers(owner: Owner) -> list[str]:
    """The receivers the object asks for (``spec.rollout.notify``), as written; not validated here:
    an invalid spec still gets its rollback notified to the receivers it names."""
    names = ((owner.spec.get("rollout") or {}).get("notify")) or []
    return [n for n in dict.fromkeys(names) if isinstance(n, str)] if isinstance(names, list) else []


def notifications(owner: Owner, events: Iterable[Event], status: dict[str, Any] | None,
                  now: dt.datetime) -> list[Notification]:
    """The notifications for the Events a reconcile posted, in their order; ``status`` is the new
    status (None: unchanged, the owner's).

    >>> import datetime as dt
    >>> owner = Owner("chat", "ml", "u1", 3, {"model": {"name": "gemma"}}, {})
    >>> posted = [Event("Normal", "Superseded", "x"), Event("Warning", "RolledBack", "rollout of chat-2 ...", "chat-2")]
    >>> [n.type for n in notifications(owner, posted, None, dt.datetime(2025, 1, 1))]
    ['dev.modelops.rollout.rolledback']
    """
    st = status if status is not None else owner.status
    model = owner.spec.get("model") or {}
    out = []
    for e in events:
        kind = KIND_BY_REASON.get(e.reason)
        if kind is None:
            continue
        data = {
            "namespace": owner.namespace, "name": owner.name, "uid": owner.uid, "generation": owner.generation,
            "kind": kind, "reason": e.reason, "severity": e.type, "message": e.message,
            "revision": e.revision or None,
            "model": {k: model.get(k) for k in ("name", "source", "metadata") if model.get(k)},
            "phase": st.get("phase"), "stableRevision": st.get("stableRevision"),
            "canaryRevision": st.get("canaryRevision"), "canaryWeight": st.get("canaryWeight"),
            "currentStep": st.get("currentStep"), "analysis": st.get("analysis") or {},
        }
        out.append(Notification(kind, owner.namespace, owner.name, e.revision, e.type, e.message, now, data))
    return out


def cloudevent(n: Notification, event_id: str) -> dict[str, Any]:
    """The CloudEvents 1.0 structured-mode body.

    >>> import datetime as dt
    >>> n = Notification("promoted", "ml", "chat", "chat-2", "Normal", "revision chat-2 now serves gemma",
    ...                  dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc))
    >>> {k: v for k, v in cloudevent(n, "1").items() if k != "data"}  # doctest: +NORMALIZE_WHITESPACE
    {'specversion': '1.0', 'id': '1', 'type': 'dev.modelops.rollout.promoted',
     'source': '/apis/modelops.dev/v1alpha1/namespaces/ml/modeldeployments/chat', 'subject': 'chat-2',
     'time': '2025-01-01T00:00:00Z', 'datacontenttype': 'application/json'}
    """
    return {"specversion": "1.0", "id": event_id, "type": n.type, "source": n.source,
            "subject": n.revision or f"{n.namespace}/{n.name}", "time": iso(n.time),
            "datacontenttype": "application/json", "data": n.data}


def slack(n: Notification) -> dict[str, Any]:
    """A Slack-compatible incoming webhook body (Mattermost, Rocket.Chat and Teams' Slack-style
    webhooks take it too): one line, the verdict in words.

    >>> import datetime as dt
    >>> slack(Notification("rolledback", "ml", "chat", "chat-2", "Warning",
    ...                    "rollout of chat-2 aborted: error-rate = 0.2 is above max 0.05", dt.datetime(2025, 1, 1)))
    {'text': ':rewind: *ml/chat* rolled back: rollout of chat-2 aborted: error-rate = 0.2 is above max 0.05'}
    """
    words, emoji = WORDS[n.kind]
    return {"text": f"{emoji} *{_escape(n.namespace)}/{_escape(n.name)}* {words}: {_escape(n.message)}"}


def _escape(text: str) -> str:
    """Slack's three control characters (a regex in a verdict must not become a link)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
