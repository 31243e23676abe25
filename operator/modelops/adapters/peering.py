"""Which replica works, as kopf peering decides it: the live peer with the highest priority.

kopf pauses its own event handling on every replica but the one with the highest priority;
the operator's per-object workers follow the same decision, read from the peering object's
status (``{identity: {priority, lifetime, lastseen}}``), so exactly one replica reconciles.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException


def is_active(peers: dict[str, Any], identity: str, priority: int, now: dt.datetime) -> bool:
    """Active iff we are registered and no other live peer has a priority as high as ours.

    >>> now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    >>> seen = "2026-01-01T00:00:00+00:00"
    >>> is_active({"a": {"priority": 5, "lastseen": seen}, "b": {"priority": 9, "lastseen": seen}}, "b", 9, now)
    True
    >>> is_active({"a": {"priority": 5, "lastseen": seen}, "b": {"priority": 9, "lastseen": seen}}, "a", 5, now)
    False
    >>> is_active({"a": {"priority": 5, "lastseen": "2025-12-31T23:00:00+00:00", "lifetime": 60}}, "b", 1, now)
    False
    """
    if identity not in peers:
        return False
    for other, info in peers.items():
        if other == identity or not isinstance(info, dict):
            continue
        lastseen = dt.datetime.fromisoformat(str(info.get("lastseen", "1970-01-01T00:00:00+00:00")))
        if lastseen.tzinfo is None:
            lastseen = lastseen.replace(tzinfo=dt.timezone.utc)
        alive = lastseen + dt.timedelta(seconds=int(info.get("lifetime", 60))) > now
        if alive and int(info.get("priority", 0)) >= priority:
            return False
    return True


def peers(api: client.ApiClient, name: str, namespace: str | None) -> dict[str, Any]:
    """The peering object's status (ClusterKopfPeering, or KopfPeering in ``namespace``)."""
    custom = client.CustomObjectsApi(api)
    selector = f"metadata.name={name}"
    try:
        if namespace:
            items = custom.list_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings",
                                                         field_selector=selector)["items"]
        else:
            items = custom.list_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings",
                                                      field_selector=selector)["items"]
    except ApiException:
        return {}
    return dict(items[0].get("status") or {}) if items else {}


def settle(top: bool, top_since: float | None, now: float, settle_for: float) -> tuple[bool, float | None]:
    """(work now?, since when this replica has been the top peer): work only once it has been the
    top live peer for ``settle_for`` seconds; stand by at once when it is not.

    >>> settle(True, None, 100.0, 5.0)   # just became the top peer: not yet
    (False, 100.0)
    >>> settle(True, 100.0, 104.0, 5.0)  # a newcomer with a higher priority may not be visible yet
    (False, 100.0)
    >>> settle(True, 100.0, 105.0, 5.0)
    (True, 100.0)
    >>> settle(False, 100.0, 106.0, 5.0)  # someone with a higher priority: stand by at once
    (False, None)
    """
    if not top:
        return False, None
    since = now if top_since is None else top_since
    return now - since >= settle_for, since
