"""What the operator notifies receivers of: the kinds of notification and the Event reasons they
come from. Pure constants; the payloads are built in planning/notifications.py, delivered by
adapters/notify.py."""

from __future__ import annotations

from modelops.domain.conditions import Reason

# The CloudEvents ``type`` of a notification is this prefix and its kind: dev.modelops.rollout.promoted.
TYPE_PREFIX = "dev.modelops.rollout."

# Event reason (planning/decide.py) -> notification kind. Only these are sent; the other Events
# (Superseded, GoldenPromptsPassed, InsufficientGPU, CommandIgnored, ...) stay in Kubernetes.
KIND_BY_REASON: dict[str, str] = {
    Reason.NEW_REVISION: "started",
    Reason.STEP_REACHED: "step",
    Reason.PAUSED: "paused",
    Reason.PROMOTED: "promoted",
    Reason.ROLLED_BACK: "rolledback",
    Reason.PROGRESS_DEADLINE_EXCEEDED: "failed",
    Reason.DEGRADED_DURING_BAKE: "degraded",
}
KINDS: tuple[str, ...] = tuple(KIND_BY_REASON.values())
